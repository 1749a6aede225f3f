"""Several processes: the checks and helpers every command shares under ``accelerate launch`` / ``torchrun``.

* :func:`check_launch` — a launcher said ``WORLD_SIZE > 1`` but this process runs alone (a ``PartialState()`` made
  before the Accelerator, or a launch without ``--multi_gpu`` / ``--cpu``): a clear error, not two independent runs
  writing one directory.
* :func:`refuse_several_processes` — for commands that must run as one process (``hpo``).
* :func:`process_device` — this process's device (``cuda:<local rank>`` on GPUs), from the one process state.
* :func:`seed_process` — one seed for what must agree across ranks (model init, data order), and a per-rank stream
  for what must differ (dropout, MixUp, masking, augmentation sampling).
* :func:`finish_trackers` — close trackers without destroying the process group (``Accelerator.end_training`` does
  both, and every barrier after it then fails).
* :func:`params_checksum` / :func:`ranks_in_sync` — the end-of-run check that every rank holds the same weights.

Depends on torch and accelerate only.
"""

from __future__ import annotations

import os

import torch

from distiller_nlp.core.errors import DistillerError

__all__ = ["process_state", "launched_world_size", "check_launch", "refuse_several_processes", "process_device", "seed_process",
           "finish_trackers", "params_checksum", "ranks_in_sync", "sync_batchnorm", "sync_buffers",
           "all_reduce_mean"]


def process_state():
    """The process state (accelerate's ``PartialState``) once a command's Accelerator made it, else None — never
    created here, since a bare ``PartialState()`` fixes world size and device before the command's Accelerator."""
    from accelerate.state import PartialState

    return PartialState() if PartialState._shared_state else None


def launched_world_size() -> int:
    """Processes the launcher started (``WORLD_SIZE``; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def check_launch(num_processes: int) -> None:
    """Raise when the launcher started several processes but this one's accelerator state has only itself."""
    launched = launched_world_size()
    if launched > 1 and num_processes == 1:
        raise DistillerError(
            f"WORLD_SIZE={launched} but this process runs alone: on a machine without GPUs launch with "
            "`accelerate launch --multi_gpu --num_processes N ... --cpu` or `torchrun --nproc_per_node N ... --cpu`, "
            "and create no PartialState()/Accelerator before the command's own")


def refuse_several_processes(command: str, advice: str) -> None:
    """``command`` runs as one process: raise (naming ``advice``) under a multi-process launch."""
    n = launched_world_size()
    if n > 1:
        raise DistillerError(f"{command} runs as one process, not under a {n}-process launch: {advice}")


def process_device(cpu: bool = False) -> torch.device:
    """This process's device: that of the process state when an Accelerator exists, else ``cpu`` (``cpu=True`` or
    no GPU) or ``cuda:<LOCAL_RANK>`` — never a bare ``PartialState()``, which would fix the process state before the
    command's Accelerator."""
    state = process_state()
    if state is not None:
        return state.device
    if cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))


def seed_process(seed: int, per_rank: bool = True) -> None:
    """Seed Python, NumPy and torch. ``per_rank`` adds the process index (dropout, MixUp, masking and sampling
    differ between ranks, as they would between the examples of one large batch); model weights and data order are
    unaffected (DDP broadcasts rank 0's weights; loaders carry their own seeded generator)."""
    from accelerate.utils import set_seed

    set_seed(int(seed), device_specific=bool(per_rank))


def finish_trackers(accelerator) -> None:
    """Close the accelerator's trackers (main process); unlike ``end_training`` keep the process group.

    The closed trackers leave ``accelerator.trackers`` (a later ``log`` is a no-op, not a write to a closed run),
    and what :func:`~distiller_nlp.core.engine.precision.start_trackers` changed for them (MLflow's default store
    in the run directory) is undone, even when a tracker fails to close."""
    try:
        for tracker in accelerator.trackers:
            tracker.finish()
    finally:
        accelerator.trackers.clear()
        for undo in getattr(accelerator, "_distiller_tracker_cleanup", None) or []:
            undo()
        accelerator._distiller_tracker_cleanup = []


def params_checksum(module: torch.nn.Module) -> torch.Tensor:
    """A float64 checksum of every parameter and buffer (sum and sum of squares), on the module's device."""
    total = None
    for t in list(module.parameters()) + list(module.buffers()):
        if not t.is_floating_point():
            continue
        d = t.detach().double()
        part = torch.stack([d.sum(), (d * d).sum()])
        total = part if total is None else total + part
    return total if total is not None else torch.zeros(2, dtype=torch.float64)


def ranks_in_sync(accelerator, module: torch.nn.Module, rtol: float = 1e-9) -> bool:
    """True when every rank holds the same weights (checksums gathered from all ranks agree)."""
    if accelerator.num_processes == 1:
        return True
    local = params_checksum(module).to(accelerator.device)
    gathered = accelerator.gather(local.unsqueeze(0)).reshape(accelerator.num_processes, -1)
    ref = gathered[0]
    return bool(torch.all(torch.abs(gathered - ref) <= rtol * torch.clamp(torch.abs(ref), min=1.0)))


def sync_batchnorm(module: torch.nn.Module, accelerator) -> torch.nn.Module:
    """Several GPU processes: BatchNorm layers become ``SyncBatchNorm`` (statistics over the global batch, as in one
    process). Unchanged in one process, and on CPU, where torch's SyncBatchNorm does not run (gloo): each rank then
    normalises with its own batch's statistics and DDP broadcasts rank 0's running statistics."""
    if accelerator.num_processes > 1 and torch.device(accelerator.device).type == "cuda":
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def sync_buffers(accelerator, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics, EMD layer weights), as DDP does at the start of
    each training forward. Called before evaluation and at the end of training: a rank's last training forward
    updates its buffers from its own batch, and evaluation calls the unwrapped module (no DDP broadcast), so ranks
    would otherwise evaluate — and end — with different models. A collective: every rank calls it."""
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for buf in accelerator.unwrap_model(module).buffers():
        dist.broadcast(buf.data, src=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks (a new tensor; ``tensor`` itself in one process). A collective: every
    rank calls it the same number of times (e.g. once per training forward)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()
