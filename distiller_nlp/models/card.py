"""Model cards of the NLP commands (``distill``, each ``run`` stage, ``finetune-teacher``, ``train-mlm``, AutoDistil
``extract``): what each knows about its model, as a :class:`~distiller_nlp.core.card.CardInfo`."""

from __future__ import annotations

from typing import Any, Optional

from distiller_nlp.core.card import CardInfo, teacher_card_facts, write_model_card

__all__ = ["model_source", "size_rows", "write_card", "task_card_fields", "load_snippet", "epochs_text", "CardInfo"]


def epochs_text(train) -> str:
    """``3 epochs`` / ``1 epoch`` / ``500 steps`` / ``auto length (...)`` of a TrainArgs."""
    if train.max_steps > 0:
        return f"{train.max_steps} steps"
    if train.epochs == 0:
        return (f"auto length ({train.planned_epochs:g} epochs, at least {train.min_steps} steps, early stopping "
                f"after {train.patience} evaluations)")
    return f"{train.epochs:g} epoch" + ("" if train.epochs == 1 else "s")

PACKAGED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_LICENSE = "apache-2.0"


def model_source(name: str, resolved: Optional[str] = None) -> dict:
    """How a card names a model the user gave as ``name``: ``{"id", "license", "base"}`` — the Hub id for a Hub name
    or the packaged MiniLM alias, else the name as typed (a local directory); ``license`` and ``base`` (its own
    base model) from that directory's card when it has one."""
    from distiller_nlp.models.resolve import is_packaged_alias

    name = str(name)
    if is_packaged_alias(name):
        return {"id": PACKAGED_HUB_ID, "license": _PACKAGED_LICENSE, "base": None}
    facts = teacher_card_facts(resolved or name)
    return {"id": name, "license": facts.get("license"), "base": facts.get("base_model")}


def _fmt_int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else ("–" if v is None else str(v))


def size_rows(model: dict, teacher: Optional[dict] = None) -> list:
    """(quantity, this model, teacher) rows from two :func:`~distiller_nlp.models.describe_model` dicts."""
    t = teacher or {}
    rows = [(q, _fmt_int(model.get(k)), _fmt_int(t.get(k)) if t else "–")
            for q, k in (("model type", "model_type"), ("layers", "layers"), ("hidden size", "hidden"),
                         ("attention heads", "heads"), ("FFN size", "intermediate"))]
    p, tp = model.get("params"), t.get("params")
    rows.append(("parameters", f"{p / 1e6:.2f} M" if p else "–", f"{tp / 1e6:.2f} M" if tp else "–"))
    f, tf = model.get("encoder_flops"), t.get("encoder_flops")
    seq = model.get("seq_len", 128)
    rows.append((f"encoder GFLOPs / sequence of {seq} tokens (2 × multiply-adds)", f"{f / 1e9:.3f}" if f else "–",
                 f"{tf / 1e9:.3f}" if tf else "–"))
    if p and tp and f and tf:
        rows.append(("this model / teacher", f"{p / tp:.3f} of the parameters", f"{f / tf:.3f} of the FLOPs"))
    return rows


def task_card_fields(task) -> dict:
    """``datasets``, ``dataset_name``, ``task_type`` of a task spec."""
    hub = getattr(task, "hub_path", None)
    return {"datasets": [hub] if hub else [task.name], "dataset_name": task.name,
            "dataset_config": getattr(task, "hub_name", None) if hub else None,
            "task_type": "text-classification"}


def load_snippet(kind: str = "AutoModelForSequenceClassification") -> str:
    return ("# PATH: this directory, or its Hub repository id once pushed\n"
            f"from transformers import AutoTokenizer, {kind}\n"
            "tok = AutoTokenizer.from_pretrained(\"PATH\")\n"
            f"model = {kind}.from_pretrained(\"PATH\")\n"
            "print(model(**tok(\"an example\", return_tensors=\"pt\")).logits)")


def write_card(directory: str, info: CardInfo) -> str:
    """Write the card (main process only: the caller's responsibility) and return its path."""
    return write_model_card(directory, info)
