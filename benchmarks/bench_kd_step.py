#!/usr/bin/env python
"""Benchmark: one distillation step — the floors, ours (teacher live / cached, fp32 / our defaults) and TextBrewer.

Protocol (fixed before the first measured run; the bf16, teacher-dtype and compile variants were added for issue #18
before their first run):
- models of the real shapes: teacher = the packaged MiniLM-L6-H384 with a 3-way classifier (6 × 384, 12 heads),
  student = ``layers=3,hidden=256,heads=8,intermediate=1024`` (random weights: timing only);
- batch 32 × 64 tokens (random token ids, no padding), 3 classes; AdamW (lr 1e-4);
- losses: soft cross-entropy at T=4 on logits + hidden MSE on 3 matched layers (student 1/2/3 ↔ teacher 2/4/6)
  through learned Linear(256→384) projections;
- variants, each in its own process (for its peak RSS), repeats interleaved:
  ``floor`` (teacher forward under no_grad keeping only layers 2/4/6 + a plain student step: forward, CE on labels,
  backward, ``foreach`` AdamW; fp32) and ``floor_bf16`` (the same under bf16 autocast, the teacher's weights cast
  to bf16 once); ``student`` / ``student_bf16`` (the plain student step alone); ``ours_live`` and ``ours_cached``
  (``distill``'s module on the shared engine, teacher run every step / read from a float16 cache; fp32, ``foreach``
  AdamW, no clipping: the floor's settings); ``ours_live_defaults`` and ``ours_cached_defaults`` (the same with
  ``TrainArgs()``'s defaults untouched but for steps, batch and lr: ``precision: auto`` — decided by the probe —,
  ``optim: auto`` = fused AdamW, clipping at 1.0, the frozen teacher held in the compute dtype, TensorBoard on);
  ``ours_live_defaults_fp32_teacher`` (defaults, but the frozen teacher kept in fp32 and cast by autocast every
  step); ``ours_live_defaults_compile`` (defaults + ``--compile``: student and teacher through ``torch.compile``);
  ``textbrewer`` (TextBrewer 0.2.1 ``GeneralDistiller`` with ``intermediate_matches``, ``output_hidden_states=True``;
  fp32: it has no CPU mixed precision);
- each run does 3 warm-up steps, then times 20 steps between consecutive student forward calls; the compile variant
  also reports its first step's extra time (the compilation).
Reported: examples/s (mean ± std), peak RSS, the teacher's weight bytes, ratios, overhead over the floors, MFU =
model FLOPs per second (teacher forward + 3 × student forward) over the measured matmul peak (2048², same run) of
the variant's precision, the precision ``auto`` chose and the probe's measured bf16 / fp32 speed ratio.

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
VARIANTS = ("floor", "floor_bf16", "student", "student_bf16", "ours_live", "ours_cached", "ours_live_defaults",
            "ours_cached_defaults", "ours_live_defaults_fp32_teacher", "ours_live_defaults_compile", "textbrewer")
BF16_VARIANTS = ("floor_bf16", "student_bf16")


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

    def first_step_extra_s(self) -> float:
        """How much longer the first step took than a measured one (the compilation, for ``--compile``)."""
        return (self.t[1] - self.t[0]) - self.seconds_per_step()


def run_floor(plain: bool, bf16: bool = False):
    import torch
    import torch.nn.functional as F

    from distiller_nlp.core.capture import FeatureCapture

    teacher, student = _models()
    if bf16:
        teacher.to(torch.bfloat16)
    ids, labels = _data(WARMUP + STEPS + 1, teacher.config.vocab_size)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, foreach=True)
    timer = StepTimer()
    student.register_forward_pre_hook(timer)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    for i in range(WARMUP + STEPS + 1):
        x, y = ids[i * BATCH:(i + 1) * BATCH], labels[i * BATCH:(i + 1) * BATCH]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if not plain:
                with torch.no_grad(), FeatureCapture(teacher, hidden_layers=[t for t, _ in PAIRS]):
                    teacher(input_ids=x, attention_mask=mask)
            loss = F.cross_entropy(student(input_ids=x, attention_mask=mask).logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return timer, teacher


def run_ours(cached: bool, defaults: bool = False, **overrides):
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
    from distiller_nlp.kd import teacher_cache as tc

    if cached:
        ds = tc.as_cached_format(tc.compute_teacher_outputs(ds, teacher, "bench", module.teacher_hidden_layers,
                                                            pad_token_id=tok.pad_token_id))
        runner, frozen = tc.CachedTeacher(), []
    else:
        runner, frozen = TeacherRunner(teacher, module), [teacher]
    timer = StepTimer()
    module.register_forward_pre_hook(timer)
    if defaults:  # TrainArgs' own defaults but for the protocol's steps, batch and lr
        args = TrainArgs(max_steps=n, batch_size=BATCH, lr=1e-4, cpu=True, **overrides)
    else:
        args = TrainArgs(max_steps=n, batch_size=BATCH, lr=1e-4, precision="no", report_to="none",
                         logging_steps=1000, warmup_ratio=0.0, max_grad_norm=0.0, cpu=True, optim="adamw_foreach")
    with tempfile.TemporaryDirectory() as out:
        collate = make_collator(tok, extra_columns=tc.collate_teacher_columns if cached else None)  # distill's
        engine = Engine(args, out, module, ds, collate, prepare_batch=runner, frozen=frozen)
        engine.train()
    return timer, teacher, engine.precision


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
    return timer, teacher


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
    precision = "no"
    if variant in ("floor", "student", "floor_bf16", "student_bf16"):
        timer, teacher = run_floor(plain=variant.startswith("student"), bf16=variant in BF16_VARIANTS)
        precision = "bf16" if variant in BF16_VARIANTS else "no"
    elif variant.startswith("ours_"):
        overrides = {}
        if variant.endswith("_fp32_teacher"):
            overrides["frozen_in_compute_dtype"] = False
        if variant.endswith("_compile"):
            overrides["compile"] = True
        timer, teacher, precision = run_ours(cached=variant.startswith("ours_cached"),
                                             defaults="_defaults" in variant, **overrides)
    else:
        timer, teacher = run_textbrewer()
    from distiller_nlp.core.engine.precision_probe import last_probe

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sec = timer.seconds_per_step()
    teacher_mb = sum(p.numel() * p.element_size() for p in teacher.parameters()) / 2 ** 20
    print(json.dumps({"variant": variant, "s_per_step": sec, "examples_per_s": BATCH / sec, "peak_rss_mb": rss_mb,
                      "teacher_weights_mb": teacher_mb, "precision": precision,
                      "first_step_extra_s": timer.first_step_extra_s(),
                      "probe_ratio": last_probe().get("ratio") if variant.endswith(("_defaults", "_teacher",
                                                                                     "_compile")) else None}))


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


def matmul_peak(dtype: str = "fp32") -> float:
    """FLOP/s of a 2048² matmul in fp32, or in bf16 (inputs already bf16: the kernel's own peak)."""
    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(2048, 2048).to(dt), torch.randn(2048, 2048).to(dt)
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


NOTES = {
    "ours_live": "fp32, the floor's optimizer settings: overhead over the fp32 floor {over_floor}",
    "ours_cached": "fp32: {vs_student:.2f} × the plain student step's time",
    "ours_live_defaults": "our defaults ({precision}): {over_best_floor} over the floor in the same precision",
    "ours_cached_defaults": "our defaults ({precision}) + cached teacher",
    "ours_live_defaults_fp32_teacher": "defaults, teacher kept fp32 (autocast casts it every step): "
                                       "{vs_defaults:.2f} × the speed of the bf16-held teacher",
    "ours_live_defaults_compile": "defaults + --compile: {vs_defaults:.2f} × the speed without; first step "
                                  "+{compile_s:.0f} s (compilation)",
}


def goals(summary: dict, bf16_fast: bool) -> list:
    """The issue's goals for this machine kind, each stated met or not with the measured value."""
    tb = summary["textbrewer"]["examples_per_s"]
    live, cached = summary["ours_live_defaults"], summary["ours_cached_defaults"]
    out = []
    if bf16_fast:
        floor = summary["floor_bf16"]["examples_per_s"]
        items = [("ours live, defaults ≥ 1.8 × TextBrewer", live["examples_per_s"] / tb, 1.8, "×"),
                 ("ours live, defaults ≤ 5 % over the bf16 floor", floor / live["examples_per_s"] - 1, 0.05, "over"),
                 ("ours cached, defaults ≥ 2.5 × TextBrewer", cached["examples_per_s"] / tb, 2.5, "×")]
    else:
        floor = summary["floor"]["examples_per_s"]
        items = [("auto never slower than fp32 (picks fp32)",
                  live["examples_per_s"] / summary["ours_live"]["examples_per_s"], 0.97, "×"),
                 ("ours live, defaults ≥ 1.0 × TextBrewer", live["examples_per_s"] / tb, 1.0, "×"),
                 ("ours cached, defaults ≥ 1.8 × TextBrewer", cached["examples_per_s"] / tb, 1.8, "×")]
    for text, value, goal, kind in items:
        met = value <= goal if kind == "over" else value >= goal
        shown = f"{value * 100:+.1f} %" if kind == "over" else f"{value:.2f} ×"
        out.append(f"- {text}: {shown} — {'met' if met else 'NOT met'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset to run")
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
    sys.path.insert(0, HERE)
    from bench_demo_kd import machine

    from distiller_nlp.core.flops import encoder_flops

    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    partial = args.out + ".partial.json"  # an interrupted run resumes from the repeats it finished
    state = {"runs": {v: [] for v in variants}, "peaks": {"fp32": [], "bf16": []}, "date": time.strftime("%Y-%m-%d")}
    if args.report_only:
        with open(args.out + ".json") as fh:
            saved = json.load(fh)
        state = {"runs": saved["runs"], "peaks": saved["matmul_peaks_all"], "date": saved["date"]}
        variants = [v for v in VARIANTS if v in state["runs"]]
    elif os.path.exists(partial):
        with open(partial) as fh:
            state = json.load(fh)
        print(f"resuming from {partial}")
    if not args.report_only:
        if "textbrewer" in variants:
            ensure_textbrewer()
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        for r in range(args.repeats):
            if all(len(state["runs"][v]) > r for v in variants):
                continue
            state["peaks"]["fp32"].append(matmul_peak("fp32"))
            state["peaks"]["bf16"].append(matmul_peak("bf16"))
            for v in variants:
                if len(state["runs"][v]) > r:
                    continue
                res = subprocess.run([sys.executable, __file__, "--child", v], env=env, capture_output=True,
                                     text=True)
                if res.returncode != 0:
                    print(res.stderr[-3000:], file=sys.stderr)
                    return 1
                row = json.loads(res.stdout.strip().splitlines()[-1])
                state["runs"][v].append(row)
                print(f"repeat {r}: {row}", flush=True)
                with open(partial + ".tmp", "w") as fh:
                    json.dump(state, fh)
                os.replace(partial + ".tmp", partial)
    runs = state["runs"]
    peaks = {k: float(np.mean(v)) for k, v in state["peaks"].items()}
    student_flops = BATCH * 3 * encoder_flops(3, 256, 8, 1024, SEQ)  # forward + backward ≈ 3 forwards
    teacher_flops = BATCH * encoder_flops(6, 384, 12, 1536, SEQ)
    summary = {}
    for v in variants:
        rows = runs[v]
        eps = np.array([x["examples_per_s"] for x in rows])
        sps = np.array([x["s_per_step"] for x in rows])
        precision = rows[0].get("precision", "no")
        peak = peaks["bf16" if precision == "bf16" else "fp32"]
        summary[v] = {"examples_per_s": float(eps.mean()), "examples_per_s_std": float(eps.std(ddof=1)),
                      "peak_rss_mb": float(np.mean([x["peak_rss_mb"] for x in rows])),
                      "teacher_weights_mb": float(rows[0].get("teacher_weights_mb", 0.0)),
                      "precision": precision, "probe_ratio": rows[0].get("probe_ratio"),
                      "first_step_extra_s": float(np.mean([x.get("first_step_extra_s", 0.0) for x in rows])),
                      # MFU counts the work the variant really does: no teacher forward when it is cached
                      "mfu": float((student_flops + (0 if v.startswith("student") or "cached" in v else teacher_flops))
                                   / sps.mean() / peak)}
    tb = summary["textbrewer"]["examples_per_s"]
    for v, s in summary.items():
        if v.startswith("ours_"):
            s["ratio_vs_textbrewer"] = s["examples_per_s"] / tb
    eps = {v: s["examples_per_s"] for v, s in summary.items()}
    fmt = {"over_floor": f"{eps['floor'] / eps['ours_live'] * 100 - 100:+.1f} %",
           "vs_student": eps["student"] / eps["ours_cached"],
           "precision": summary["ours_live_defaults"]["precision"],
           "vs_defaults": 0.0, "compile_s": summary["ours_live_defaults_compile"]["first_step_extra_s"]}
    same_floor = "floor_bf16" if fmt["precision"] == "bf16" else "floor"
    fmt["over_best_floor"] = f"{eps[same_floor] / eps['ours_live_defaults'] * 100 - 100:+.1f} %"
    m = machine()
    bf16_fast = peaks["bf16"] > 1.2 * peaks["fp32"]
    result = {"protocol": __doc__.split("Usage")[0].strip(), "runs": runs, "summary": summary,
              "matmul_peak_gflops_fp32": peaks["fp32"] / 1e9, "matmul_peak_gflops_bf16": peaks["bf16"] / 1e9,
              "matmul_peaks_all": state["peaks"], "bf16_fast": bf16_fast, "machine": m, "date": state["date"]}
    result["goals"] = goals(summary, bf16_fast)
    lines = ["| variant | precision | examples/s | peak RSS (MB) | teacher weights (MB) | MFU | vs TextBrewer | note |",
             "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        s = summary[v]
        if v in ("ours_live_defaults_fp32_teacher", "ours_live_defaults_compile"):
            fmt["vs_defaults"] = s["examples_per_s"] / eps["ours_live_defaults"]
        note = NOTES.get(v, "").format(**fmt)
        ratio = f"{s['ratio_vs_textbrewer']:.2f}×" if "ratio_vs_textbrewer" in s else ""
        lines.append(f"| {v} | {'bf16' if s['precision'] == 'bf16' else 'fp32'} | {s['examples_per_s']:.1f} ± "
                     f"{s['examples_per_s_std']:.1f} | {s['peak_rss_mb']:.0f} | {s['teacher_weights_mb']:.0f} | "
                     f"{s['mfu'] * 100:.1f}% | {ratio} | {note} |")
    probe = summary["ours_live_defaults"].get("probe_ratio")
    md = [f"# One distillation step, batch {BATCH} × {SEQ} tokens ({len(runs['floor'])} repeats, mean ± std)", "",
          f"Machine: {m['cpu']}, {m['cores']} cores, threads {m['threads']}, AVX-512 bf16 {m['avx512_bf16']}, AMX "
          f"{m['amx_bf16']}, AVX2 {m['avx2']}, torch {m['torch']}; matmul peak (2048²) fp32 "
          f"{peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; measured {state['date']}.", "",
          f"`precision: auto` chose **{fmt['precision']}** here"
          + (f" (its probe measured bf16 autocast at {probe:.2f} × the speed of fp32 on the run's shapes)."
             if probe else "."), "", *lines, "", "Goals for this machine kind (issue #18):", "", *result["goals"], "",
          "Earlier machines: [2026-11-22, AMD EPYC AVX2-only (bf16 slow)](bench_kd_step_2026-11-22_avx2.md).", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
    with open(args.out + ".md", "w") as fh:
        fh.write("\n".join(md))
    if os.path.exists(partial) and not args.report_only:
        os.remove(partial)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
