"""Fit a masked-LM head: short continued masked-LM training of any encoder checkpoint (``distiller-nlp train-mlm``).

The ``contextual`` augmentation stage (:mod:`distiller_nlp.augment.contextual`) needs a ``*ForMaskedLM`` checkpoint.
The packaged MiniLM (``sentence-transformers/all-MiniLM-L6-v2``) ships its encoder only, so
``AutoModelForMaskedLM.from_pretrained`` gives it a newly initialised prediction head (for BERT the decoder is tied
to the word embeddings; the transform dense + LayerNorm and the output bias are new). :func:`train_mlm` trains the
whole model for a few hundred steps with the standard BERT masking (``DataCollatorForLanguageModeling``: 15 % of
tokens, of which 80 % ``[MASK]``, 10 % a random token, 10 % unchanged) on the training texts of a corpus, with the
shared :class:`~distiller_nlp.core.engine.Engine` (precision, checkpoints, ``--resume``, evaluation, best-model
export), and writes a ``from_pretrained``-loadable masked LM + tokenizer (safetensors) and ``metrics.json``.

Evaluation is the masked-LM loss (mean cross-entropy per masked token) and its perplexity ``exp(loss)`` on held-out
texts, masked once with a fixed seed so every evaluation (before training, during, after) scores the same masked
positions. ``metrics.json`` holds ``eval_loss_before`` / ``eval_perplexity_before`` (the checkpoint as loaded) and
``eval_loss`` / ``eval_perplexity`` (the exported model, the best by held-out loss).

The corpus is the training split of ``data`` (default the packaged tweets; any task, or a data dir with
``--task/--data-dir/--text-column`` like every other command; pair tasks contribute both sides), held-out texts from
its validation split; or ``corpus: FILE`` — a UTF-8 text file, one example per line, of which a seeded
``eval_fraction`` is held out.

Importing this module is light: torch, transformers and datasets load when training starts.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from distiller_nlp.config import DataConfig
from distiller_nlp.core.config import load_config, option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import TrainArgs
from distiller_nlp.tasks import model_inputs

logger = logging.getLogger(__name__)

__all__ = ["MLMConfig", "MLM_TRAIN_DEFAULTS", "load_mlm_config", "train_mlm", "evaluate_mlm", "load_mlm_corpus"]


#: Defaults of ``MLMConfig.train`` that differ from :class:`TrainArgs`' (short texts, a new head: a higher lr).
MLM_TRAIN_DEFAULTS = {"epochs": 1.0, "max_length": 64, "batch_size": 32, "lr": 1e-4, "group_by_length": True,
                      "warmup_ratio": 0.06}


def _mlm_train_args() -> TrainArgs:
    return TrainArgs(**MLM_TRAIN_DEFAULTS)


@dataclass
class MLMConfig:
    """``distiller-nlp train-mlm``: continued masked-LM training of an encoder (default the packaged MiniLM).

    ``model``: a directory, a Hub id or ``minilm`` (resolved like every other model argument).
    ``corpus``: ``""`` = the training texts of ``data`` (default task ``tweets``); or a text file, one example per
    line. ``eval_fraction``: the share of a text file's lines held out for evaluation (seeded by ``train.seed``).
    ``mlm_probability``: share of tokens selected for prediction. ``train``: engine settings (defaults here:
    64 tokens, batch 32, lr 1e-4, 1 epoch, length-grouped batches). ``resume``/``overwrite``: as the flags.
    """

    model: str = option("minilm", help="encoder checkpoint: directory, 'minilm' or Hub name", flag=True)
    output_dir: str = option("", help="run directory (must be empty unless --resume/--overwrite)", flag="output-dir")
    corpus: str = option("", flag=True,
                         help="text file, one example per line (default: the --task training texts, default tweets)")
    data: DataConfig = option(default_factory=DataConfig, help="the corpus as a task")
    eval_fraction: float = option(0.1, help="share of a --corpus file held out for evaluation", flag=True)
    mlm_probability: float = option(0.15, help="share of tokens masked", flag=True)
    train: TrainArgs = option(default_factory=_mlm_train_args, help="training settings (masked-LM defaults)")
    trust_remote_code: bool = option(False, help="allow custom model code from checkpoints (off by default)",
                                     flag=True)
    resume: bool = option(False, help="continue from the last checkpoint (the --resume flag)")
    overwrite: bool = option(False, help="replace a non-empty output directory (the --overwrite flag)")


def load_mlm_config(path: str | None = None, overrides: dict | None = None, sets: list | None = None) -> MLMConfig:
    """Load an :class:`MLMConfig` (:func:`~distiller_nlp.core.config.load_config`): the masked-LM defaults of
    ``train`` (:data:`MLM_TRAIN_DEFAULTS`) survive a file or flag that sets only some ``train`` keys."""
    return load_config(MLMConfig, path, overrides, sets)


# ------------------------------------------------------------------------------------------------ corpus

def load_mlm_corpus(cfg: MLMConfig) -> tuple[list[str], list[str]]:
    """``(train_texts, eval_texts)`` of ``cfg`` (see the module docstring); empty lines are dropped."""
    import numpy as np

    if cfg.corpus:
        path = os.path.expanduser(cfg.corpus)
        if os.path.isdir(path):
            raise DistillerError(
                f"corpus {path} is a directory: pass a data dir with --task NAME --data-dir DIR (and --text-column "
                "for custom files), or a text file with one example per line as --corpus"
            )
        if not os.path.isfile(path):
            raise DistillerError(f"corpus file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                lines = [line.strip() for line in fh]
        except UnicodeDecodeError as exc:
            raise DistillerError(f"corpus file {path} is not UTF-8 text: {exc.reason}") from None
        lines = [line for line in lines if line]
        if len(lines) < 2:
            raise DistillerError(f"corpus file {path} needs at least two non-empty lines (train + held-out)")
        if not 0.0 < cfg.eval_fraction < 1.0:
            raise DistillerError(f"eval_fraction must be in (0, 1), got {cfg.eval_fraction}")
        perm = np.random.default_rng(cfg.train.seed).permutation(len(lines))
        n_eval = min(len(lines) - 1, max(1, int(round(cfg.eval_fraction * len(lines)))))
        if cfg.data.max_eval_examples:
            n_eval = min(n_eval, int(cfg.data.max_eval_examples))
        held = set(perm[:n_eval].tolist())
        train = [t for i, t in enumerate(lines) if i not in held]
        evals = [lines[i] for i in sorted(held)]
        if cfg.data.max_train_examples:
            train = train[: int(cfg.data.max_train_examples)]
        return train, evals

    from distiller_nlp.tasks import load_data_config

    d = cfg.data
    ds, task = load_data_config(d, seed=cfg.train.seed)

    def texts(split) -> list[str]:
        out = list(split["text"])
        if "text_pair" in split.column_names:
            out += list(split["text_pair"])
        return [t for t in out if t and t.strip()]

    eval_name = task.validation_split if task.validation_split in ds else None
    if eval_name is None:
        raise DistillerError(f"task '{task.name}' has no validation split to hold out for masked-LM evaluation")
    return texts(ds[task.train_split]), texts(ds[eval_name])


# ------------------------------------------------------------------------------------------------ module

def _build_module(model):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class _MaskedLM(nn.Module):
        """Masked-LM step for the engine: ``forward`` → mean CE over masked tokens; ``predict`` → per-example
        ``[sum of masked-token NLL, number of masked tokens]`` (small, so the engine can gather it for any vocab).

        For architectures with a known head (BERT ``cls``, RoBERTa ``lm_head``) the vocabulary projection runs on
        the masked positions only (about 15 % of the tokens): for MiniLM-L6 the projection to 30,522 words costs as
        much as the whole encoder per token, so this roughly halves a step.
        """

        def __init__(self, mlm):
            super().__init__()
            self.model = mlm

        def _selected_logits(self, batch):
            labels = batch["mlm_labels"]
            inputs = model_inputs(batch)
            sel = labels != -100
            from distiller_nlp.models import mlm_prediction_head

            head = mlm_prediction_head(self.model)
            if head is not None:
                base = getattr(self.model, self.model.base_model_prefix)
                hidden = base(**inputs).last_hidden_state
                logits = head(hidden[sel])
            else:
                logits = self.model(**inputs).logits[sel]
            return logits, labels[sel], sel

        def forward(self, batch):
            logits, targets, _ = self._selected_logits(batch)
            if targets.numel() == 0:
                return {"loss": logits.sum() * 0.0}
            return {"loss": F.cross_entropy(logits.float(), targets)}

        def predict(self, batch):
            logits, targets, sel = self._selected_logits(batch)
            nll = F.cross_entropy(logits.float(), targets, reduction="none")
            rows = sel.nonzero()[:, 0]
            n = sel.shape[0]
            sums = torch.zeros(n, device=nll.device).index_add_(0, rows, nll)
            counts = sel.sum(1).float()
            return torch.stack([sums, counts], dim=1)

    return _MaskedLM(model)


def _mlm_metrics(preds, refs) -> dict:
    total, count = float(preds[:, 0].sum()), float(preds[:, 1].sum())
    if count == 0:
        raise DistillerError("the held-out set has no masked tokens: use more evaluation texts")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "masked_tokens": count}


def _make_collate(tokenizer):
    """Pad a batch (``input_ids``, ``attention_mask``, [``token_type_ids``], and ``mlm_labels`` of pre-masked
    held-out features); every batch carries ``labels`` = zeros of the batch size (the engine counts examples with
    it). Training batches are masked later, in :func:`_make_masker`."""
    import torch

    pads = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "mlm_labels": -100}

    def collate(features):
        longest = max(len(f["input_ids"]) for f in features)
        batch = {}
        for k, pad in pads.items():
            if k in features[0]:
                batch[k] = torch.tensor([list(f[k]) + [pad] * (longest - len(f[k])) for f in features],
                                        dtype=torch.long)
        batch["labels"] = torch.zeros(len(features), dtype=torch.long)
        return batch

    return collate


def _make_masker(tokenizer, mlm_probability: float):
    """The engine's ``prepare_batch`` for training batches: BERT masking (``mlm_probability`` of the non-special
    tokens; 80 % ``[MASK]``, 10 % a random token, 10 % kept) into ``input_ids`` and ``mlm_labels``.

    The draws are those of ``DataCollatorForLanguageModeling.torch_mask_tokens`` (same order, so on CPU the same
    masks), made with torch ops on the batch's own device: no GPU -> CPU -> GPU round trip per step.

    Masking here, inside the training step, rather than in the collate function matters for ``--resume``: the
    global torch RNG it draws from is checkpointed with the step, whereas accelerate's data loader collates one
    batch ahead (before the checkpoint's RNG snapshot), so collate-time masks would differ after a resume."""
    import torch

    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    mask_id = int(tokenizer.mask_token_id)
    vocab = len(tokenizer)
    cached = {}

    def prepare(batch):
        if "mlm_labels" in batch:
            return batch
        ids = batch["input_ids"]
        dev = ids.device
        if dev not in cached:
            cached[dev] = special.to(dev)
        prob = torch.full(ids.shape, float(mlm_probability), device=dev)
        prob.masked_fill_(torch.isin(ids, cached[dev]), 0.0)
        masked = torch.bernoulli(prob).bool()
        labels = ids.masked_fill(~masked, -100)
        replaced = torch.bernoulli(torch.full(ids.shape, 0.8, device=dev)).bool() & masked
        out_ids = ids.masked_fill(replaced, mask_id)
        randomized = torch.bernoulli(torch.full(ids.shape, 0.5, device=dev)).bool() & masked & ~replaced
        words = torch.randint(vocab, ids.shape, dtype=torch.long, device=dev)
        out = dict(batch)
        out["input_ids"] = torch.where(randomized, words, out_ids)
        out["mlm_labels"] = labels
        return out

    return prepare


def _premask(tok_ds, tokenizer, mlm_probability: float, seed: int):
    """Mask held-out examples once, with a fixed seed (each example on its own), into columns ``input_ids`` and
    ``mlm_labels``: every evaluation then scores the same positions."""
    from transformers import DataCollatorForLanguageModeling

    coll = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=int(seed))
    ids, labels = [], []
    for f in tok_ds:
        out = coll([model_inputs(f)])
        ids.append(out["input_ids"][0].tolist())
        labels.append(out["labels"][0].tolist())
    return tok_ds.remove_columns("input_ids").add_column("input_ids", ids).add_column("mlm_labels", labels)


