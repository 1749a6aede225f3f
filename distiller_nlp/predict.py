"""Evaluate a saved model on a task, or write its predictions for a split.

``evaluate_model`` backs ``distiller-nlp evaluate`` and ``predict_split`` backs ``distiller-nlp predict``. Any
``AutoModelForSequenceClassification`` checkpoint works (a fine-tuned teacher, a distilled student, a Hub model);
its classifier must match the task's labels.
"""

from __future__ import annotations

import csv
import os
from typing import Optional

import numpy as np
from torch import nn

from distiller_nlp.config import DataConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import TrainArgs
from distiller_nlp.tasks import model_inputs


class _Predictor(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def predict(self, batch):
        return self.model(**model_inputs(batch)).logits


def _load(model_path: str, data: DataConfig, train: TrainArgs, trust_remote_code: bool):
    from distiller_nlp.models import load_teacher_for_task, load_tokenizer, resolve_model_path
    from distiller_nlp.tasks import load_task_data, make_collator, tokenize_dataset

    ds, task = load_task_data(data.task, data_dir=data.data_dir or None, text_column=data.text_column or None,
                              text_pair_column=data.text_pair_column or None, label_column=data.label_column or None,
                              max_train_examples=data.max_train_examples or None,
                              max_eval_examples=data.max_eval_examples or None, seed=train.seed)
    path = resolve_model_path(model_path)
    model = load_teacher_for_task(path, task, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    tok = tokenize_dataset(ds, tokenizer, max_length=train.max_length)
    collate = make_collator(tokenizer, is_regression=task.is_regression)
    return ds, tok, task, model, collate


def evaluate_model(model_path: str, data: DataConfig, train: Optional[TrainArgs] = None,
                   output_dir: Optional[str] = None, splits: Optional[list] = None, overwrite: bool = False,
                   trust_remote_code: bool = False) -> dict:
    """Evaluate ``model_path`` on the task's validation split(s) (and labelled test split); write ``metrics.json``.

    Keys: ``eval_<metric>`` for the first split, ``<split>_<metric>`` for the others, ``eval_runtime_s``.
    """
    from distiller_nlp.core.engine import evaluate_module, make_accelerator
    from distiller_nlp.core.rundir import check_output_dir, create_output_dir, write_json_atomic
    from distiller_nlp.models import describe_model
    from distiller_nlp.tasks import eval_splits, task_metric_fn

    train = train or TrainArgs()
    if output_dir:
        check_output_dir(output_dir, overwrite=overwrite)
    _, tok, task, model, collate = _load(model_path, data, train, trust_remote_code)
    evals = eval_splits(tok, task)
    if splits:
        missing = [s for s in splits if s not in tok]
        if missing:
            raise DistillerError(f"split '{missing[0]}' not in task '{task.name}' (has: {', '.join(tok)})")
        evals = {s: tok[s] for s in splits}
    acc = make_accelerator(train)
    metrics = evaluate_module(_Predictor(model), evals, collate, task_metric_fn(task), train, accelerator=acc)
    metrics.update({f"model_{k}": v for k, v in describe_model(model, seq_len=train.max_length).items()})
    if output_dir and acc.is_main_process:
        create_output_dir(output_dir, overwrite=overwrite)
        write_json_atomic(os.path.join(output_dir, "metrics.json"), metrics)
    return metrics


def _split_logits(model_path: str, data: DataConfig, splits: list, train: TrainArgs,
                  trust_remote_code: bool = False) -> dict:
    """``({split: (task, logits)}, accelerator)`` of a saved model on each of ``splits`` (in file order), on this
    process's device. Under several processes each rank predicts its shard and every rank gets all logits, each
    example once (``gather_for_metrics``); callers write files on ``accelerator.is_main_process`` only."""
    from torch.utils.data import DataLoader

    from distiller_nlp.core.engine import make_accelerator, predict_loader
    from distiller_nlp.core.engine.samplers import loader_kwargs

    _, tok, task, model, collate = _load(model_path, data, train, trust_remote_code)
    for split in splits:
        if split not in tok:
            raise DistillerError(f"split '{split}' not in task '{task.name}' (has: {', '.join(tok)})")
    acc = make_accelerator(train)
    predictor = _Predictor(model).to(acc.device).eval()
    out = {}
    for split in splits:
        loader = acc.prepare(DataLoader(tok[split], batch_size=train.eval_batch_size, shuffle=False,
                                        collate_fn=collate, **loader_kwargs(train)))
        logits, _ = predict_loader(acc, predictor, loader, desc=f"predict {split}")
        out[split] = (task, logits if len(logits) else np.zeros((0, max(1, task.num_labels))))
    return out, acc


# GLUE benchmark submission files: task -> {test split: file name}; label format per task (ids or names)
GLUE_FILES = {"cola": {"test": "CoLA.tsv"}, "sst2": {"test": "SST-2.tsv"}, "mrpc": {"test": "MRPC.tsv"},
              "stsb": {"test": "STS-B.tsv"}, "qqp": {"test": "QQP.tsv"},
              "mnli": {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
              "qnli": {"test": "QNLI.tsv"}, "rte": {"test": "RTE.tsv"}, "wnli": {"test": "WNLI.tsv"}}
GLUE_LABEL_NAMES = ("mnli", "qnli", "rte")  # the GLUE server reads these by name, the others as ids


def glue_submission(model_path: str, data: DataConfig, output_dir: str, train: Optional[TrainArgs] = None,
                    trust_remote_code: bool = False) -> dict:
    """Write GLUE-format test predictions (``index\tprediction``; ``CoLA.tsv``, ``MNLI-m.tsv``, ...) of a saved
    model for every test split of the task present in the data; returns ``{split: path}`` (empty when the data has
    no test split). Label names for MNLI/QNLI/RTE, ids for the other classification tasks, scores clipped to [0, 5]
    for STS-B; other tasks get ``<task>.tsv`` with label names."""
    import dataclasses

    from distiller_nlp.tasks import get_task, load_task_data

    train = train or TrainArgs()
    data = dataclasses.replace(data, max_train_examples=0, max_eval_examples=0)  # a submission needs every test row
    spec = get_task(data.task)
    ds, _ = load_task_data(data.task, data_dir=data.data_dir or None, text_column=data.text_column or None,
                           text_pair_column=data.text_pair_column or None, label_column=data.label_column or None)
    files = GLUE_FILES.get(spec.name, {s: f"{spec.name}.tsv" if len(spec.test_splits) == 1 else f"{spec.name}-{s}.tsv"
                                       for s in spec.test_splits})
    splits = [s for s in files if s in ds and len(ds[s]) > 0]
    if not splits:
        return {}
    written = {}
    predicted, acc = _split_logits(model_path, data, splits, train, trust_remote_code)
    if not acc.is_main_process:  # the main process writes the files
        acc.wait_for_everyone()
        return {split: os.path.join(output_dir, files[split]) for split in predicted}
    os.makedirs(output_dir, exist_ok=True)
    for split, (task, logits) in predicted.items():
        path = os.path.join(output_dir, files[split])
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t")
            w.writerow(["index", "prediction"])
            if task.is_regression:
                for i, v in enumerate(logits.reshape(-1)):
                    w.writerow([i, f"{min(5.0, max(0.0, float(v))) if task.name == 'stsb' else float(v):.3f}"])
            else:
                by_name = task.name in GLUE_LABEL_NAMES or task.name not in GLUE_FILES
                for i, k in enumerate(logits.argmax(-1)):
                    w.writerow([i, task.label_names[int(k)] if by_name else int(k)])
        os.replace(tmp, path)
        written[split] = path
    acc.wait_for_everyone()
    return written


def predict_split(model_path: str, data: DataConfig, output_file: str, split: str = "test",
                  train: Optional[TrainArgs] = None, trust_remote_code: bool = False) -> int:
    """Write one prediction per example of ``split`` to a TSV (index, prediction, probabilities); returns the count.

    Labels are written by name for classification tasks (GLUE submission style) and as values for regression.
    """
    import torch

    train = train or TrainArgs()
    if os.path.exists(output_file):
        raise DistillerError(f"output file {output_file} already exists")
    parent = os.path.dirname(os.path.abspath(output_file))
    if not os.path.isdir(parent):
        raise DistillerError(f"directory of output file {output_file} does not exist")
    predicted, acc = _split_logits(model_path, data, [split], train, trust_remote_code)
    task, logits = predicted[split]
    if not acc.is_main_process:  # every rank holds all predictions; the main process writes them
        acc.wait_for_everyone()
        return len(logits)
    tmp = f"{output_file}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        if task.is_regression:
            w.writerow(["index", "prediction"])
            for i, v in enumerate(logits.reshape(-1)):
                w.writerow([i, f"{float(v):.6f}"])
        else:
            probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
            names = task.label_names
            w.writerow(["index", "prediction"] + [f"p_{n}" for n in names])
            for i, p in enumerate(probs):
                w.writerow([i, names[int(p.argmax())]] + [f"{x:.6f}" for x in p])
    os.replace(tmp, output_file)
    acc.wait_for_everyone()
    return len(logits)
