"""``distiller-nlp run RECIPE``: every stage of a distillation recipe, resumable.

Stages (each writes its own directory under ``--output-dir``; a finished stage is skipped on ``--resume``, an
interrupted one resumes from its last checkpoint):

1. ``teacher/`` — fine-tune ``teacher`` on the task when it has no classifier for it (``teacher_finetune.when:
   auto``), or always (``always``); ``never`` uses it as given;
2. ``stage-<name>/`` — when the recipe lists ``stages`` (e.g. TinyBERT's intermediate-layer stage before the
   prediction-layer one, or a task-agnostic ``general: true`` stage), each stage is the recipe with the stage's keys
   merged on top, starting from the previous stage's student;
3. ``student/`` — the (last) distillation, augmentation included (``augment``), evaluated on the dev split(s) and a
   labelled test split;
4. ``predictions/`` — GLUE-format test predictions (``SST-2.tsv``, ``MNLI-m.tsv``, ...) for unlabelled test splits;
5. ``report.md`` + ``metrics.json`` — teacher vs student scores, FLOPs ratio, time per stage.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable

from distiller_nlp.config import DistillConfig, FinetuneConfig
from distiller_nlp.core.config import check_config, deep_merge, from_dict, to_dict
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.run import TrainingRun
from distiller_nlp.core.rundir import finished_run, is_main_process, write_json_atomic, write_text_atomic
from distiller_nlp.kd.distillation import distill
from distiller_nlp.kd.finetune import finetune_teacher
from distiller_nlp.kd.setup import check_pipeline
from distiller_nlp.models import load_teacher_for_task, resolve_model_path
from distiller_nlp.tasks import get_task

logger = logging.getLogger(__name__)


def expand_stages(cfg: DistillConfig, source: str = "the recipe") -> list[tuple[str, DistillConfig]]:
    """The distillation stages of a recipe as ``[(name, config)]`` (one unnamed stage when ``stages`` is empty),
    each validated like a whole recipe (an unknown key in a stage is an error naming it)."""
    if not cfg.stages:
        return [("student", cfg)]
    base = to_dict(cfg)
    base["stages"] = []
    out = []
    for i, raw in enumerate(cfg.stages):
        if not isinstance(raw, dict):
            raise DistillerError(f"stages[{i}] in {source} must be a mapping of recipe keys")
        raw = dict(raw)
        name = str(raw.pop("name", f"{i + 1}"))
        if "stages" in raw:
            raise DistillerError(f"stages[{i}] in {source} cannot hold stages itself")
        stage = from_dict(DistillConfig, deep_merge(base, raw), f"{source} (stages[{i}] '{name}')")
        check_config(stage, f"{source} (stages[{i}])")
        stage.train.validate(f"{source} (stages[{i}])")
        out.append((name, stage))
    return out


def load_finetuned_teacher(path: str, task, trust_remote_code: bool):
    """The teacher at ``path`` when it has a classifier for ``task``, else None (other load errors propagate)."""
    try:
        return load_teacher_for_task(path, task, trust_remote_code=trust_remote_code)
    except DistillerError as exc:
        if "no classifier trained" in str(exc):
            return None
        raise


def teacher_has_classifier(path: str, task, trust_remote_code: bool) -> bool:
    """Whether the checkpoint at ``path`` has a classifier trained for ``task``."""
    return load_finetuned_teacher(path, task, trust_remote_code) is not None


def run_stage(fn, directory: str, resume: bool, overwrite: bool, *args, **kwargs):
    """Run one stage into ``directory``: reuse a finished stage on resume, resume an interrupted one."""
    done = finished_run(directory) if resume else None
    if done is not None:
        logger.info("stage %s already finished: reusing it", directory)
        return done, 0.0
    t = time.perf_counter()
    again = resume and os.path.isdir(os.path.join(directory, "checkpoints"))
    metrics = fn(*args, resume=again, overwrite=overwrite or (resume and not again), **kwargs)
    return metrics, time.perf_counter() - t


def run_recipe(cfg: DistillConfig, resume: bool = False, overwrite: bool = False,
               on_finish: Iterable[Callable] = ()) -> dict:
    """Run every stage of a recipe into ``cfg.output_dir`` (see the module docstring); returns the summary metrics
    (also written to ``DIR/metrics.json``, with a Markdown ``DIR/report.md``). ``on_finish``: hooks of the final
    distillation stage (see :func:`~distiller_nlp.kd.distillation.distill`)."""
    from distiller_nlp.predict import evaluate_model, glue_submission

    out = cfg.output_dir
    run_dir = TrainingRun(out, resume=resume, overwrite=overwrite)
    check_config(cfg, "the recipe")  # ranges and choices, also for a config built in Python
    if not cfg.teacher:
        raise DistillerError("the recipe names no teacher (key 'teacher' or --teacher)")
    stages = expand_stages(cfg)  # validate every stage before anything runs
    for name, stage in stages:
        check_pipeline(stage, f"stage '{name}'")
    task = get_task(cfg.data.task)
    teacher_path = resolve_model_path(cfg.teacher)
    when = cfg.teacher_finetune.when
    needs_finetune = when == "always" or (when == "auto" and not teacher_has_classifier(
        teacher_path, task, cfg.trust_remote_code))
    run_dir.start(cfg, config_file="recipe.yaml")
    summary: dict = {"task": task.name, "stages": []}
    teacher_metrics = None
    if needs_finetune:
        t_dir = os.path.join(out, "teacher")
        print(f"[run] teacher: fine-tune {cfg.teacher} on {task.name} -> {t_dir}")
        t_cfg = FinetuneConfig(model=cfg.teacher, output_dir=t_dir, data=cfg.data, train=cfg.teacher_finetune.train,
                               trust_remote_code=cfg.trust_remote_code)
        teacher_metrics, secs = run_stage(finetune_teacher, t_dir, resume, False, t_cfg)
        summary["stages"].append({"stage": "teacher fine-tune", "dir": t_dir, "seconds": round(secs, 1)})
        teacher = t_dir
    else:
        teacher = cfg.teacher
    previous_student = None
    metrics: dict = {}
    for i, (name, stage) in enumerate(stages):
        if not (cfg.stages and "teacher" in cfg.stages[i]):  # a stage may name its own teacher (general distillation)
            stage.teacher = teacher
        if previous_student is not None:
            stage.student, stage.student_shape = previous_student, ""
        last = i == len(stages) - 1
        s_dir = os.path.join(out, "student" if last else f"stage-{name}")
        stage.output_dir = s_dir
        print(f"[run] distill{'' if len(stages) == 1 else f' stage {i + 1}/{len(stages)} ({name})'} -> {s_dir}")
        # only the final student is, e.g., a meta-dataset record
        metrics, secs = run_stage(distill, s_dir, resume, False, stage, on_finish=on_finish if last else ())
        summary["stages"].append({"stage": f"distill {name}", "dir": s_dir, "seconds": round(secs, 1),
                                  **{k: v for k, v in metrics.items() if k.startswith(("eval_", "test_"))}})
        previous_student = s_dir
    student_dir = previous_student
    if teacher_metrics is None:
        teacher_metrics = evaluate_model(teacher, cfg.data, train=cfg.train, trust_remote_code=cfg.trust_remote_code)
    predictions = {}
    if cfg.predict_test and is_main_process():
        predictions = glue_submission(student_dir, cfg.data, os.path.join(out, "predictions"), train=cfg.train,
                                      trust_remote_code=cfg.trust_remote_code)
        for split, path in predictions.items():
            print(f"[run] {split} predictions -> {path}")
    main = task.main_metric
    summary.update({
        "teacher": teacher, "student": student_dir, "main_metric": main,
        "teacher_eval": teacher_metrics.get(f"eval_{main}"), "student_eval": metrics.get(f"eval_{main}"),
        "teacher_test": teacher_metrics.get(f"test_{main}"), "student_test": metrics.get(f"test_{main}"),
        "flops_ratio": metrics.get("flops_ratio"), "student_params": metrics.get("student_params"),
        "teacher_params": metrics.get("teacher_params"), "predictions": predictions,
        **{k: v for k, v in metrics.items() if k.startswith("floor_") or k == "floors_s"},  # the student's run fits them
    })
    if is_main_process():
        write_json_atomic(run_dir.path("metrics.json"), summary)
        write_text_atomic(run_dir.path("report.md"), _report(cfg, summary))
    return summary


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def _report(cfg: DistillConfig, s: dict) -> str:
    lines = [f"# distiller-nlp run: {s['task']}", "",
             f"| model | dev {s['main_metric']} | test {s['main_metric']} | params |", "|---|---|---|---|",
             f"| teacher `{s['teacher']}` | {_fmt(s['teacher_eval'])} | {_fmt(s['teacher_test'])} | "
             f"{_fmt(s['teacher_params'])} |",
             f"| student `{s['student']}` | {_fmt(s['student_eval'])} | {_fmt(s['student_test'])} | "
             f"{_fmt(s['student_params'])} |"]
    main = s["main_metric"]
    for kind, label in (("majority", "floor: majority class"), ("tfidf", "floor: TF-IDF + linear model")):
        if f"floor_{kind}_eval_{main}" in s:
            lines.append(f"| {label} (same training split) | {_fmt(s[f'floor_{kind}_eval_{main}'])} | "
                         f"{_fmt(s.get(f'floor_{kind}_test_{main}'))} | – |")
    if s.get("floor_warning"):
        lines += ["", f"**Warning:** {s['floor_warning']}"]
    lines += ["",
             f"Student encoder FLOPs / teacher's (at 128 tokens): {_fmt(s['flops_ratio'])}.", "",
             "| stage | directory | seconds |", "|---|---|---|"]
    lines += [f"| {st['stage']} | `{st['dir']}` | {st['seconds']} |" for st in s["stages"]]
    if s["predictions"]:
        lines += ["", "Test predictions (GLUE format): " + ", ".join(f"`{p}`" for p in s["predictions"].values())]
    from distiller_nlp.config import resolve_kd_defaults

    kd = resolve_kd_defaults(cfg.kd)
    lines += ["", f"Pipeline: augment {cfg.augment.stages or 'none'}, MixUp {kd.mixup}, prediction loss "
              f"{kd.pred_loss} (T={kd.temperature}), mapping "
              f"{kd.mapping.strategy + '/' + kd.mapping.loss if kd.mapping else 'none'}.", ""]
    return "\n".join(lines)
