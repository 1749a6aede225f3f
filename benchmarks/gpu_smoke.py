"""GPU smoke test: the toolkit's training paths on real GPUs, with examples/s and peak GPU memory per case.

Usage (from the repository root; what ``make gpu-smoke`` runs)::

    python benchmarks/gpu_smoke.py --output benchmarks/results/gpu_smoke.json

Without a CUDA device it prints ``gpu-smoke: no CUDA device, skipped`` and exits 0. On one GPU it runs, on the
packaged MiniLM teacher and the packaged tweets (offline):

* ``distiller-nlp distill`` for 100 steps in bf16 (GPUs with compute capability >= 8.0) and in fp16 (every GPU),
  and once more with ``--teacher-cache auto``;
* ``autodistil train-superlm`` (50 steps, the ``minilm-tiny`` sub-space) followed by ``autodistil search``;
* ``vision-kd train --method nkd --dataset digits`` (default teacher trained and cached first);

and with two or more GPUs the bf16 (else fp16) distill case again under ``accelerate launch --multi_gpu``. Each case
runs in its own process; peak GPU memory is read in that process (``torch.cuda.max_memory_allocated``, per rank
under the launcher) and examples/s from its ``metrics.json``. Writes the JSON and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child process: run a console module as __main__ and record its peak GPU memory (per rank) at exit.
CHILD = r"""
import atexit, json, os, runpy, sys
import torch
out = os.environ["GPU_SMOKE_MEM"]
def _dump():
    if torch.cuda.is_available():
        rank = os.environ.get("RANK", "0")
        with open(f"{out}.{rank}", "w") as fh:
            json.dump({"peak_mib": torch.cuda.max_memory_allocated() / 2**20}, fh)
atexit.register(_dump)
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def gpu_cases(capability: tuple, n_gpus: int, work: str) -> list[dict]:
    """The cases for a GPU of ``capability`` (major, minor) and ``n_gpus`` GPUs; each ``{name, module, args,
    precision, launch, metrics}`` (``metrics``: the run directory whose metrics.json holds examples/s)."""
    precisions = (["bf16"] if capability[0] >= 8 else []) + ["fp16"]
    distill = ["distill", "--teacher", "minilm", "--task", "tweets", "--student-shape",
               "layers=3,hidden=384,heads=12,intermediate=1536", "--max-steps", "100", "--batch-size", "32",
               "--max-length", "64", "--report-to", "none"]
    cases = []
    for p in precisions:
        out = os.path.join(work, f"distill-{p}")
        cases.append({"name": f"distill 100 steps ({p})", "module": "distiller_nlp",
                      "args": distill + ["--precision", p, "--output-dir", out], "precision": p, "launch": 1,
                      "metrics": out})
    best = precisions[0]
    out = os.path.join(work, "distill-cache")
    cases.append({"name": f"distill 100 steps, teacher cache ({best})", "module": "distiller_nlp",
                  "args": distill + ["--precision", best, "--teacher-cache", "auto", "--output-dir", out],
                  "precision": best, "launch": 1, "metrics": out})
    superlm = os.path.join(work, "superlm")
    cases.append({"name": "train-superlm 50 steps (minilm-tiny sub-space)", "module": "autodistil",
                  "args": ["train-superlm", "--teacher", "minilm", "--subspace", "minilm-tiny", "--task", "tweets",
                           "--max-steps", "50", "--batch-size", "32", "--max-length", "64", "--precision", best,
                           "--report-to", "none", "--output-dir", superlm],
                  "precision": best, "launch": 1, "metrics": superlm})
    search = os.path.join(work, "search")
    cases.append({"name": "search (budget 0.25 x teacher)", "module": "autodistil",
                  "args": ["search", "--superlm", superlm, "--budget-ratio", "0.25", "--max-length", "64",
                           "--precision", best, "--output-dir", search],
                  "precision": best, "launch": 1, "metrics": search})
    vision = os.path.join(work, "nkd")
    cases.append({"name": "vision NKD on digits", "module": "vision_kd",
                  "args": ["train", "--method", "nkd", "--dataset", "digits", "--epochs", "5", "--report-to", "none",
                           "--teacher-cache", os.path.join(work, "vcache"), "--output-dir", vision],
                  "precision": "no", "launch": 1, "metrics": vision})
    if n_gpus >= 2:
        out = os.path.join(work, f"distill-{best}-x{n_gpus}")
        cases.append({"name": f"distill 100 steps ({best}), {n_gpus} GPUs", "module": "distiller_nlp",
                      "args": distill + ["--precision", best, "--output-dir", out], "precision": best,
                      "launch": n_gpus, "metrics": out})
    return cases


def run_case(case: dict, work: str) -> dict:
    """Run one case in its own process(es); its exit status, wall time, examples/s and peak GPU memory."""
    mem = os.path.join(work, f"mem-{abs(hash(case['name']))}")
    if case["launch"] > 1:  # accelerate launch runs a script file: the child, written out
        script = os.path.join(work, "child.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(CHILD)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(case["launch"]), "--num_machines", "1", "--dynamo_backend", "no", script]
    else:
        cmd = [sys.executable, "-c", CHILD]
    cmd += [case["module"], *case["args"]]
    env = dict(os.environ, GPU_SMOKE_MEM=mem, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"case": case["name"], "precision": case["precision"], "processes": case["launch"],
           "exit": proc.returncode, "wall_s": round(wall, 1), "command": " ".join(cmd[-len(case["args"]) - 1:])}
    metrics_file = os.path.join(case["metrics"], "metrics.json")
    if os.path.isfile(metrics_file):
        with open(metrics_file, encoding="utf-8") as fh:
            m = json.load(fh)
        row["examples_per_s"] = m.get("examples_per_s")
        row["world_size"] = m.get("world_size", 1)
    peaks = []
    for rank in range(case["launch"]):
        path = f"{mem}.{rank}"
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                peaks.append(json.load(fh)["peak_mib"])
    row["peak_gpu_mem_mib"] = round(max(peaks), 1) if peaks else None
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout)[-1500:]
    return row


def machine() -> dict:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"gpus": gpus, "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine()}


def markdown(result: dict) -> str:
    lines = [f"# GPU smoke ({', '.join(result['machine']['gpus'])}; sm{result['machine']['capability']}, torch "
             f"{result['machine']['torch']})", "",
             "| case | precision | processes | exit | examples/s | peak GPU MiB | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["cases"]:
        lines.append(f"| {r['case']} | {r['precision']} | {r['processes']} | {r['exit']} | "
                     f"{r.get('examples_per_s', '')} | {r.get('peak_gpu_mem_mib', '')} | {r['wall_s']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "gpu_smoke.json"))
    parser.add_argument("--work-dir", default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-smoke: no CUDA device, skipped")
        return 0
    work = args.work_dir or tempfile.mkdtemp(prefix="gpu-smoke-")
    cases = gpu_cases(torch.cuda.get_device_capability(0), torch.cuda.device_count(), work)
    rows = []
    for case in cases:
        row = run_case(case, work)
        print(json.dumps({k: v for k, v in row.items() if k != "error"}), flush=True)
        if "error" in row:
            print(row["error"], file=sys.stderr)
        rows.append(row)
    result = {"machine": machine(), "cases": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    with open(os.path.splitext(args.output)[0] + ".md", "w", encoding="utf-8") as fh:
        fh.write(markdown(result))
    print(markdown(result))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
