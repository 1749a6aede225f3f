"""The run function behind ``vision-kd train``: load data, teachers and student, build the method module, drive the
shared engine, write the run directory — the one run skeleton :class:`~distiller_nlp.core.run.TrainingRun`.

Run directory: ``model.safetensors`` + ``vision_model.json`` (the student selected on the validation split),
``metrics.json`` (flat keys: ``eval_accuracy``/``eval_ece`` on validation — ``eval_nme`` for landmarks —,
``test_*`` on the held-out test split, ``train_runtime_s``, ``examples_per_s``, ``seconds_per_epoch``, ...),
``history.json`` (training losses and evaluations), ``config.yaml`` and ``checkpoints/`` (``--resume``).

Nothing here depends on a method's name: a method declares its frozen teachers (``teacher_roles``,
``Method.teacher_path``) and builds anything else it needs in ``Method.prepare`` with the services of
:class:`RunContext`. A frozen teacher that is not given is the dataset's default teacher, trained first with
``method: ce`` (the same function) and cached under ``teacher_cache`` (``$VISION_KD_CACHE`` or
``~/.cache/vision_kd``), keyed by a hash of the teacher's whole config: data, split, architecture, epochs, target.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn

from distiller_nlp.core.config import to_dict
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.run import TrainingRun
from distiller_nlp.core.rundir import finished_run, read_json, world_size

from vision_kd.config import VisionConfig, VisionTrainArgs
from vision_kd.data import CLASSIFICATION, LANDMARKS, DataRequest, VisionData, dataset_defaults, load_vision_data
from vision_kd.methods import Method, MethodContext, get_method


def cache_root(cfg: VisionConfig) -> str:
    """The directory of auto-trained teachers: ``teacher_cache``, ``$VISION_KD_CACHE`` or ``~/.cache/vision_kd``."""
    return cfg.teacher_cache or os.environ.get("VISION_KD_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "vision_kd")


def load_data(cfg: VisionConfig, landmarks: bool = False) -> VisionData:
    """The dataset of a run config (``landmarks``: read a ``datasets`` image + points set as a landmark task)."""
    return load_vision_data(DataRequest.from_config(cfg, LANDMARKS if landmarks else CLASSIFICATION))


def check_compatible(model, data: VisionData, what: str, check_input: bool = True) -> None:
    """A loaded model must predict the data's classes (or landmark count) and take its image shape."""
    spec = model.spec
    task = spec.get("task")
    if task and task != data.task:
        raise DistillerError(f"{what} was trained for {task} but dataset '{data.name}' is a {data.task} task")
    n, m = spec["num_outputs"], data.num_outputs
    if n != m:
        if data.task == LANDMARKS:
            raise DistillerError(f"{what} predicts {n // 2} landmarks but dataset '{data.name}' has {m // 2}")
        raise DistillerError(f"{what} has {n} classes but dataset '{data.name}' has {m}")
    have = (spec["in_channels"], spec["image_size"], spec["image_size"])
    want = (data.in_channels, data.image_size, data.image_size)
    if check_input and have != want:
        raise DistillerError(f"{what} expects images of shape {have} but dataset '{data.name}' has images of "
                             f"shape {want} (set image_size or pick a matching model)")


def load_checked(path: str, data: VisionData, what: str, check_input: bool = True):
    """The saved model in ``path``, checked to fit ``data`` (:func:`check_compatible`); ``what`` names it in
    errors."""
    from vision_kd.models import load_model

    if not os.path.isdir(path):
        raise DistillerError(f"{what} {path} is not a directory")
    model = load_model(path)
    check_compatible(model, data, f"{what} {path}", check_input)
    return model


def teacher_metrics(path: str, prefix: str) -> dict:
    """The evaluation metrics of the run in ``path`` (``eval_*``, ``test_*``; not the example counts), renamed
    ``{prefix}_eval_*`` / ``{prefix}_test_*``; empty when it has no readable ``metrics.json``."""
    m = read_json(os.path.join(path, "metrics.json")) or {}
    return {f"{prefix}_{k}": v for k, v in m.items() if k.startswith(("eval_", "test_")) and not
            k.endswith("_examples")}


