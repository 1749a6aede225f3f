"""Unlabelled text for SuperLM training and task-agnostic search, tokenized as ``datasets`` columns."""

from __future__ import annotations

from distiller_nlp.core.errors import DistillerError

from .config import TextDataConfig

__all__ = ["load_texts", "tokenized_texts"]


def load_texts(cfg: TextDataConfig, split: str, limit: int = 0, seed: int = 42) -> list[str]:
    """Texts of ``split`` (``train`` or ``heldout`` = the task's validation split): a registered task through
    :func:`distiller_nlp.tasks.load_task_data` (offline: tweets, bbc-headlines), or a Hub corpus (online)."""
    if cfg.hub_dataset:
        import datasets

        hub_split = "train" if split == "train" else "validation"
        try:
            ds = datasets.load_dataset(cfg.hub_dataset, cfg.hub_config or None, split=hub_split)
        except Exception as exc:  # network, missing split or dataset
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DistillerError(f"cannot load Hub dataset '{cfg.hub_dataset}' split {hub_split}: {first}") from None
        column = cfg.text_column or "text"
        if column not in ds.column_names:
            raise DistillerError(f"Hub dataset '{cfg.hub_dataset}' has no column '{column}' "
                                 f"(columns: {', '.join(ds.column_names)}); pass --text-column")
        if limit and limit < len(ds):
            ds = ds.shuffle(seed=seed).select(range(limit))
        texts = [t for t in ds[column] if isinstance(t, str) and t.strip()]
    else:
        from distiller_nlp.tasks import load_task_data

        ds, spec = load_task_data(cfg.task, data_dir=cfg.data_dir or None, text_column=cfg.text_column or None,
                                  seed=seed)
        name = spec.train_split if split == "train" else spec.validation_split
        if name not in ds:
            raise DistillerError(f"task '{cfg.task}' has no '{name}' split for {split} text")
        part = ds[name]
        if limit and limit < len(part):
            part = part.shuffle(seed=seed).select(range(limit))
        texts = list(part["text"])
        if "text_pair" in part.column_names:
            texts = [a + " " + b for a, b in zip(texts, part["text_pair"])]
    if not texts:
        raise DistillerError(f"no {split} text found in '{cfg.hub_dataset or cfg.task}'")
    return texts


def tokenized_texts(texts: list[str], tokenizer, max_length: int):
    """A tokenized ``datasets.Dataset`` of ``texts`` (``input_ids``, ``attention_mask``, ...; no labels)."""
    import datasets

    from distiller_nlp.tasks import tokenize_dataset

    ds = datasets.Dataset.from_dict({"text": texts})
    return tokenize_dataset(ds, tokenizer, max_length)
