"""``distill(cfg)``, what ``distiller-nlp distill`` runs, and ``cache_teacher(cfg)``, what
``distiller-nlp cache-teacher`` runs."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable, Optional

from distiller_nlp.config import DistillConfig
from distiller_nlp.core.engine import Engine, make_accelerator
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.flops import encoder_flops_from_config
from distiller_nlp.core.run import TrainingRun
from distiller_nlp.core.rundir import check_output_dir
from distiller_nlp.kd import teacher_cache as tc
from distiller_nlp.kd.setup import prepare_distillation
from distiller_nlp.kd.teachers import CachedMixupRunner, TeacherRunner
from distiller_nlp.models import (describe_model, epochs_text, load_snippet, model_source, save_student, size_rows,
                                  task_card_fields, write_card)
from distiller_nlp.tasks import task_metric_fn

logger = logging.getLogger(__name__)

def probe_shapes_for(cfg: DistillConfig):
    """The matmul / attention shapes of a distillation run (teacher and student configs, batch × max length) for
    ``precision: auto``'s probe, read before any weights load; None (the generic probe) when a config cannot be read
    here — the run's own validation reports that later, with its own message."""
    if cfg.train.precision != "auto":
        return None
    from transformers import AutoConfig, BertConfig

    from distiller_nlp.core.engine import shapes_from_configs
    from distiller_nlp.core.shape import parse_student_shape
    from distiller_nlp.models import resolve_model_path

    configs = []
    try:
        configs.append(AutoConfig.from_pretrained(resolve_model_path(cfg.teacher)))
        if cfg.student:
            configs.append(AutoConfig.from_pretrained(resolve_model_path(cfg.student)))
        else:
            shape = parse_student_shape(cfg.student_shape)
            configs.append(BertConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                                      num_attention_heads=shape.heads, head_dim=int(shape.head_dim)))
    except Exception:  # noqa: BLE001 - a probe hint only; validation reports bad models and shapes
        if not configs:
            return None
    return shapes_from_configs(configs, cfg.train.batch_size, cfg.train.max_length)


def cache_teacher(cfg: DistillConfig, output_dir: str, overwrite: bool = False) -> dict:
    """Compute the teacher outputs the KD config ``cfg`` needs on its training set and save them to ``output_dir``.

    ``distill`` with ``teacher_cache: DIR`` then reads them instead of running the teacher, after checking that the
    cache was computed for the same teacher, data and layers. Returns ``{"key", "examples", "hidden_layers"}``.
    """
    check_output_dir(output_dir, overwrite=overwrite)
    run = prepare_distillation(cfg)
    problem = tc.cache_problem(run)
    if problem:
        raise DistillerError(f"cannot cache the teacher for this KD config: {problem}")
    key = tc.cache_key_for(run)
    layers = run.module.teacher_hidden_layers
    # The teacher runs on this process's device (a GPU unless --cpu); under a launcher rank 0 computes and writes.
    accelerator = make_accelerator(cfg.train, probe_shapes=probe_shapes_for(cfg))
    if accelerator.is_main_process:
        run.teacher.to(accelerator.device)
        ds = tc.compute_teacher_outputs(run.tok["train"], run.teacher, key, layers,
                                        pad_token_id=tc.teacher_tokenizer_of(run).pad_token_id,
                                        dtype=run.cache_dtype)
        tc.save_teacher_cache(ds, output_dir, key, run.teacher_path, layers)
    accelerator.wait_for_everyone()
    return {"key": key, "examples": len(run.tok["train"]), "hidden_layers": layers}


