"""The environment ``distiller_nlp`` runs in: offline mode, where it caches, how quiet the libraries are.

- :func:`hub_offline` — the one test of whether the Hugging Face Hub may be contacted (models and datasets);
- :func:`cache_dir` — where built corpora, cached teacher outputs and meta-features are kept;
- :func:`quiet_libraries` — silence transformers' load reports and datasets' per-map progress bars (the CLIs call it
  unless ``--verbose``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["hub_offline", "cache_dir", "quiet_libraries"]


def _truthy(value) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline(datasets: bool = False) -> bool:
    """True if the Hub must not be contacted: ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (or huggingface_hub's own
    flag); for datasets (``datasets=True``) also ``HF_DATASETS_OFFLINE``."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    if datasets and _truthy(os.environ.get("HF_DATASETS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of transformers
        return False


def cache_dir() -> Path:
    """Where built corpora and cached teacher outputs live: ``$DISTILLER_NLP_CACHE`` or ``~/.cache/distiller_nlp``."""
    return Path(os.environ.get("DISTILLER_NLP_CACHE") or Path.home() / ".cache" / "distiller_nlp")


def quiet_libraries() -> None:
    """Silence transformers' load reports and datasets' progress bars of small maps (the training bar stays)."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
