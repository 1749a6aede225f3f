"""Checkpoint layout: ``DIR/checkpoints/checkpoint-<step>`` holds accelerate's ``save_state`` plus
``trainer_state.json``; a checkpoint is complete once that file exists (saves go to a temp directory first)."""

from __future__ import annotations

import os

__all__ = ["STATE_FILE", "CHECKPOINT_PREFIX", "list_checkpoints", "untie"]

STATE_FILE = "trainer_state.json"
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
