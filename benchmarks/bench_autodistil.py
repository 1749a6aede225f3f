"""AutoDistil benchmark on the packaged MiniLM-L6-H384 teacher and the packaged tweets (issue 4, item 7).

Needs trained SuperLMs (``autodistil train-superlm --subspaces all ... --output-dir K3``). Sections:

- ``a``: time to score every candidate of the ``minilm-tiny`` SuperLM on held-out sequences of 64 tokens;
- ``search``: ``autodistil search --budget-ratio 0.25`` over all K=3 SuperLMs (128 tokens), plain-BERT restricted
  too (the student ``distiller-nlp`` fine-tunes as a plain BERT);
- ``b``: the searched (plain-BERT) student fine-tuned on tweets against a same-FLOPs student initialised from teacher
  layers and against the searched shape from random init, over seeds;
- ``d``: Spearman rank correlation between the task-agnostic score and fine-tuned accuracy over inherited subnets.

Writes ``benchmarks/results/autodistil.json`` and ``autodistil.md``. Run with one intra-op thread on a shared
machine (``OMP_NUM_THREADS=1``)::

    OMP_NUM_THREADS=1 python benchmarks/bench_autodistil.py --k3 runs/autodistil/k3 --sections a,search,b
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time

import autodistil  # noqa: F401  (registers autodistil_bert)
from autodistil.config import SearchConfig
from autodistil.search import search
from autodistil.space import Arch, parse_arch
from distiller_nlp.config import DataConfig, FinetuneConfig, TrainArgs, load_config
from distiller_nlp.core.flops import encoder_flops
from distiller_nlp.models import build_student, load_tokenizer, resolve_model_path, save_student

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def run_search(superlms, out, **kw) -> dict:
    cfg = load_config(SearchConfig, None, {"superlm": superlms, "output_dir": out, **kw})
    cfg.validate()
    return search(cfg, overwrite=True)


def finetune(model_dir: str, out: str, seed: int, args) -> dict:
    from distiller_nlp.teacher import finetune_teacher

    cfg = FinetuneConfig(
        model=model_dir, output_dir=out,
        data=DataConfig(task="tweets", max_train_examples=args.ft_train, max_eval_examples=args.ft_eval),
        train=TrainArgs(epochs=args.ft_epochs, batch_size=32, lr=args.ft_lr, max_length=64, seed=seed,
                        precision="no", report_to="none", eval_batch_size=128),
    )
    return finetune_teacher(cfg, overwrite=True)


def same_flops_teacher_shape(budget: float, target: int, seq_len: int = 128):
    """Hand-designed plain shape (head dim 32, FFN = 4H, layers from the teacher) closest to ``target`` FLOPs."""
    best = None
    for layers in range(1, 7):
        for heads in range(2, 13):
            hidden = heads * 32
            f = encoder_flops(layers, hidden, heads, 4 * hidden, seq_len)
            if f <= budget and (best is None or abs(f - target) < abs(best[0] - target)):
                best = (f, f"layers={layers},hidden={hidden},heads={heads},intermediate={4 * hidden}")
    return best


def section_b(chosen: dict, budget: float, args, work: str) -> dict:
    from transformers import AutoModel

    arch = Arch(chosen["chosen_layers"], chosen["chosen_hidden"], chosen["chosen_heads"],
                chosen["chosen_mlp_ratio"], chosen["chosen_head_dim"])
    teacher = resolve_model_path("minilm")
    tok = load_tokenizer(teacher)
    flops, shape = same_flops_teacher_shape(budget, chosen["chosen_flops"])
    init_dir = os.path.join(work, "init")
    os.makedirs(init_dir, exist_ok=True)
    # the same-FLOPs hand-designed student initialised from teacher layers (DynaBERT/AutoDistil leading slices)
    from distiller_nlp.data import get_task

    save_student(build_student(teacher, shape=shape, init="teacher", task=get_task("tweets")), tok,
                 os.path.join(init_dir, "teacher_layers"))
    # the searched shape from random init
    config = AutoModel.from_pretrained(chosen["student_dir"]).config
    save_student(AutoModel.from_config(config), tok, os.path.join(init_dir, "random"))
    variants = {"searched (SuperLM init)": chosen["student_dir"],
                f"teacher layers {shape}": os.path.join(init_dir, "teacher_layers"),
                "searched shape, random init": os.path.join(init_dir, "random")}
    out = {"searched_arch": str(arch), "searched_flops": chosen["chosen_flops"], "baseline_shape": shape,
           "baseline_flops": flops, "runs": {}}
    for name, path in variants.items():
        accs = []
        for seed in args.seeds:
            m = finetune(path, os.path.join(work, "ft", name.split()[0] + f"-{len(accs)}-{seed}"), seed, args)
            accs.append(m.get("test_accuracy", m.get("eval_accuracy")))
            print(f"(b) {name} seed {seed}: {accs[-1]:.4f}", flush=True)
        out["runs"][name] = accs
    return out


def section_d(candidates_csv: str, args, work: str) -> dict:
    """Fine-tune ``args.d_subnets`` inherited subnets spread over the score range; Spearman(score, accuracy)."""
    from scipy.stats import spearmanr

    from autodistil.superlm import load_superlm

    rows = [r for r in csv.DictReader(open(candidates_csv)) if r["score"] and r["plain_bert"] == "True"]
    rows.sort(key=lambda r: float(r["score"]))
    step = max(1, len(rows) // args.d_subnets)
    picked = rows[::step][: args.d_subnets]
    tok = load_tokenizer(resolve_model_path("minilm"))
    scores, accs = [], []
    for i, r in enumerate(picked):
        slm, _, _ = load_superlm(r["superlm"])
        arch = parse_arch({k: r[k] for k in ("layers", "hidden", "heads", "mlp_ratio", "head_dim")})
        d = save_student(slm.extract(arch), tok, os.path.join(work, "d", f"sub{i}"))
        m = finetune(d, os.path.join(work, "d", f"ft{i}"), args.seeds[0], args)
        scores.append(float(r["score"]))
        accs.append(m.get("test_accuracy", m.get("eval_accuracy")))
        print(f"(d) {arch}: score {scores[-1]:.4f} acc {accs[-1]:.4f}", flush=True)
    rho = spearmanr(scores, accs).correlation
    # lower relation loss should mean higher accuracy: report the correlation of -score with accuracy
    return {"subnets": len(picked), "spearman_neg_score_vs_acc": float(-rho), "scores": scores, "accuracies": accs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k3", required=True, help="directory holding the K=3 SuperLMs")
    p.add_argument("--work", default="runs/bench_autodistil")
    p.add_argument("--sections", default="a,search,b")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--heldout", type=int, default=256)
    p.add_argument("--ft-train", type=int, default=2000)
    p.add_argument("--ft-eval", type=int, default=500)
    p.add_argument("--ft-epochs", type=float, default=2.0)
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--d-subnets", type=int, default=8)
    p.add_argument("--training-note", default="", help="the SuperLM training budget, stated in the table")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    sections = set(args.sections.split(","))
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "autodistil.json")
    results = json.load(open(path)) if os.path.isfile(path) else {}
    results["training"] = args.training_note or results.get("training", "")
    superlms = sorted(os.path.join(args.k3, d) for d in os.listdir(args.k3)
                      if os.path.isfile(os.path.join(args.k3, d, "superlm.json")))

    def save():  # merge: another section may run in a parallel process
        merged = json.load(open(path)) if os.path.isfile(path) else {}
        merged.update(results)
        results.update(merged)
        tmp = path + f".tmp-{os.getpid()}"
        json.dump(results, open(tmp, "w"), indent=2)
        os.replace(tmp, path)
        write_table(results)

    if "a" in sections:
        tiny = [d for d in superlms if d.endswith("minilm-tiny")]
        m = run_search(tiny, os.path.join(args.work, "a"), budget_ratio=1.0, max_length=64,
                       **{"data.heldout_examples": args.heldout, "precision": "no"})
        results["a"] = {"candidates_scored": m["candidates_scored"], "heldout_sequences": m["heldout_sequences"],
                        "tokens": 64, "score_runtime_s": m["score_runtime_s"], "score_cpu_s": m["score_cpu_s"], "precision": "fp32",
                        "threads": os.environ.get("OMP_NUM_THREADS", "default")}
        save()
    if "search" in sections:
        for key, plain in (("search", False), ("search_plain", True)):
            out = os.path.join(args.work, key)
            m = run_search(superlms, out, budget_ratio=0.25, max_length=128, plain_bert=plain,
                           **{"data.heldout_examples": args.heldout, "precision": "no"})
            m["student_dir"] = os.path.join(out, "student")
            shutil.copy(os.path.join(out, "candidates.csv"), os.path.join(RESULTS, f"autodistil_{key}_candidates.csv"))
            shutil.copy(os.path.join(out, "pareto.png"), os.path.join(RESULTS, f"autodistil_{key}_pareto.png"))
            results[key] = m
            save()
    if "b" in sections:
        results["b"] = section_b(results["search_plain"], results["search_plain"]["budget_flops"], args,
                                 os.path.join(args.work, "b"))
        save()
    if "d" in sections:
        results["d"] = section_d(os.path.join(args.work, "search_plain", "candidates.csv"), args,
                                 os.path.join(args.work, "d"))
        save()
    return 0


def write_table(r: dict) -> None:
    import statistics

    lines = ["# AutoDistil benchmark (packaged MiniLM-L6-H384 teacher, packaged tweets)", "",
             f"SuperLM training budget: {r.get('training', '')}", "",
             "FLOPs = 2 x multiply-adds, encoder only, one sequence.", ""]
    if "a" in r:
        a = r["a"]
        lines += ["## (a) scoring time", "",
                  f"{a['candidates_scored']} candidates of minilm-tiny x {a['heldout_sequences']} held-out sequences "
                  f"of {a['tokens']} tokens, {a['precision']}, threads={a['threads']}: **{a['score_runtime_s']:.1f} s** "
                  f"wall-clock on the shared machine, {a['score_cpu_s']:.1f} s of process CPU time (goal <= 120 s)", ""]
    for key, title in (("search", "search, budget 1/4 of teacher FLOPs at 128 tokens"),
                       ("search_plain", "search --plain-bert, same budget")):
        if key in r:
            m = r[key]
            lines += [f"## {title}", "",
                      f"chosen {m['chosen_subspace']}: L={m['chosen_layers']} H={m['chosen_hidden']} "
                      f"A={m['chosen_heads']} R={m['chosen_mlp_ratio']} (head dim {m['chosen_head_dim']}), "
                      f"{m['chosen_flops'] / 1e9:.3f} GFLOPs = {m['flops_ratio']:.3f} of the teacher's "
                      f"{m['teacher_flops'] / 1e9:.3f} G, {m['chosen_params'] / 1e6:.2f} M params, held-out relation "
                      f"loss {m['chosen_score']:.4f}; {m['candidates_scored']} of {m['candidates']} candidates fit and "
                      f"were scored in {m['score_runtime_s']:.0f} s", ""]
    if "b" in r:
        b = r["b"]
        lines += ["## (b) fine-tuned on tweets (test accuracy, mean ± sd over seeds)", "",
                  "| student | GFLOPs | accuracy | runs |", "|---|---|---|---|"]
        for name, accs in b["runs"].items():
            fl = b["baseline_flops"] if name.startswith("teacher layers") else b["searched_flops"]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            lines.append(f"| {name} | {fl / 1e9:.3f} | {statistics.mean(accs):.4f} ± {sd:.4f} | "
                         f"{', '.join(f'{x:.4f}' for x in accs)} |")
        lines.append("")
    if "d" in r:
        d = r["d"]
        lines += ["## (d) proxy score vs fine-tuned accuracy", "",
                  f"Spearman(-relation loss, accuracy) over {d['subnets']} subnets: {d['spearman_neg_score_vs_acc']:.3f}",
                  ""]
    if "c" not in r:
        lines += ["## (c) K=3 vs K=1", "", "not run (see the report).", ""]
    tmp = os.path.join(RESULTS, "autodistil.md.tmp")
    open(tmp, "w").write("\n".join(lines))
    os.replace(tmp, os.path.join(RESULTS, "autodistil.md"))


if __name__ == "__main__":
    sys.exit(main())