def default_teacher(cfg: VisionConfig, role: str, *, params: Optional[dict] = None, **fields) -> str:
    """Path of the cached default teacher for ``role``, training it (``method: ce``) first if absent.

    The teacher's config copies the data fields of ``cfg``; ``fields`` replace any of them (e.g. LW-KD's
    ``dataset="synthetic"``) and ``params`` are its ``ce`` params (``{"target": "asm"}``). Its architecture and epochs
    are ``teacher_arch`` / ``teacher_epochs``, else the defaults of the teacher's dataset. It trains with seed 0 in
    one process and is cached under :func:`cache_root`, keyed by a hash of its config."""
    base = dict(method="ce", dataset=cfg.dataset, task=cfg.task, data_dir=cfg.data_dir, image_column=cfg.image_column,
                label_column=cfg.label_column, image_size=cfg.image_size, augment=cfg.augment,
                split_seed=cfg.split_seed, max_train_examples=cfg.max_train_examples, num_classes=cfg.num_classes,
                num_landmarks=cfg.num_landmarks)
    base.update(fields)
    d = dataset_defaults(base["dataset"])
    arch = cfg.teacher_arch or d["teacher_arch"]
    epochs = cfg.teacher_epochs or d["teacher_epochs"]
    train = VisionTrainArgs(epochs=epochs, seed=0, precision=cfg.train.precision, cpu=cfg.train.cpu)
    sub = VisionConfig(**base, student=arch, params=dict(params or {}), train=train)
    key_cfg = replace(sub, threads=0, train=replace(train, cpu=False))  # where it runs does not change the teacher
    key = hashlib.sha1(json.dumps(to_dict(key_cfg), sort_keys=True).encode()).hexdigest()[:12]
    safe_arch = "".join(ch if ch.isalnum() else "_" for ch in arch)
    path = os.path.join(cache_root(cfg), "teachers", f"{sub.dataset}-{role}-{safe_arch}-{key}")
    if finished_run(path) is None:
        what = "teacher" if role == "teacher" else f"{role} teacher"
        if world_size() > 1:
            raise DistillerError(f"no cached default {what} at {path}: multi-process runs do not train teachers; "
                                 "run the same command once in a single process first, or pass --teacher")
        print(f"training the default {what} ({arch}, {epochs:g} epochs on {sub.dataset}); cached in {path}",
              file=sys.stderr)
        train_vision(replace(sub, output_dir=path, threads=cfg.threads), overwrite=True)
    return path


class RunContext:
    """One run being prepared: what :meth:`Method.teacher_path` and :meth:`Method.prepare` read and use.

    Attributes:
        cfg: the run's :class:`~vision_kd.config.VisionConfig`.
        data: the loaded :class:`~vision_kd.data.VisionData`.
        params: the method's resolved ``Params``.
        teacher_paths: ``role -> directory`` of the teachers used (``metrics.json``'s ``teachers``).
        teacher_metrics: those teachers' evaluation metrics (``{role}_eval_*``, merged into ``metrics.json``).
    """

    def __init__(self, cfg: VisionConfig, data: VisionData, params):
        self.cfg = cfg
        self.data = data
        self.params = params
        self.teacher_paths: dict = {}
        self.teacher_metrics: dict = {}

    @property
    def teacher_arch(self) -> str:
        """The architecture of a teacher built here: ``teacher_arch``, else the dataset's default."""
        return self.cfg.teacher_arch or dataset_defaults(self.cfg.dataset)["teacher_arch"]

    def load_model(self, path: str, what: str = "teacher", check_input: bool = True) -> nn.Module:
        """The saved model in ``path``, checked to predict the data's classes (and, with ``check_input``, to take
        its image shape); ``what`` names it in errors."""
        return load_checked(path, self.data, what, check_input)

    def build_model(self, arch: str, seed: Optional[int] = None) -> nn.Module:
        """A fresh ``arch`` (``vision_kd.models`` name, ``NAME:key=value``) shaped for the data; ``seed`` seeds its
        initialisation."""
        from vision_kd.models import build_model

        return build_model(arch, self.data.in_channels, self.data.image_size, self.data.num_outputs, seed=seed)

    def default_teacher(self, role: str, *, params: Optional[dict] = None, **fields) -> str:
        """The cached default teacher for ``role``, trained first if absent (see :func:`default_teacher`)."""
        return default_teacher(self.cfg, role, params=params, **fields)

    def record_teacher(self, role: str, path: str, with_metrics: bool = True) -> None:
        """Record ``path`` as the run's teacher for ``role`` and, with ``with_metrics``, copy its evaluation metrics
        into the run's metrics as ``{role}_eval_*`` / ``{role}_test_*``."""
        self.teacher_paths[role] = path
        if with_metrics:
            self.teacher_metrics.update(teacher_metrics(path, role))