def _load_masked_lm(path: str, trust_remote_code: bool):
    from transformers import AutoModelForMaskedLM

    from distiller_nlp.models.load import info_keys, quiet_transformers

    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True,
                                                               trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DistillerError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistillerError(f"cannot load '{path}' as a masked language model: {first}") from exc
    new = info_keys(info, "missing_keys") + info_keys(info, "mismatched_keys")
    if new:
        logger.info("%s has no (complete) masked-LM head: newly initialised %s", path, ", ".join(new))
    return model, new


def evaluate_mlm(model, tokenizer, texts, max_length: int = 64, mlm_probability: float = 0.15, seed: int = 0,
                 batch_size: int = 64, precision: str = "auto", cpu: bool = False) -> dict:
    """Masked-LM ``loss`` (mean cross-entropy per masked token) and ``perplexity`` of ``model`` (a ``*ForMaskedLM``
    or a directory / name of one) on ``texts``, masked once with ``seed`` exactly as :func:`train_mlm` masks its
    held-out texts (so the numbers are comparable). Runs through the engine's ``evaluate_module`` with
    ``precision`` (``auto|no|bf16|fp16``, decided per device like training) on this process's device."""
    import datasets

    from distiller_nlp.core.engine import evaluate_module
    from distiller_nlp.core.train_args import TrainArgs
    from distiller_nlp.tasks import tokenize_dataset

    if isinstance(model, (str, os.PathLike)):
        from distiller_nlp.models import resolve_model_path

        model, _ = _load_masked_lm(resolve_model_path(model), trust_remote_code=False)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DistillerError("evaluate_mlm needs at least one non-empty text")
    tok = tokenize_dataset(datasets.Dataset.from_dict({"text": list(texts)}), tokenizer, max_length)
    tok = _premask(tok, tokenizer, mlm_probability, seed)
    args = TrainArgs(eval_batch_size=batch_size, precision=precision, cpu=cpu, report_to="none",
                     max_length=max_length)
    out = evaluate_module(_build_module(model), {"eval": tok}, _make_collate(tokenizer), _mlm_metrics, args)
    return {"loss": out["eval_loss"], "perplexity": out["eval_perplexity"], "masked_tokens": out["eval_masked_tokens"]}


