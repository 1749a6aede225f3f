"""Fine-tune a teacher: any encoder checkpoint (default the packaged MiniLM-L6-H384) plus a classification head.

``finetune_teacher(cfg)`` is what ``distiller-nlp finetune-teacher`` runs. It uses the same engine as distillation
(plain cross-entropy, or MSE for regression tasks), writes the fine-tuned model with ``save_pretrained`` and
``metrics.json``, and is the step ``distill`` asks for when a teacher has no classifier for the task.
"""

from __future__ import annotations

import os

from torch import nn

from distiller_nlp.config import FinetuneConfig, dump_yaml
from distiller_nlp.core.losses import hard_ce_loss
from distiller_nlp.distill import model_inputs


class SupervisedModule(nn.Module):
    """Plain supervised training of a sequence classifier (CE on labels; MSE for regression)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def predict(self, batch):
        return self.model(**model_inputs(batch)).logits

    def forward(self, batch):
        loss = hard_ce_loss(self.predict(batch), batch["labels"])
        return {"loss": loss}


def finetune_teacher(cfg: FinetuneConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Fine-tune ``cfg.model`` on ``cfg.data.task``; returns (and writes) ``metrics.json``.

    The output directory receives the best model by the task's main dev metric (``save_pretrained``, safetensors,
    tokenizer), ``metrics.json`` (``eval_*`` of that model, ``test_*`` when the task has a labelled test split,
    ``train_runtime_s``, ``examples_per_s``), ``config.yaml`` and ``checkpoints/`` for ``--resume``.
    """
    from accelerate.utils import set_seed

    from distiller_nlp.core.engine import Engine
    from distiller_nlp.data import load_data_config, make_collator, tokenize_dataset
    from distiller_nlp.models import describe_model, load_backbone_for_finetune, load_tokenizer, resolve_model_path, save_student
    from distiller_nlp.runs import (check_output_dir, create_output_dir, is_main_process, eval_splits, promote_best,
                                    task_metric_fn, write_json_atomic)

    out_dir = cfg.output_dir
    check_output_dir(out_dir, resume=resume, overwrite=overwrite)
    set_seed(cfg.train.seed)
    d = cfg.data
    ds, task = load_data_config(d, seed=cfg.train.seed)
    path = resolve_model_path(cfg.model)
    model = load_backbone_for_finetune(path, task, trust_remote_code=cfg.trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    tok = tokenize_dataset(ds, tokenizer, max_length=cfg.train.max_length)
    evals = eval_splits(tok, task)
    collate = make_collator(tokenizer, is_regression=task.is_regression)

    create_output_dir(out_dir, overwrite=overwrite)
    if is_main_process():
        dump_yaml(cfg, os.path.join(out_dir, "config.yaml"))

    def export(mod, directory):
        # any registered model type may be fine-tuned (e.g. an autodistil_bert student); only distill's students
        # must load without this package
        save_student(mod.model, tokenizer, directory, require_builtin=False)

    engine = Engine(cfg.train, out_dir, SupervisedModule(model), tok["train"], collate, eval_datasets=evals,
                    compute_metrics=task_metric_fn(task), main_metric=task.main_metric, export_fn=export,
                    resume=resume, run_name="finetune")
    result = engine.train()
    metrics = dict(result.metrics)
    if engine.accelerator.is_main_process:
        metrics.update({f"model_{k}": v for k, v in describe_model(model, seq_len=cfg.train.max_length).items()})
        metrics["train_examples"] = len(tok["train"])
        promote_best(out_dir)
        write_json_atomic(os.path.join(out_dir, "history.json"), {"train": result.log_history, "eval": result.history})
        write_json_atomic(os.path.join(out_dir, "metrics.json"), metrics)
    engine.accelerator.wait_for_everyone()
    return metrics