@dataclass
class PreparedRun:
    """Everything a run needs, loaded and validated by :func:`prepare_run` (nothing written yet)."""

    method_cls: type
    data: VisionData
    params: object
    teachers: dict
    teacher_paths: dict
    student: nn.Module
    module: Method
    context: MethodContext
    extra_metrics: dict


def _build_student(cfg: VisionConfig, data: VisionData):
    from vision_kd.models import build_model

    spec = cfg.student or dataset_defaults(cfg.dataset)["student"]
    if os.path.isdir(spec):
        return load_checked(spec, data, "student")
    return build_model(spec, data.in_channels, data.image_size, data.num_outputs, seed=cfg.train.seed)


def prepare_run(cfg: VisionConfig, source: str = "the config", device=None) -> PreparedRun:
    """Validate and load everything a run needs (may train and cache default teachers); writes nothing else.

    ``device``: where the teachers go before a method's ``prepare`` hook runs them (e.g. LW-KD's synthetic pool)."""
    method_cls = get_method(cfg.method)
    if cfg.task not in ("", CLASSIFICATION, LANDMARKS):
        raise DistillerError(f"task '{cfg.task}' must be {CLASSIFICATION} or {LANDMARKS}")
    landmark_data = cfg.task == LANDMARKS or (not cfg.task and CLASSIFICATION not in method_cls.tasks)
    data = load_data(cfg, landmarks=landmark_data)
    if data.task not in method_cls.tasks:
        raise DistillerError(f"method '{cfg.method}' does not apply to {data.task} data (dataset '{cfg.dataset}')")
    params = method_cls.resolve_params(cfg.params, data.family, source)
    torch.manual_seed(cfg.train.seed)

    run = RunContext(cfg, data, params)
    teachers = {}
    for role in method_cls.teacher_roles:
        path = method_cls.teacher_path(role, run)
        teachers[role] = run.load_model(path, f"{role} teacher" if role != "teacher" else "teacher")
        if device is not None:
            teachers[role].to(device)
        run.record_teacher(role, path)
    extras = method_cls.prepare(run)

    context = MethodContext(data=data, batches_per_epoch=math.ceil(len(data.train) / (cfg.train.batch_size *
                                                                                      world_size())))
    student = _build_student(cfg, data)
    module = method_cls(student, params, context, **extras)
    return PreparedRun(method_cls=method_cls, data=data, params=params, teachers=teachers,
                       teacher_paths=run.teacher_paths, student=student, module=module, context=context,
                       extra_metrics=run.teacher_metrics)


def train_vision(cfg: VisionConfig, resume: bool = False, overwrite: bool = False, source: str = "the config") -> dict:
    """Train ``cfg.method`` on ``cfg.dataset``; returns (and writes to ``cfg.output_dir/metrics.json``) the metrics.

    ``source`` names the recipe in error messages (e.g. an unknown ``params.<key>``)."""
    if cfg.threads < 0:
        raise DistillerError(f"threads must be >= 0, got {cfg.threads}")
    with torch_threads(cfg.threads):
        return _train_vision(cfg, resume, overwrite, source)


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads (0 = leave as is), restoring the previous count after.

    On a machine shared with other jobs, one thread is usually far faster for these small models than several
    contended ones."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_vision(cfg: VisionConfig, resume: bool, overwrite: bool, source: str) -> dict:
    from distiller_nlp.core.engine import Engine, make_accelerator
    from torch.utils.data import default_collate

    from vision_kd.metrics import classification_metrics, landmark_metrics
    from vision_kd.models import count_parameters
    from vision_kd.strategies import cache_teacher_outputs, offline_teachers

    run = TrainingRun(cfg.output_dir, resume=resume, overwrite=overwrite)
    cfg.train.validate(source)
    # The process's one Accelerator first: teachers run on its device (cached outputs, synthetic pools).
    accelerator = make_accelerator(cfg.train, run.output_dir, tracking=True)
    prepared = prepare_run(cfg, source, device=accelerator.device)
    data, module = prepared.data, prepared.module

    train_set, prepare, frozen, cached = data.train, None, [], False
    if prepared.teachers:
        if data.train.augment is None:
            train_set, cached = cache_teacher_outputs(prepared.teachers, data.train), True
        else:
            prepare, frozen = offline_teachers(prepared.teachers)

    run.start(cfg)
    export_extra = {"task": data.task, "dataset": cfg.dataset, "method": cfg.method}
    landmarks = data.task == LANDMARKS
    engine = Engine(cfg.train, run.output_dir, module, train_set, default_collate, eval_datasets=data.eval_sets(),
                    compute_metrics=landmark_metrics if landmarks else classification_metrics,
                    main_metric="nme" if landmarks else "accuracy", greater_is_better=not landmarks,
                    prepare_batch=prepare, frozen=frozen,
                    export_fn=lambda mod, d: mod.export(d, export_extra), resume=run.resume, run_name="vision_kd",
                    accelerator=accelerator)
    result = engine.train()
    floors = {}
    if not landmarks and accelerator.is_main_process:  # the cheap floors (issue #22), on the same splits
        from vision_kd.floors import pixel_floor_warning, pixel_floors

        floors = pixel_floors(data.train, data.eval_sets(), seed=cfg.train.seed)
        warning = pixel_floor_warning({**result.metrics, **floors}, who=cfg.method)
        if warning:
            floors["floor_warning"] = warning
            accelerator.print(f"warning: {warning}")
    epochs_done = result.global_step * cfg.train.grad_accum / max(1, prepared.context.batches_per_epoch)
    runtime = result.metrics["train_runtime_s"]

    def card(metrics: dict) -> None:
        from distiller_nlp.core.card import write_model_card

        write_model_card(run.output_dir, vision_card(cfg, prepared, metrics))

    return run.finish(engine, result, on_finish=[card], extra={
        "method": cfg.method, "dataset": cfg.dataset, "task": data.task,
        "student_arch": prepared.student.spec["arch"], "student_params": count_parameters(prepared.student),
        "method_params": module.params_dict(), "teachers": prepared.teacher_paths, "teacher_cached": cached,
        "train_examples": len(data.train), "epochs_done": round(epochs_done, 3),
        "seconds_per_epoch": round(runtime / epochs_done, 4) if epochs_done else 0.0,
        "seed": cfg.train.seed, "split_seed": cfg.split_seed, **prepared.extra_metrics, **floors,
    })