def distill(cfg: DistillConfig, resume: bool = False, overwrite: bool = False,
            callbacks: Optional[list] = None, on_finish: Iterable[Callable] = ()) -> dict:
    """Distil ``cfg.teacher`` into a student on ``cfg.data.task``; returns (and writes) ``metrics.json``.

    Everything is validated before the output directory is touched: the data (columns, labels, non-empty splits),
    the teacher (its classifier must match the task's labels — fine-tune it first otherwise), the student (shape,
    init), the KD config (loss names, layer indices). The output directory then receives the student
    (``save_pretrained`` + tokenizer; loads with ``AutoModelForSequenceClassification.from_pretrained(DIR)``),
    ``metrics.json``, ``history.json``, ``config.yaml``, ``checkpoints/`` (for ``--resume``) and TensorBoard logs.
    ``cfg.teacher_cache``: ``off`` (run the teacher every step), ``auto`` (compute its outputs once, cached by
    teacher + data + layers, whenever the pipeline allows) or a directory written by :func:`cache_teacher`.

    ``callbacks``: engine callbacks (e.g. an Optuna pruning reporter). ``on_finish``: ``hook(prepared, metrics,
    wall_s)`` called on the main process once ``metrics.json`` is written, with the prepared run of
    :func:`~distiller_nlp.kd.setup.prepare_distillation` (e.g. to append a meta-dataset record).
    """
    t_wall = time.perf_counter()
    out = TrainingRun(cfg.output_dir, resume=resume, overwrite=overwrite)
    # The process's one Accelerator, before anything else touches the process state: offline augmentation shards
    # its work over the ranks, the teacher cache runs the teacher on its device (rank 0 first).
    accelerator = make_accelerator(cfg.train, out.output_dir, tracking=True, probe_shapes=probe_shapes_for(cfg))
    run = prepare_distillation(cfg)
    teacher, student, module, task, tokenizer = run.teacher, run.student, run.module, run.task, run.tokenizer
    cfg.train.check_metric_for_best(("distill_loss",) if cfg.general else task.metric_names)
    t_cache = time.perf_counter()
    cached = tc.cached_train_set(cfg, run, accelerator)
    t_cache = time.perf_counter() - t_cache
    out.start(cfg)

    def export(mod, directory):
        save_student(mod.student, tokenizer, directory)

    if cached is not None:
        runner, train_set, frozen = tc.CachedTeacher(), cached, []
        if module.kd.mixup:  # originals from the cache, the teacher live on the mixed copies only
            runner, frozen = CachedMixupRunner(teacher, module), [teacher]
    else:
        runner = TeacherRunner(teacher, module, run.extra_teachers) if module.needs_teacher else None
        train_set, frozen = run.train_set, [teacher, *run.extra_teachers]
    metric_fn, main_metric, greater = task_metric_fn(task), task.main_metric, True
    if cfg.general:
        module.set_eval_teacher(TeacherRunner(teacher, module))
        frozen = [teacher]

        def metric_fn(preds, labels):
            return {"distill_loss": float(preds.mean())}

        main_metric, greater = "distill_loss", False
    engine = Engine(cfg.train, out.output_dir, module, train_set, run.collate, eval_datasets=run.evals,
                    compute_metrics=metric_fn, main_metric=main_metric, greater_is_better=greater,
                    prepare_batch=runner, frozen=frozen, export_fn=export, resume=out.resume, run_name="distill",
                    callbacks=callbacks, accelerator=accelerator)
    result = engine.train()
    extra = {f"student_{k}": v for k, v in describe_model(student, seq_len=cfg.train.max_length).items()}
    extra.update({f"teacher_{k}": v for k, v in describe_model(teacher, seq_len=cfg.train.max_length).items()})
    extra.update({
        "flops_ratio": round(encoder_flops_from_config(student.config, 128)
                             / encoder_flops_from_config(teacher.config, 128), 4),
        "train_examples": len(run.train_set),
        "train_examples_original": run.n_original,
        "teacher_cached": cached is not None,
        "teacher_cache_s": round(t_cache, 3) if cached is not None else 0.0,  # computing or loading it
    })
    if cfg.floors and not cfg.general:
        from distiller_nlp.tasks.floors import floor_warning, floors_or_none

        extra.update(floors_or_none({**run.raw, "train": run.raw_train}, task, seed=cfg.train.seed))
        warning = floor_warning({**result.metrics, **extra}, task, "student",
                                "try a higher --lr (e.g. 3e-4), more --epochs, a wider --student-shape, or a "
                                "better teacher")
        if warning:
            extra["floor_warning"] = warning
    hooks = [lambda metrics: write_card(out.output_dir, distill_card(cfg, run, metrics))]
    hooks += [lambda metrics, hook=hook: hook(run, metrics, time.perf_counter() - t_wall) for hook in on_finish]
    return out.finish(engine, result, extra=extra, on_finish=hooks)


def _teacher_score(teacher_path: str, metric: str):
    from distiller_nlp.core.rundir import read_json

    m = read_json(os.path.join(teacher_path, "metrics.json")) if os.path.isdir(teacher_path) else None
    return (m or {}).get(f"eval_{metric}")