# ------------------------------------------------------------------------------------------------ training

def train_mlm(cfg: MLMConfig, resume: bool | None = None, overwrite: bool | None = None) -> dict:
    """Continue masked-LM training of ``cfg.model`` on a corpus; write a masked LM to ``cfg.output_dir``.

    Returns (and writes) ``metrics.json``: ``eval_loss_before`` / ``eval_perplexity_before`` (held-out, the
    checkpoint as loaded, with its newly initialised head if it had none), ``eval_loss`` / ``eval_perplexity`` (the
    exported model: the best held-out loss among the evaluations), ``eval_masked_tokens``, ``train_runtime_s``,
    ``examples_per_s``, ``global_step``, ``new_head_weights`` (names of weights that were newly initialised),
    ``train_examples``, ``eval_examples``. The output directory then holds ``model.safetensors``, ``config.json``
    and the tokenizer (``AutoModelForMaskedLM.from_pretrained(DIR)`` loads it), ``config.yaml``, ``history.json``
    and ``checkpoints/`` for ``resume``. ``resume``/``overwrite`` default to ``cfg.resume``/``cfg.overwrite``.
    """
    import datasets
    from accelerate.utils import set_seed

    from distiller_nlp.core.engine import Engine
    from distiller_nlp.core.run import TrainingRun
    from distiller_nlp.core.rundir import read_json, write_json_atomic
    from distiller_nlp.models import load_tokenizer, resolve_model_path, save_student
    from distiller_nlp.tasks import tokenize_dataset

    resume = cfg.resume if resume is None else bool(resume)
    overwrite = cfg.overwrite if overwrite is None else bool(overwrite)
    out = TrainingRun(cfg.output_dir, resume=resume, overwrite=overwrite)
    cfg.train.validate("train-mlm config")
    if not 0.0 < cfg.mlm_probability < 1.0:
        raise DistillerError(f"mlm_probability must be in (0, 1), got {cfg.mlm_probability}")
    set_seed(cfg.train.seed)

    train_texts, eval_texts = load_mlm_corpus(cfg)
    if not train_texts or not eval_texts:
        raise DistillerError("the masked-LM corpus needs training and held-out texts")
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.mask_token is None:
        raise DistillerError(f"the tokenizer of '{path}' has no mask token: it cannot be trained as a masked LM")
    model, new_keys = _load_masked_lm(path, cfg.trust_remote_code)

    tok_train = tokenize_dataset(datasets.Dataset.from_dict({"text": train_texts}), tokenizer, cfg.train.max_length)
    tok_eval = tokenize_dataset(datasets.Dataset.from_dict({"text": eval_texts}), tokenizer, cfg.train.max_length)
    tok_eval = _premask(tok_eval, tokenizer, cfg.mlm_probability, cfg.train.seed)
    collate = _make_collate(tokenizer)
    out.start(cfg)

    def export(mod, directory):
        save_student(mod.model, tokenizer, directory, require_builtin=False)

    engine = Engine(cfg.train, out.output_dir, _build_module(model), tok_train, collate,
                    eval_datasets={"validation": tok_eval}, compute_metrics=_mlm_metrics, main_metric="loss",
                    greater_is_better=False, prepare_batch=_make_masker(tokenizer, cfg.mlm_probability),
                    export_fn=export, resume=out.resume, run_name="train_mlm")
    before_path = out.path("eval_before.json")
    before = read_json(before_path) if out.resume else None
    if before is None:
        before = engine.evaluate()
        if engine.accelerator.is_main_process:
            write_json_atomic(before_path, before)
    logger.info("held-out masked-LM loss before training %.4f (perplexity %.2f)", before["eval_loss"],
                before["eval_perplexity"])
    result = engine.train()

    def card(metrics: dict) -> None:
        from distiller_nlp.core.card import CardInfo
        from distiller_nlp.models import describe_model, epochs_text, model_source, size_rows, write_card

        src, tr = model_source(cfg.model, path), cfg.train
        write_card(out.output_dir, CardInfo(
            title=os.path.basename(os.path.abspath(cfg.output_dir)) or "mlm",
            summary=(f"`{src['id']}` with continued masked-LM training with distiller-toolkit (an augmenter for the "
                     f"`contextual` augmentation stage). Held-out perplexity {metrics['eval_perplexity_before']:.2f} "
                     f"→ {metrics['eval_perplexity']:.2f}."),
            base_model=src["id"], license=src.get("license"), task_type="fill-mask", tags=["fill-mask", "mlm"],
            model_rows=[(q, v, "–") for q, v, _ in size_rows(describe_model(model, seq_len=128))],
            pipeline={"objective": f"masked-LM cross-entropy, {cfg.mlm_probability:.0%} of the tokens masked",
                      "optimisation": epochs_text(tr) + f", peak lr {tr.lr:g}, batch {tr.batch_size}, max length "
                                                        f"{tr.max_length}, seed {tr.seed}"},
            data={"training texts": f"{len(tok_train):,}", "held-out texts": f"{len(tok_eval):,}"},
            metrics=metrics, load_snippet="from transformers import pipeline\n"
                                          "print(pipeline(\"fill-mask\", model=\"PATH\")(\"the movie was [MASK].\"))"))

    return out.finish(engine, result, on_finish=[card], extra={
        "eval_loss_before": before["eval_loss"], "eval_perplexity_before": before["eval_perplexity"],
        "new_head_weights": new_keys, "train_examples": len(tok_train), "eval_examples": len(tok_eval),
        "mlm_probability": cfg.mlm_probability})