def vision_card(cfg: VisionConfig, prepared, metrics: dict):
    """The model card of a vision student: method and its parameters, teachers, student architecture and size, data,
    measured metrics, the command (:class:`distiller_nlp.core.card.CardInfo`)."""
    import os

    from distiller_nlp.core.card import CardInfo, teacher_card_facts

    tr = cfg.train
    teachers = list(prepared.teacher_paths or [])
    licence = next((teacher_card_facts(t).get("license") for t in teachers if teacher_card_facts(t)), None)
    arch = prepared.student.spec.get("arch")
    summary = (f"A `{arch}` student trained with the vision method `{cfg.method}` on `{cfg.dataset}` with "
               "distiller-toolkit's `vision-kd`" + (f", from the teacher{'s' if len(teachers) > 1 else ''} "
                                                     + ", ".join(f"`{t}`" for t in teachers) if teachers else "")
               + ".")
    params = metrics.get("method_params") or {}
    pipe = {"method": f"`{cfg.method}`" + (f" ({', '.join(f'{k} = {v}' for k, v in params.items())})"
                                           if params else ""),
            "teacher outputs": "cached once" if metrics.get("teacher_cached") else ("live" if teachers else "–"),
            "optimisation": (f"{tr.max_steps} steps" if tr.max_steps > 0 else f"{tr.planned_epochs:g} epochs")
            + f", peak lr {tr.lr:g}, batch {tr.batch_size}, precision {tr.precision}, seed {tr.seed}"}
    rows = [("architecture", str(arch), "–"), ("parameters", f"{metrics.get('student_params', 0):,}", "–")]
    data = {"dataset": f"`{cfg.dataset}`", "task": str(metrics.get("task")),
            "training examples": f"{metrics.get('train_examples', 0):,}"}
    return CardInfo(title=os.path.basename(os.path.abspath(cfg.output_dir)) or "student", summary=summary,
                    base_model=teachers[0] if teachers else None, license=licence, datasets=[cfg.dataset],
                    dataset_name=cfg.dataset,
                    task_type="keypoint-detection" if metrics.get("task") == LANDMARKS else "image-classification",
                    tags=["vision", cfg.method],
                    model_rows=rows, pipeline=pipe, data=data, metrics=metrics, library_name="pytorch",
                    api="from vision_kd.config import VisionConfig\nfrom distiller_nlp.core.config import load_config"
                        "\nfrom vision_kd.train import train_vision\n"
                        "train_vision(load_config(VisionConfig, \"config.yaml\"))",
                    load_snippet="from vision_kd.models import load_model\nmodel = load_model(\"PATH\")")


__all__ = ["train_vision", "vision_card", "torch_threads", "prepare_run", "PreparedRun", "RunContext", "default_teacher",
           "check_compatible", "load_checked", "dataset_defaults"]
