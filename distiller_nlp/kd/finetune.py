"""Fine-tune a teacher: any encoder checkpoint (default the packaged MiniLM-L6-H384) plus a classification head.

``finetune_teacher(cfg)`` is what ``distiller-nlp finetune-teacher`` runs. It uses the same engine as distillation
(plain cross-entropy, or MSE for regression tasks), writes the fine-tuned model with ``save_pretrained`` and
``metrics.json``, and is the step ``distill`` asks for when a teacher has no classifier for the task.
"""

from __future__ import annotations

import os

from distiller_nlp.config import FinetuneConfig
from distiller_nlp.core.engine import Engine
from distiller_nlp.core.run import TrainingRun
from distiller_nlp.models import (SupervisedModule, describe_model, epochs_text, load_backbone_for_finetune,
                                  load_snippet, load_tokenizer, model_source, resolve_model_path, save_student,
                                  size_rows, task_card_fields, write_card)
from distiller_nlp.tasks import eval_splits, load_data_config, make_collator, task_metric_fn, tokenize_dataset


def finetune_teacher(cfg: FinetuneConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Fine-tune ``cfg.model`` on ``cfg.data.task``; returns (and writes) ``metrics.json``.

    The output directory receives the best model by the task's main dev metric (``save_pretrained``, safetensors,
    tokenizer), ``metrics.json`` (``eval_*`` of that model, ``test_*`` when the task has a labelled test split,
    ``train_runtime_s``, ``examples_per_s``), ``history.json``, ``config.yaml`` and ``checkpoints/`` for ``--resume``.
    """
    from accelerate.utils import set_seed

    out = TrainingRun(cfg.output_dir, resume=resume, overwrite=overwrite)
    set_seed(cfg.train.seed)
    ds, task = load_data_config(cfg.data, seed=cfg.train.seed)
    path = resolve_model_path(cfg.model)
    model = load_backbone_for_finetune(path, task, trust_remote_code=cfg.trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    tok = tokenize_dataset(ds, tokenizer, max_length=cfg.train.max_length)
    evals = eval_splits(tok, task)
    collate = make_collator(tokenizer, is_regression=task.is_regression)
    cfg.train.check_metric_for_best(task.metric_names)
    out.start(cfg)

    def export(mod, directory):
        # any registered model type may be fine-tuned (e.g. an autodistil_bert student); only distill's students
        # must load without this package
        save_student(mod.model, tokenizer, directory, require_builtin=False)

    engine = Engine(cfg.train, out.output_dir, SupervisedModule(model), tok["train"], collate, eval_datasets=evals,
                    compute_metrics=task_metric_fn(task), main_metric=task.main_metric, export_fn=export,
                    resume=out.resume, run_name="finetune")
    result = engine.train()
    extra = {f"model_{k}": v for k, v in describe_model(model, seq_len=cfg.train.max_length).items()}
    extra["train_examples"] = len(tok["train"])
    if cfg.floors:
        from distiller_nlp.tasks.floors import floor_warning, floors_or_none

        extra.update(floors_or_none(ds, task, seed=cfg.train.seed))
        warning = floor_warning({**result.metrics, **extra}, task, "teacher",
                                "try a higher --lr (e.g. 1e-4) or more --epochs, or a larger model")
        if warning:
            extra["floor_warning"] = warning
    return out.finish(engine, result, extra=extra,
                      on_finish=[lambda metrics: write_card(out.output_dir, finetune_card(cfg, path, model, task,
                                                                                          metrics))])


def finetune_card(cfg: FinetuneConfig, path: str, model, task, metrics: dict):
    """The model card of a fine-tuned teacher: its base checkpoint, size, training settings, measured metrics."""
    from distiller_nlp.core.card import CardInfo

    src = model_source(cfg.model, path)
    desc = describe_model(model, seq_len=128)
    tr = cfg.train
    main = task.main_metric
    score = metrics.get(f"eval_{main}")
    summary = (f"`{src['id']}` fine-tuned on the task `{task.name}` with distiller-toolkit (a teacher for "
               "`distiller-nlp distill`)." + (f" Dev {main}: {score:.4f}." if isinstance(score, float) else ""))
    pipe = {"objective": "mean-squared error on the label" if task.is_regression else "cross-entropy on the labels",
            "optimisation": epochs_text(tr)
            + f", peak lr {tr.lr:g}{' (chosen by --lr auto)' if metrics.get('lr_auto_chosen') else ''}, "
              f"batch {tr.batch_size}, max length {tr.max_length}, precision {tr.precision}, seed {tr.seed}"}
    data = {"task": f"`{task.name}`", "training examples": f"{metrics.get('train_examples', 0):,}"}
    from distiller_nlp.tasks.floors import floor_card_row

    if floor_card_row(metrics, task):
        data["floors"] = floor_card_row(metrics, task)
    return CardInfo(title=os.path.basename(os.path.abspath(cfg.output_dir)) or "teacher", summary=summary,
                    base_model=src["id"], license=src.get("license"), tags=["text-classification", "teacher"],
                    model_rows=[(q, v, "–") for q, v, _ in size_rows(desc)], pipeline=pipe, data=data,
                    metrics=metrics, load_snippet=load_snippet(),
                    api="from distiller_nlp.config import FinetuneConfig\nfrom distiller_nlp.core.config import "
                        "load_config\nfrom distiller_nlp.kd import finetune_teacher\n"
                        "finetune_teacher(load_config(FinetuneConfig, \"config.yaml\"))",
                    **task_card_fields(task))
