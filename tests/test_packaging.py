"""The wheel works on its own: built from the sources, installed non-editable (``pip install --no-deps``) into a fresh
virtual environment that sees the already installed dependencies, and run from outside the checkout — the shipped
search space, the shipped meta-dataset (``recommend``), a shipped recipe by name (``run glue/sst2``) and the
console scripts all resolve from the installed package, not from the source tree."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_STUDENT = "layers=1,hidden=16,heads=2,intermediate=32"
FAST = ["--precision", "no", "--report-to", "none", "--max-length", "16", "--batch-size", "16"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, bin_dir, work_dir)`` of a venv holding only the built wheel (dependencies seen through a .pth)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    for name in ("distiller_nlp", "autodistil", "vision_kd"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(src)], check=True, capture_output=True, text=True)
    (wheel,) = list(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("distiller_nlp/resources/spaces/distiller.yaml", "distiller_nlp/resources/recipes/glue/sst2.yaml",
                    "distiller_nlp/resources/meta_dataset.parquet", "distiller_nlp/tasks/glue_metric.py",
                    "autodistil/recipes/search-quarter.yaml", "vision_kd/recipes/nkd_digits.yaml"):
        assert shipped in names, f"{shipped} is not in the wheel"
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    target = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies of this environment, without its editable install of the sources
    deps = [p for p in site.getsitepackages() if os.path.isdir(p)]
    with open(os.path.join(target, "_deps.pth"), "w") as fh:
        fh.write("\n".join(deps) + "\n")
    # pip itself comes from the dependencies; run by the venv's python, so the scripts' shebangs point at the venv
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True, text=True)
    work = tmp / "work"
    work.mkdir()
    return str(py), str(venv / "bin"), str(work)


def _run(installed, *cmd, script: str = "distiller-nlp") -> subprocess.CompletedProcess:
    py, bin_dir, work = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    exe = [py, "-c", *cmd] if script == "python" else [os.path.join(bin_dir, script), *cmd]
    return subprocess.run(exe, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_the_installed_package_is_not_the_checkout(installed):
    res = _run(installed, "import distiller_nlp, autodistil, vision_kd; "
                          "print(distiller_nlp.__file__, autodistil.__file__, vision_kd.__file__)", script="python")
    assert res.returncode == 0, res.stderr[-2000:]
    assert ROOT not in res.stdout and "venv" in res.stdout


def test_default_hpo_space_and_shipped_files_load(installed):
    res = _run(installed, "import json; from distiller_nlp.autodistiller.pipeline_space import default_space_path, "
                          "load_space; from distiller_nlp.resources import resolve_recipe, shipped_recipes; "
                          "from distiller_nlp.autodistiller.metadataset import load_meta_dataset; "
                          "print(json.dumps({'space': str(default_space_path()), 'params': len(load_space().params), "
                          "'recipes': shipped_recipes(), 'sst2': resolve_recipe('glue/sst2'), "
                          "'records': len(load_meta_dataset())}))", script="python")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "venv" in out["space"] and ROOT not in out["space"] and out["params"] >= 5
    assert "glue/sst2" in out["recipes"] and "stages/tinybert_two_stage" in out["recipes"]
    assert "venv" in out["sst2"] and out["records"] == 320


def test_recommend_on_tiny_data(installed, tiny_teacher, sst2_dir, tmp_path):
    out = tmp_path / "rec"
    res = _run(installed, "recommend", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir,
               "--student-shape", TINY_STUDENT, *FAST, "--top-k", "1", "--candidates", "20", "--output-dir", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "recommended.yaml").is_file() and (out / "candidates.csv").is_file()


def test_run_a_shipped_recipe_by_name(installed, tiny_teacher, sst2_dir, tmp_path):
    out = tmp_path / "run"
    res = _run(installed, "run", "glue/sst2", "--teacher", tiny_teacher, "--data-dir", sst2_dir,
               "--student-shape", TINY_STUDENT, "--augment", "random", *FAST, "--max-steps", "1",
               "--output-dir", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "sst2" and (out / "student" / "model.safetensors").is_file()


def test_the_other_console_scripts_start(installed):
    for script in ("autodistil", "vision-kd"):
        res = _run(installed, "--help", script=script)
        assert res.returncode == 0 and "usage" in res.stdout, res.stderr[-2000:]
    res = _run(installed, "spaces", script="autodistil")
    assert res.returncode == 0 and "minilm-base" in res.stdout
