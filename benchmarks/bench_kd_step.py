#!/usr/bin/env python
"""Benchmark: one distillation step — the floor, ours (teacher live / cached) and TextBrewer, side by side.

Protocol (fixed before the first measured run):
- models of the real shapes: teacher = the packaged MiniLM-L6-H384 with a 3-way classifier (6 × 384, 12 heads),
  student = ``layers=3,hidden=256,heads=8,intermediate=1024`` (random weights: timing only);
- batch 32 × 64 tokens (random token ids, no padding), 3 classes; fp32 on the CPU, AdamW (lr 1e-4, ``foreach``
  implementation, for every variant compared fp32-vs-fp32);
- losses: soft cross-entropy at T=4 on logits + hidden MSE on 3 matched layers (student 1/2/3 ↔ teacher 2/4/6)
  through learned Linear(256→384) projections;
- variants, each in its own process (for its peak RSS), 3 repeats interleaved:
  ``floor`` (teacher forward under no_grad keeping only layers 2/4/6 + a plain student step: forward, CE on labels,
  backward, AdamW), ``student`` (the plain student step alone), ``ours_live`` and ``ours_cached`` (``distill``'s
  module on the shared engine, teacher run every step / read from a float16 cache), ``ours_live_defaults`` and
  ``ours_cached_defaults`` (the same with our defaults: ``optim: auto`` = fused AdamW; precision auto = fp32 on
  this CPU, whose bf16 is slow), ``textbrewer`` (TextBrewer 0.2.1 ``GeneralDistiller`` with
  ``intermediate_matches``, ``output_hidden_states=True``);
- each run does 3 warm-up steps, then times 20 steps between consecutive student forward calls.
Reported: examples/s (mean ± std), peak RSS, ratios, overhead over the floor, MFU = model FLOPs per second (teacher
forward + 3 × student forward) over the measured fp32 matmul peak (2048², same run).

TextBrewer is installed into ``benchmarks/.textbrewer`` (its own directory, ``pip install --target``, no
dependencies: it needs only torch, numpy, tqdm and tensorboard, which the project has); it is never a dependency of
the toolkit. Usage: ``python benchmarks/bench_kd_step.py`` → ``benchmarks/results/bench_kd_step.{json,md}``;
``--profile`` instead runs the floor and ours (live) once each under ``torch.profiler`` →
``benchmarks/results/profile_kd_step.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TB_DIR = os.path.join(HERE, ".textbrewer")
BATCH, SEQ, LABELS, STEPS, WARMUP, TEMP = 32, 64, 3, 20, 3, 4.0
if os.environ.get("BENCH_STEP_SMOKE"):  # a seconds-long correctness check of every variant, not a measurement
    STEPS, WARMUP = 2, 1
PAIRS = [(2, 1), (4, 2), (6, 3)]  # (teacher layer, student layer)
VARIANTS = ("floor", "student", "ours_live", "ours_cached", "ours_live_defaults", "ours_cached_defaults", "textbrewer")


def _models():
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    from distiller_nlp.models import resolve_model_path

    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(resolve_model_path("minilm"), num_labels=LABELS)
    tc = teacher.config
    student = BertForSequenceClassification(BertConfig(
        vocab_size=tc.vocab_size, hidden_size=256, num_hidden_layers=3, num_attention_heads=8, intermediate_size=1024,
        max_position_embeddings=tc.max_position_embeddings, num_labels=LABELS))
    teacher.eval()
    return teacher, student


def _data(n_batches: int, vocab: int):
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, vocab, (n_batches * BATCH, SEQ), generator=g)
    ids[:, 0] = 101
    labels = torch.randint(0, LABELS, (n_batches * BATCH,), generator=g)
    return ids, labels


class StepTimer:
    """Forward pre-hook recording the start time of every student forward."""

    def __init__(self):
        self.t = []

    def __call__(self, *_):
        self.t.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        t = self.t[WARMUP:WARMUP + STEPS + 1]
        return (t[-1] - t[0]) / (len(t) - 1)


def run_floor(plain: bool):
    import torch
    import torch.nn.functional as F

    from distiller_nlp.core.capture import FeatureCapture

    teacher, student = _models()
    ids, labels = _data(WARMUP + STEPS + 1, teacher.config.vocab_size)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, foreach=True)
    timer = StepTimer()
    student.register_forward_pre_hook(timer)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    for i in range(WARMUP + STEPS + 1):
        x, y = ids[i * BATCH:(i + 1) * BATCH], labels[i * BATCH:(i + 1) * BATCH]
        if not plain:
            with torch.no_grad(), FeatureCapture(teacher, hidden_layers=[t for t, _ in PAIRS]):
                teacher(input_ids=x, attention_mask=mask)
        loss = F.cross_entropy(student(input_ids=x, attention_mask=mask).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return timer.seconds_per_step()


def run_ours(cached: bool, defaults: bool = False):
    import datasets

    from distiller_nlp.config import KDConfig, MatchConfig
    from distiller_nlp.core.train_args import TrainArgs
    from distiller_nlp.core.engine import Engine
    from distiller_nlp.tasks import make_collator
    from distiller_nlp.kd.module import DistillModule
    from distiller_nlp.kd.teachers import TeacherRunner
    from distiller_nlp.kd.matches import resolve_matches
    from distiller_nlp.models import load_tokenizer

    teacher, student = _models()
    n = WARMUP + STEPS + 1
    ids, labels = _data(n, teacher.config.vocab_size)
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * SEQ] * len(ids),
                                     "token_type_ids": [[0] * SEQ] * len(ids), "labels": labels.tolist()})
    kd = KDConfig(pred_loss="soft_ce", temperature=TEMP, kd_weight=1.0,
                  intermediate=[MatchConfig(layer_T=t, layer_S=s, loss="hidden_mse", proj="linear") for t, s in PAIRS])
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    tok = load_tokenizer("minilm")
    if cached:
        from distiller_nlp.kd import teacher_cache as tc

        ds = tc.as_cached_format(tc.compute_teacher_outputs(ds, teacher, "bench", module.teacher_hidden_layers,
                                                            pad_token_id=tok.pad_token_id))
        runner, frozen = tc.CachedTeacher(), []
    else:
        runner, frozen = TeacherRunner(teacher, module), [teacher]
    timer = StepTimer()
    module.register_forward_pre_hook(timer)
    args = TrainArgs(max_steps=n, batch_size=BATCH, lr=1e-4, precision="no", report_to="none", logging_steps=1000,
                     warmup_ratio=0.0, max_grad_norm=0.0, cpu=True,
                     optim="auto" if defaults else "adamw_foreach")
    with tempfile.TemporaryDirectory() as out:
        Engine(args, out, module, ds, make_collator(tok), prepare_batch=runner, frozen=frozen).train()
    return timer.seconds_per_step()


def run_textbrewer():
    import torch

    sys.path.insert(0, TB_DIR)
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig

    teacher, student = _models()
    n = WARMUP + STEPS + 1
    ids, labels = _data(n, teacher.config.vocab_size)
    batches = [{"input_ids": ids[i * BATCH:(i + 1) * BATCH], "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long),
                "labels": labels[i * BATCH:(i + 1) * BATCH]} for i in range(n)]

    def adaptor(batch, out):
        return {"logits": out.logits, "hidden": out.hidden_states, "inputs_mask": batch["attention_mask"]}

    matches = [{"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": 1,
                "proj": ["linear", 256, 384]} for t, s in PAIRS]
    timer = StepTimer()
    student.register_forward_pre_hook(timer)
    with tempfile.TemporaryDirectory() as out:
        train_cfg = TrainingConfig(device="cpu", output_dir=out, ckpt_steps=10 ** 9, log_dir=out)
        distill_cfg = DistillationConfig(temperature=TEMP, kd_loss_type="ce", hard_label_weight=0,
                                         intermediate_matches=matches)
        distiller = GeneralDistiller(train_cfg, distill_cfg, teacher, student, adaptor, adaptor)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-4, foreach=True)
        with distiller:
            distiller.train(opt, batches, num_steps=n, output_hidden_states=True)
    return timer.seconds_per_step()


def child(variant: str, profile_to: str = "") -> None:
    import torch

    torch.manual_seed(0)
    if profile_to:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            child(variant)
        ev = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in ev)
        rows = sorted(ev, key=lambda e: e.self_cpu_time_total, reverse=True)
        syncs = sum(e.count for e in ev if e.key in ("aten::item", "aten::_local_scalar_dense"))
        with open(profile_to, "w") as fh:
            json.dump({"variant": variant, "steps": WARMUP + STEPS + 1, "total_self_cpu_us": total,
                       "item_calls": syncs,
                       "top": [{"op": e.key, "calls": e.count, "self_cpu_us": e.self_cpu_time_total,
                                "share": e.self_cpu_time_total / total} for e in rows[:15]]}, fh)
        return
    if variant in ("floor", "student"):
        sec = run_floor(plain=variant == "student")
    elif variant.startswith("ours_"):
        sec = run_ours(cached=variant.startswith("ours_cached"), defaults=variant.endswith("_defaults"))
    else:
        sec = run_textbrewer()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "s_per_step": sec, "examples_per_s": BATCH / sec, "peak_rss_mb": rss_mb}))


def profile_main() -> int:
    """Run the floor and ours (live) under torch.profiler, one process each; write the op tables side by side."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in ("floor", "ours_live", "ours_cached", "student"):
            path = os.path.join(tmp, v + ".json")
            run = subprocess.run([sys.executable, __file__, "--child", v, "--profile-to", path], env=env,
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            with open(path) as fh:
                res[v] = json.load(fh)
    md = [f"# torch.profiler: one distillation step, fp32, batch {BATCH} × {SEQ} ({WARMUP + STEPS + 1} steps each)", "",
          "Self CPU time per op over the whole run (model load excluded); `item` = host syncs "
          "(`aten::item` / `_local_scalar_dense` calls).", ""]
    for v, r in res.items():
        steps = r["steps"]
        md += [f"## {v}: {r['total_self_cpu_us'] / 1e3 / steps:.0f} ms self CPU per step, "
               f"{r['item_calls'] / steps:.1f} host syncs per step", "", "| op | calls/step | ms/step | share |",
               "|---|---|---|---|"]
        md += [f"| `{t['op']}` | {t['calls'] / steps:.1f} | {t['self_cpu_us'] / 1e3 / steps:.1f} | "
               f"{t['share'] * 100:.1f}% |" for t in r["top"]]
        md.append("")
    out = os.path.join(HERE, "results", "profile_kd_step")
    with open(out + ".json", "w") as fh:
        json.dump(res, fh, indent=2)
    with open(out + ".md", "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(md))
    return 0


def matmul_peak() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    return 2 * 2048 ** 3 * 10 / (time.perf_counter() - t)


def ensure_textbrewer() -> None:
    if os.path.isdir(os.path.join(TB_DIR, "textbrewer")):
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", TB_DIR,
                    "textbrewer==0.2.1.post1"], check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "results", "bench_kd_step"))
    p.add_argument("--report-only", action="store_true", help="rebuild the tables from the saved JSON's runs")
    p.add_argument("--profile", action="store_true", help="profile the floor and ours (live) with torch.profiler")
    p.add_argument("--profile-to", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.profile_to)
        return 0
    if args.profile:
        return profile_main()
    saved = None
    if args.report_only:
        with open(args.out + ".json") as fh:
            saved = json.load(fh)
    sys.path.insert(0, HERE)
    from bench_demo_kd import machine

    from distiller_nlp.core.flops import encoder_flops

    runs = {v: [] for v in VARIANTS}
    peaks = []
    if saved is not None:
        runs, peaks, args.repeats = saved["runs"], [saved["matmul_peak_gflops_fp32"] * 1e9], len(saved["runs"]["floor"])
    else:
        ensure_textbrewer()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for r in range(args.repeats if saved is None else 0):
        peaks.append(matmul_peak())
        for v in VARIANTS:
            res = subprocess.run([sys.executable, __file__, "--child", v], env=env, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(res.stdout.strip().splitlines()[-1])
            runs[v].append(row)
            print(f"repeat {r}: {row}")
    peak = float(np.mean(peaks))
    student_flops = BATCH * 3 * encoder_flops(3, 256, 8, 1024, SEQ)  # forward + backward ≈ 3 forwards
    teacher_flops = BATCH * encoder_flops(6, 384, 12, 1536, SEQ)
    summary = {}
    for v, rows in runs.items():
        eps = np.array([x["examples_per_s"] for x in rows])
        sps = np.array([x["s_per_step"] for x in rows])
        summary[v] = {"examples_per_s": float(eps.mean()), "examples_per_s_std": float(eps.std(ddof=1)),
                      "peak_rss_mb": float(np.mean([x["peak_rss_mb"] for x in rows])),
                      # MFU counts the work the variant really does: no teacher forward when it is cached
                      "mfu": float((student_flops + (0 if v == "student" or "cached" in v else teacher_flops))
                                   / sps.mean() / peak)}
    tb = summary["textbrewer"]["examples_per_s"]
    floor = summary["floor"]["examples_per_s"]
    student = summary["student"]["examples_per_s"]
    for v in ("ours_live", "ours_cached", "ours_live_defaults", "ours_cached_defaults"):
        if v in summary:
            summary[v]["ratio_vs_textbrewer"] = summary[v]["examples_per_s"] / tb
    summary["ours_live"]["overhead_over_floor"] = floor / summary["ours_live"]["examples_per_s"] - 1
    summary["ours_cached"]["time_vs_plain_student_step"] = student / summary["ours_cached"]["examples_per_s"]
    result = {"protocol": __doc__.split("Usage")[0].strip(), "runs": runs, "summary": summary,
              "matmul_peak_gflops_fp32": peak / 1e9, "machine": machine(),
              "date": saved["date"] if saved else time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
    lines = ["| variant | examples/s | peak RSS (MB) | MFU | vs TextBrewer | note |", "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        if v not in summary:
            continue
        s = summary[v]
        note = ""
        if v == "ours_live":
            note = f"overhead over the floor {s['overhead_over_floor'] * 100:+.1f}% (goal ≤ 8%)"
        if v == "ours_cached":
            note = f"{s['time_vs_plain_student_step']:.2f} × the plain student step's time (goal ≤ 1.10)"
        if v == "ours_live_defaults":
            note = "our defaults (fused AdamW; fp32, since bf16 is slow on this CPU): goal ≥ 1.8 × TextBrewer"
        if v == "ours_cached_defaults":
            note = "our defaults + cached teacher: goal ≥ 2.5 × TextBrewer"
        ratio = f"{s['ratio_vs_textbrewer']:.2f}×" if "ratio_vs_textbrewer" in s else ""
        mfu = f"{s['mfu'] * 100:.1f}%"
        lines.append(f"| {v} | {s['examples_per_s']:.1f} ± {s['examples_per_s_std']:.1f} | {s['peak_rss_mb']:.0f} | "
                     f"{mfu} | {ratio} | {note} |")
    m = result["machine"]
    md = [f"# One distillation step, fp32, batch {BATCH} × {SEQ} tokens ({args.repeats} repeats, mean ± std)", "",
          f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; fp32 matmul peak "
          f"{peak / 1e9:.0f} GFLOP/s; measured {result['date']}.", "", *lines, ""]
    with open(args.out + ".md", "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