def distill_card(cfg: DistillConfig, run, metrics: dict):
    """The model card of a distilled student (:class:`~distiller_nlp.core.card.CardInfo`): teacher, shape, params
    and FLOPs against the teacher, the whole pipeline, data sizes, measured metrics, the command."""
    from distiller_nlp.core.card import CardInfo

    kd, task, a, tr = run.module.kd, run.task, cfg.augment, cfg.train  # module.kd: defaults resolved
    src = model_source(cfg.teacher, run.teacher_path)
    s_desc = describe_model(run.student, seq_len=128)
    t_desc = describe_model(run.teacher, seq_len=128)
    main = task.main_metric
    t_score, s_score = _teacher_score(run.teacher_path, main), metrics.get(f"eval_{main}")
    shape = f"{s_desc['layers']} × {s_desc['hidden']}"
    summary = (f"A {shape} {s_desc['model_type']} student distilled from the teacher `{src['id']}`"
               + (f" (itself fine-tuned from `{src['base']}`)" if src.get("base") else "")
               + f" on the task `{task.name}` with distiller-toolkit.")
    if isinstance(s_score, float) and isinstance(t_score, float) and t_score:
        summary += (f" Dev {main}: {s_score:.4f} against the teacher's {t_score:.4f} ({s_score / t_score:.3f} of it) "
                    f"at {metrics.get('flops_ratio', float('nan')):.3f} of its encoder FLOPs.")
    pipe = {"prediction loss": "none" if kd.pred_loss == "none" else
            f"`{kd.pred_loss}` (T = {kd.temperature}, kd_weight {kd.kd_weight}"
            + (f", {kd.pred_loss_params}" if kd.pred_loss_params else "") + ")",
            "hard-label cross-entropy weight": kd.hard_label_weight}
    if run.module.matches:
        pipe["intermediate matches"] = ", ".join(f"`{m.name}` (×{m.weight})" for m in run.module.matches)
    if kd.mapping is not None:
        mp = kd.mapping
        pipe["layer mapping"] = f"{mp.strategy} ({mp.feature}, {mp.loss}" + (f", pool {mp.pool}" if mp.pool != "none"
                                                                             else "") + ")"
    if a.stages:
        pipe["augmentation"] = (f"{' + '.join(a.stages)}, {a.copies} cop{'y' if a.copies == 1 else 'ies'} per "
                                f"example, aug_p {a.aug_p}" + (f", regenerated every {a.reaug_every} epochs"
                                                               if a.reaug_every else "")
                                + (f", repeated augmentation k = {a.repeated_aug}" if a.repeated_aug > 1 else ""))
    if kd.mixup:
        pipe["MixUp"] = f"on word embeddings, α = {kd.mixup_alpha}"
    if kd.schedules:
        pipe["schedules"] = ", ".join(f"{k}: {v.kind} → {v.final}" for k, v in kd.schedules.items())
    if cfg.teachers:
        pipe["more teachers (soft targets averaged)"] = ", ".join(f"`{t}`" for t in cfg.teachers)
    if getattr(run, "cross_tokenizer", False):
        pipe["tokenizers"] = "teacher and student tokenize the raw text each their own way (cross-tokenizer KD)"
    pipe["teacher outputs"] = "cached once" if metrics.get("teacher_cached") else "computed live every step"
    pipe["student initialisation"] = (f"checkpoint `{cfg.student}`" if cfg.student
                                      else f"shape `{cfg.student_shape}`, init `{cfg.student_init}`")
    pipe["optimisation"] = epochs_text(tr) + (
        f", peak lr {tr.lr:g}{' (chosen by --lr auto)' if metrics.get('lr_auto_chosen') else ''}, "
        f"batch {tr.batch_size} × {tr.grad_accum} accumulation, max length {tr.max_length}, "
        f"precision {tr.precision}, seed {tr.seed}")
    if cfg.general:
        pipe["mode"] = "general (task-agnostic) distillation: intermediate matches only"
    data = {"task": f"`{task.name}`" + (f" (local files in `{cfg.data.data_dir}`)" if cfg.data.data_dir else ""),
            "training examples": f"{metrics.get('train_examples_original', run.n_original):,} original"
            + (f", {metrics['train_examples']:,} with augmented copies"
               if metrics.get("train_examples", 0) != metrics.get("train_examples_original") else "")}
    for key, value in metrics.items():
        if key.endswith("_examples") and key.startswith(("eval_", "test_")):
            data[f"{key[:-9]} examples"] = f"{value:,}" if isinstance(value, int) else value
    from distiller_nlp.tasks.floors import floor_card_row

    if floor_card_row(metrics, task):
        data["floors"] = floor_card_row(metrics, task)
    return CardInfo(
        title=os.path.basename(os.path.abspath(cfg.output_dir)) or "student",
        summary=summary, base_model=src["id"], license=src.get("license"),
        tags=["text-classification", s_desc["model_type"] or "", f"kd-{kd.pred_loss}"],
        model_rows=size_rows(s_desc, t_desc), pipeline=pipe, data=data, metrics=metrics,
        api="from distiller_nlp.config import DistillConfig\nfrom distiller_nlp.core.config import load_config\n"
            "from distiller_nlp.kd import distill\n"
            "distill(load_config(DistillConfig, \"config.yaml\"))",
        load_snippet=load_snippet(), **task_card_fields(task))
