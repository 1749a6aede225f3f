"""Precision and the one Accelerator of a process: ``auto | no | bf16 | fp16``, ``auto`` decided per device.

``auto``:

* a CUDA GPU that runs bf16 natively (compute capability >= 8.0: A100, H100, RTX 30xx/40xx): **bf16** autocast;
* an older CUDA GPU (V100 = sm70, T4 = sm75): **fp16** autocast with dynamic loss scaling (accelerate's GradScaler);
  ``torch.cuda.is_bf16_supported()`` alone says yes there too, by emulation, so it is asked with
  ``including_emulation=False`` and the capability decides;
* a CPU: **by measurement** (:mod:`.precision_probe`): without AMX or AVX-512 bf16 instructions fp32 at once (an
  AVX2-only CPU runs bf16 matmuls hundreds of times slower); with them, a ~0.3 s probe of the run's own linear and
  attention shapes in fp32 and bf16 autocast, bf16 only when it is >= 5 % faster, the verdict cached per machine and
  shape class (ratios in ``benchmarks/results/bench_kd_step.md``). Under several processes rank 0 probes and every
  rank takes its verdict.

Every command of a process shares one ``AcceleratorState`` (accelerate keeps it in a singleton). A later command that
asks for another precision (``run RECIPE``: a teacher stage in ``auto`` then a student stage with ``--precision no``)
gets a fresh ``AcceleratorState`` on the same process group instead of accelerate's "already initialized" error; asking
for ``--cpu`` in a process whose state already sits on a GPU is an error that says so.

Trackers: ``report_to`` (``tensorboard,mlflow``, ``all``, ``none``; see
:func:`distiller_nlp.core.train_args.parse_report_to`) becomes accelerate's ``log_with``; TensorBoard writes to
``DIR/<run name>/`` (accelerate's ``logging_dir`` = the run directory). :func:`start_trackers` opens them with the
run's config as flat parameters; MLflow, when ``MLFLOW_TRACKING_URI`` is not set, logs to a local SQLite store in the
run directory (:func:`mlflow_default_uri`: ``sqlite:///DIR/mlflow.db``, artifacts in ``DIR/mlartifacts``), never to
the current directory; the previous state is restored when the trackers finish.

Depends on torch and accelerate only (and PyYAML to read the run's config).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any, Optional

import torch

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import parse_report_to

__all__ = ["bf16_is_fast", "gpu_precision", "resolve_precision", "make_accelerator", "start_trackers",
           "flatten_config", "mlflow_default_uri"]

logger = logging.getLogger(__name__)

_BF16_FAST_CACHE: dict = {}


def gpu_precision(device_index: Optional[int] = None) -> str:
    """``bf16`` on a CUDA GPU with native bf16 (compute capability >= 8.0), ``fp16`` below that."""
    major, _minor = torch.cuda.get_device_capability(device_index)
    native = major >= 8
    try:
        native = native and bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch without the keyword
        pass
    return "bf16" if native else "fp16"


def bf16_is_fast(on_gpu: Optional[bool] = None) -> bool:
    """True where bf16 kernels exist: a CUDA GPU with native bf16 (sm80+), or a CPU with AMX tiles or AVX-512 bf16
    (whether they are faster for a run's shapes is what ``auto``'s probe measures).

    ``on_gpu=None`` means "a GPU if one is available"."""
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    if on_gpu:
        return gpu_precision() == "bf16"
    if "cpu" not in _BF16_FAST_CACHE:
        fast = False
        for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            probe = getattr(torch.cpu, name, None)
            fast = fast or (bool(probe()) if probe is not None else False)
        _BF16_FAST_CACHE["cpu"] = fast
    return _BF16_FAST_CACHE["cpu"]


def resolve_precision(precision: str, cpu: bool = False, shapes=None, broadcast=None, is_main: bool = True) -> str:
    """Map ``auto|no|bf16|fp16`` to what accelerate understands (``no``/``bf16``/``fp16``), logging the choice.

    ``shapes``: the run's :class:`~distiller_nlp.core.engine.precision_probe.ProbeShapes` for ``auto`` on a CPU (the
    generic probe when None); ``broadcast`` / ``is_main``: see :func:`~distiller_nlp.core.engine.precision_probe.
    decide`."""
    on_gpu = torch.cuda.is_available() and not cpu
    if precision == "auto":
        if on_gpu:
            chosen = gpu_precision()
            logger.info("precision auto: %s autocast on this GPU (compute capability %s)", chosen,
                        ".".join(map(str, torch.cuda.get_device_capability())))
            return chosen
        from distiller_nlp.core.engine.precision_probe import decide

        return decide(shapes, broadcast=broadcast, is_main=is_main)
    if precision not in ("no", "bf16", "fp16"):
        raise DistillerError(f"unknown precision '{precision}' (use auto, no, bf16 or fp16)")
    if precision == "fp16" and not on_gpu:
        raise DistillerError("precision fp16 needs a CUDA GPU; use --precision bf16 or --precision no on CPU")
    if precision == "bf16" and not bf16_is_fast(on_gpu):
        logger.warning("precision bf16: this %s has no fast bf16 kernels; bf16 may run far slower than fp32 here "
                       "(--precision auto picks the fast one).", "GPU" if on_gpu else "CPU")
    return precision


def _fit_accelerator_state(mixed: str, cpu: bool) -> None:
    """Let a new Accelerator of this process use ``mixed`` precision: keep the process group (``PartialState``),
    reset the precision state when an earlier command chose another one."""
    from accelerate.state import AcceleratorState, PartialState

    if PartialState._shared_state and cpu and PartialState().device.type != "cpu":
        raise DistillerError(f"this process already runs on {PartialState().device}; --cpu cannot change within one "
                             "process (start a new one)")
    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)


def _auto_on_cpu(args, cpu: bool, shapes):
    """``auto`` on a CPU: rank 0's probe verdict for every rank (a launcher's ``WORLD_SIZE`` > 1 starts the process
    group here, with the same ``cpu`` setting the Accelerator gets next)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return resolve_precision(args.precision, cpu=cpu, shapes=shapes)
    from accelerate.state import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        return resolve_precision(args.precision, cpu=cpu, shapes=shapes)

    def broadcast(entry):
        box = [entry]
        broadcast_object_list(box, from_process=0)
        return box[0]

    return resolve_precision(args.precision, cpu=cpu, shapes=shapes, broadcast=broadcast,
                             is_main=state.is_main_process)


