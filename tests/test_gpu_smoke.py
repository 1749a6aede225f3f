"""``make gpu-smoke`` (benchmarks/gpu_smoke.py): skips cleanly without CUDA; picks its cases from the GPU."""

import importlib.util
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("gpu_smoke", os.path.join(ROOT, "benchmarks", "gpu_smoke.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_skips_without_cuda(monkeypatch, capsys, tmp_path):
    mod = _load()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mod.main(["--output", str(tmp_path / "x.json")]) == 0
    assert "no CUDA device, skipped" in capsys.readouterr().out and not (tmp_path / "x.json").exists()


def test_cases_follow_the_gpu(tmp_path):
    mod = _load()
    v100 = mod.gpu_cases((7, 0), 1, str(tmp_path))
    h100 = mod.gpu_cases((9, 0), 2, str(tmp_path))
    assert [c["precision"] for c in v100 if c["name"].startswith("distill 100 steps (")] == ["fp16"]
    assert [c["precision"] for c in h100 if c["name"].startswith("distill 100 steps (") and c["launch"] == 1] == \
        ["bf16", "fp16"]
    assert [c["launch"] for c in h100 if c["launch"] > 1] == [2] and not any(c["launch"] > 1 for c in v100)
    names = " ".join(c["name"] for c in h100)
    for what in ("teacher cache", "train-superlm", "search", "vision"):
        assert what in names
