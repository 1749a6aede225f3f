"""Checkpoint layout: ``DIR/checkpoints/checkpoint-<step>`` holds accelerate's ``save_state``, ``manifest.json``
(size and SHA-256 of every file) and ``trainer_state.json``; a checkpoint is complete once that file exists (saves go
to a temp directory first, renamed when whole). :func:`verify_checkpoint` checks a checkpoint against its manifest
(a truncated or corrupt file is found at resume and the previous checkpoint is used)."""

from __future__ import annotations

import hashlib
import os
from typing import Optional

__all__ = ["STATE_FILE", "MANIFEST_FILE", "CHECKPOINT_PREFIX", "list_checkpoints", "untie", "write_manifest",
           "verify_checkpoint"]

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_PREFIX = "checkpoint-"


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first (temp dirs of an interrupted save skipped)."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(CHECKPOINT_PREFIX) and os.path.isfile(os.path.join(path, STATE_FILE)):
            try:
                found.append((int(name[len(CHECKPOINT_PREFIX):]), path))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def untie(state: dict) -> dict:
    """safetensors refuses tensors that share storage (tied embeddings): give each its own copy."""
    seen, out = set(), {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: str) -> list[str]:
    out = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel not in (STATE_FILE, MANIFEST_FILE):
                out.append(rel)
    return sorted(out)


def write_manifest(directory: str) -> dict:
    """Write ``directory/manifest.json``: ``{relative path: {"size": bytes, "sha256": hex}}`` of every file but the
    manifest and the state file (which marks completeness and is written last)."""
    from distiller_nlp.core.rundir import write_json_atomic

    manifest = {rel: {"size": os.path.getsize(os.path.join(directory, rel)),
                      "sha256": _sha256(os.path.join(directory, rel))} for rel in _files(directory)}
    write_json_atomic(os.path.join(directory, MANIFEST_FILE), manifest)
    return manifest


def verify_checkpoint(directory: str) -> Optional[str]:
    """None when the checkpoint matches its manifest (or predates manifests), else what is wrong, in a few words
    (``model.safetensors: 1204 bytes, manifest says 40960``)."""
    import json

    path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.isfile(path):
        return None  # written before manifests existed: nothing to check against
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        return f"unreadable {MANIFEST_FILE} ({exc})"
    for rel, want in sorted(manifest.items()):
        full = os.path.join(directory, rel)
        if not os.path.isfile(full):
            return f"{rel} is missing"
        size = os.path.getsize(full)
        if size != want["size"]:
            return f"{rel}: {size} bytes, manifest says {want['size']}"
        if _sha256(full) != want["sha256"]:
            return f"{rel}: SHA-256 differs from the manifest"
    return None