def make_accelerator(args, output_dir: Optional[str] = None, tracking: bool = False, find_unused: bool = False,
                     probe_shapes=None):
    """The Accelerator every command uses: precision resolved per device, seedable sampler, DDP kwargs, the
    tracker of ``args.report_to`` (with ``tracking``); checks the launch (see
    :func:`distiller_nlp.core.distributed.check_launch`).

    ``probe_shapes``: the run's shapes for ``precision: auto`` on a CPU
    (:func:`~distiller_nlp.core.engine.precision_probe.shapes_from_models` / ``shapes_from_configs``).

    ``find_unused``: DDP tolerates parameters without gradients (set by callers whose module leaves some unused:
    general distillation's classifier, SuperLM subnets), as does ``args.find_unused_parameters``."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    from distiller_nlp.core.distributed import check_launch

    cpu = bool(args.cpu) or not torch.cuda.is_available()  # without a GPU, --cpu is implied (also under a launcher)
    on_gpu = torch.cuda.is_available() and not cpu
    if args.precision == "auto" and not on_gpu:
        mixed = _auto_on_cpu(args, cpu, probe_shapes)
    else:
        mixed = resolve_precision(args.precision, cpu=cpu)
    _fit_accelerator_state(mixed, cpu)
    trackers = parse_report_to(getattr(args, "report_to", "none")) if tracking else []
    if trackers and output_dir is None:
        raise DistillerError(f"report_to {','.join(trackers)} needs an output directory")
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=mixed,
        gradient_accumulation_steps=args.grad_accum,
        log_with=trackers or None,
        # logging_dir = the run directory, as before: TensorBoard's event files stay in DIR/<run name>/.
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=output_dir) if output_dir else None,
        kwargs_handlers=[DistributedDataParallelKwargs(
            find_unused_parameters=bool(args.find_unused_parameters or find_unused))],
        # data_seed: the shuffling seed every rank shares; without it accelerate seeds each rank's sampler from
        # torch.initial_seed(), which differs per rank once dropout streams are seeded per rank (seed_process), and
        # the ranks would then shard different permutations (some examples twice, others never).
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=int(args.seed)),
    )
    check_launch(acc.num_processes)
    return acc


# ------------------------------------------------------------------------------------------------ trackers

#: The file the run skeleton writes the resolved config to (:data:`distiller_nlp.core.run.CONFIG_FILE`).
_RUN_CONFIG_FILE = "config.yaml"
#: The MLflow URI this module set last (so a later run replaces it instead of taking it for the user's own).
_MLFLOW_URI_SET: dict = {"uri": None}


def flatten_config(data: Any, prefix: str = "") -> dict:
    """A config as flat tracker parameters: nested mappings (and dataclasses) joined with dots, ``str`` / ``int`` /
    ``float`` / ``bool`` kept, everything else (``None``, lists, empty mappings) as its ``str``."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    out: dict = {}
    for k, v in data.items():
        key = prefix + re.sub(r"[^\w./\- :]", "_", str(k))  # the characters every tracker (MLflow) accepts in a name
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = dataclasses.asdict(v)
        if isinstance(v, dict) and v:
            out.update(flatten_config(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def _run_config(args, output_dir: Optional[str]) -> dict:
    """The run's resolved config (``DIR/config.yaml`` when the run skeleton wrote one) with ``train`` = ``args``."""
    data: dict = {}
    path = os.path.join(output_dir, _RUN_CONFIG_FILE) if output_dir else None
    if path and os.path.isfile(path):
        import yaml

        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
            data = loaded if isinstance(loaded, dict) else {}
        except (OSError, yaml.YAMLError):
            data = {}
    if dataclasses.is_dataclass(args):
        data["train"] = dataclasses.asdict(args)
    from distiller_nlp.core.card import redact

    return {k: redact(v) if isinstance(v, str) else v for k, v in flatten_config(data).items()}


def mlflow_default_uri(output_dir: str) -> str:
    """The MLflow store of a run when ``MLFLOW_TRACKING_URI`` is unset: SQLite in the run directory (MLflow's own
    default is ``sqlite:///mlflow.db`` in the current directory; its file store needs an opt-in since 3.x)."""
    return "sqlite:///" + os.path.join(os.path.abspath(output_dir), "mlflow.db")


def _use_local_mlflow_store(output_dir: str):
    """Point MLflow at :func:`mlflow_default_uri` unless the user chose a store (``MLFLOW_TRACKING_URI``, which
    ``mlflow.set_tracking_uri`` sets too); returns the undo, or None when the user's store is used.

    Only the environment variable is set (accelerate's MLflowTracker reads it through ``mlflow``), so core never
    imports mlflow."""
    current = os.environ.get("MLFLOW_TRACKING_URI")
    if current and current != _MLFLOW_URI_SET["uri"]:
        return None
    uri = mlflow_default_uri(output_dir)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    _MLFLOW_URI_SET["uri"] = uri

    def undo() -> None:
        if os.environ.get("MLFLOW_TRACKING_URI") == uri:
            del os.environ["MLFLOW_TRACKING_URI"]
        _MLFLOW_URI_SET["uri"] = None

    return undo


def start_trackers(accelerator, run_name: str, args=None, output_dir: Optional[str] = None) -> None:
    """``accelerator.init_trackers(run_name, config=...)`` with the run's config as flat parameters (see
    :func:`flatten_config`); MLflow gets a local store in ``output_dir`` unless ``MLFLOW_TRACKING_URI`` is set, and
    its run is named after ``output_dir``. :func:`distiller_nlp.core.distributed.finish_trackers` closes them (and
    undoes the MLflow default)."""
    names = [str(getattr(t, "value", t)) for t in accelerator.log_with]
    init_kwargs: dict = {}
    cleanup: list = []
    if "mlflow" in names and output_dir:
        mlflow_kwargs = {"run_name": os.path.basename(os.path.abspath(output_dir))}
        undo = _use_local_mlflow_store(output_dir)
        if undo is not None:
            cleanup.append(undo)
            # artifact_location of a new experiment; only for the local store (a server keeps its own)
            mlflow_kwargs["logging_dir"] = os.path.join(os.path.abspath(output_dir), "mlartifacts")
        init_kwargs["mlflow"] = mlflow_kwargs
    accelerator._distiller_tracker_cleanup = cleanup
    try:
        accelerator.init_trackers(run_name, config=_run_config(args, output_dir), init_kwargs=init_kwargs)
    except BaseException:
        accelerator._distiller_tracker_cleanup = []
        for undo in cleanup:
            undo()
        raise
