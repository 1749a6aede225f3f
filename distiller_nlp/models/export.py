"""Saving a student as a plain Hugging Face checkpoint, atomically; it loads with
``AutoModelForSequenceClassification.from_pretrained(dir)`` and nothing of ours installed."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from transformers import PreTrainedModel

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.models.load import quiet_transformers

logger = logging.getLogger(__name__)

def save_student(model: PreTrainedModel, tokenizer: Any, out_dir: Any, require_builtin: bool = True) -> str:
    """Save ``model`` (safetensors) and ``tokenizer`` to ``out_dir`` atomically; return ``out_dir``.

    Everything is written to a temporary directory next to ``out_dir`` first; then the directory is renamed into
    place (``out_dir`` absent) or each file is moved in with ``os.replace`` (``out_dir`` exists; other files there
    are kept). With ``require_builtin`` the model's ``model_type`` must be one transformers ships and the config
    must not need remote code, so the result loads with plain
    ``AutoModelForSequenceClassification.from_pretrained(out_dir)`` without this package.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    config = model.config
    if require_builtin:
        if config.model_type not in CONFIG_MAPPING_NAMES or getattr(config, "auto_map", None):
            raise DistillerError(
                f"model type '{config.model_type}' is not built into transformers: the saved student would not load "
                "without custom code"
            )
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DistillerError(f"output path {out_dir} exists and is not a directory")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any other directory
    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for entry in os.listdir(tmp):  # some writers make private temp files; give them the usual permissions
            path = os.path.join(tmp, entry)
            if os.path.isfile(path):
                os.chmod(path, 0o666 & ~umask)
        if not os.path.exists(out_dir):
            os.replace(tmp, out_dir)
            return out_dir
        for entry in sorted(os.listdir(tmp)):
            src, dst = os.path.join(tmp, entry), os.path.join(out_dir, entry)
            if os.path.isdir(dst) and not os.path.islink(dst):
                shutil.rmtree(dst)
            os.replace(src, dst)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir

