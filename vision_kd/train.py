"""The run function behind ``vision-kd train``: load data, teachers and student, build the method module, drive the
shared engine, write the run directory.

Run directory: ``model.safetensors`` + ``vision_model.json`` (the student selected on the validation split),
``metrics.json`` (flat keys: ``eval_accuracy``/``eval_ece`` on validation — ``eval_nme`` for landmarks —,
``test_*`` on the held-out test split, ``train_runtime_s``, ``examples_per_s``, ``seconds_per_epoch``, ...),
``config.yaml`` and ``checkpoints/`` (``--resume``).

A method that needs a teacher and is given none trains the dataset's default teacher first with ``method: ce`` (the
same function) and caches it under ``teacher_cache`` (``$VISION_KD_CACHE`` or ``~/.cache/vision_kd``), keyed by a hash
of the teacher's whole config: data, split, architecture, epochs, target.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import torch

from distiller_nlp.core.config import dump_yaml, to_dict
from distiller_nlp.core.errors import DistillerError

from vision_kd.config import VisionConfig, VisionTrainArgs
from vision_kd.data import CLASSIFICATION, LANDMARKS, VisionData, load_vision_data

DATASET_DEFAULTS = {
    "digits": {"student": "mlp_small", "teacher_arch": "cnn", "teacher_epochs": 30.0},
    "synthetic": {"student": "mlp_small", "teacher_arch": "mlp_small", "teacher_epochs": 20.0},
    "landmarks": {"student": "mlp:hidden=64", "teacher_arch": "cnn_flat", "teacher_epochs": 40.0},
    "*": {"student": "resnet8x4", "teacher_arch": "resnet32x4", "teacher_epochs": 30.0},
}
LWKD_TEACHER = {"student": "mlp_small", "teacher_epochs": 20.0}


def dataset_defaults(dataset: str) -> dict:
    return DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["*"])


def _world_size() -> int:
    """Processes of this run (``accelerate launch``/``torchrun`` set WORLD_SIZE); each sees 1/world of an epoch."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def cache_root(cfg: VisionConfig) -> str:
    return cfg.teacher_cache or os.environ.get("VISION_KD_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "vision_kd")


def load_data(cfg: VisionConfig, landmarks: bool = False) -> VisionData:
    return load_vision_data(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.split_seed, augment=cfg.augment,
                            image_size=cfg.image_size, max_train=cfg.max_train_examples, num_classes=cfg.num_classes,
                            num_landmarks=cfg.num_landmarks, image_column=cfg.image_column,
                            label_column=cfg.label_column, landmarks=landmarks)


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


def _load_checked(path: str, data: VisionData, what: str, check_input: bool = True):
    from vision_kd.models import load_model

    if not os.path.isdir(path):
        raise DistillerError(f"{what} {path} is not a directory")
    model = load_model(path)
    check_compatible(model, data, f"{what} {path}", check_input)
    return model


def _teacher_metrics(path: str, prefix: str) -> dict:
    try:
        with open(os.path.join(path, "metrics.json"), encoding="utf-8") as fh:
            m = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {f"{prefix}_{k}": v for k, v in m.items() if k.startswith(("eval_", "test_")) and not
            k.endswith("_examples")}


def default_teacher(cfg: VisionConfig, role: str, num_classes: int = 0) -> str:
    """Path of the cached default teacher for ``role`` (teacher, tough, tolerant, synthetic), training it if absent."""
    d = dataset_defaults(cfg.dataset)
    arch = cfg.teacher_arch or d["teacher_arch"]
    epochs = cfg.teacher_epochs or d["teacher_epochs"]
    base = dict(method="ce", dataset=cfg.dataset, task=cfg.task or (LANDMARKS if role in ("tough", "tolerant")
                                                                     else ""), data_dir=cfg.data_dir, image_column=cfg.image_column,
                label_column=cfg.label_column, image_size=cfg.image_size, augment=cfg.augment,
                split_seed=cfg.split_seed, max_train_examples=cfg.max_train_examples, num_classes=cfg.num_classes,
                num_landmarks=cfg.num_landmarks, student=arch)
    params = {}
    if role == "synthetic":  # LW-KD's lightweight teacher on the synthesized simple dataset
        arch = cfg.teacher_arch or LWKD_TEACHER["student"]
        epochs = cfg.teacher_epochs or LWKD_TEACHER["teacher_epochs"]
        base.update(dataset="synthetic", task="", data_dir="", image_size=0, augment=False, max_train_examples=0,
                    num_classes=num_classes, student=arch)
    elif role in ("tough", "tolerant"):
        params = {"target": "gt" if role == "tough" else "asm"}
    train = VisionTrainArgs(epochs=epochs, seed=0, precision=cfg.train.precision, cpu=cfg.train.cpu)
    sub = VisionConfig(**base, params=params, train=train)
    key_cfg = replace(sub, threads=0, train=replace(train, cpu=False))  # where it runs does not change the teacher
    key = hashlib.sha1(json.dumps(to_dict(key_cfg), sort_keys=True).encode()).hexdigest()[:12]
    safe_arch = "".join(ch if ch.isalnum() else "_" for ch in arch)
    path = os.path.join(cache_root(cfg), "teachers", f"{sub.dataset}-{role}-{safe_arch}-{key}")
    if not os.path.isfile(os.path.join(path, "metrics.json")):
        what = "teacher" if role == "teacher" else f"{role} teacher"
        if _world_size() > 1:
            raise DistillerError(f"no cached default {what} at {path}: multi-process runs do not train teachers; "
                                 "run the same command once in a single process first, or pass --teacher")
        print(f"training the default {what} ({arch}, {epochs:g} epochs on {sub.dataset}); cached in {path}",
              file=sys.stderr)
        train_vision(replace(sub, output_dir=path, threads=cfg.threads), overwrite=True)
    return path


def _build_student(cfg: VisionConfig, data: VisionData):
    from vision_kd.models import build_model

    spec = cfg.student or dataset_defaults(cfg.dataset)["student"]
    if os.path.isdir(spec):
        return _load_checked(spec, data, "student")
    return build_model(spec, data.in_channels, data.image_size, data.num_outputs, seed=cfg.train.seed)


def _synthetic_pool(cfg: VisionConfig, teacher, num_classes: int, per_class: int) -> torch.Tensor:
    """LW-KD: teacher logits on ``per_class`` synthetic training images of every class, shape (C, P, C)."""
    from vision_kd.data import load_synthetic_data
    from vision_kd.strategies import teacher_outputs

    syn = load_synthetic_data(num_classes, cfg.split_seed, image_size=teacher.image_size)
    labels = syn.train.labels
    p = min(per_class, int(torch.bincount(labels, minlength=num_classes).min()))
    if p < 1:
        raise DistillerError("params.pool_per_class must be at least 1")
    idx = torch.stack([torch.nonzero(labels == c).squeeze(1)[:p] for c in range(num_classes)])
    return teacher_outputs(teacher, syn.train.images[idx.reshape(-1)]).reshape(num_classes, p, -1)


def prepare_run(cfg: VisionConfig, source: str = "the config") -> SimpleNamespace:
    """Validate and load everything a run needs (may train and cache default teachers); writes nothing else."""
    from vision_kd.methods import get_method

    method_cls = get_method(cfg.method)
    if cfg.task not in ("", CLASSIFICATION, LANDMARKS):
        raise DistillerError(f"task '{cfg.task}' must be {CLASSIFICATION} or {LANDMARKS}")
    landmark_data = cfg.task == LANDMARKS or cfg.dataset == "landmarks" or (
        not cfg.task and CLASSIFICATION not in method_cls.tasks)
    data = load_data(cfg, landmarks=landmark_data)
    if data.task not in method_cls.tasks:
        raise DistillerError(f"method '{cfg.method}' does not apply to {data.task} data (dataset '{cfg.dataset}')")
    params = method_cls.resolve_params(cfg.params, data.family, source)
    torch.manual_seed(cfg.train.seed)

    teachers, teacher_paths, extra_metrics = {}, {}, {}
    for role in method_cls.teacher_roles:
        given = cfg.tolerant_teacher if role == "tolerant" else cfg.teacher
        path = given or default_teacher(cfg, role)
        teachers[role] = _load_checked(path, data, f"{role} teacher" if role != "teacher" else "teacher")
        teacher_paths[role] = path
        extra_metrics.update(_teacher_metrics(path, role))

    ctx = SimpleNamespace(data=data, online_teacher=None, synthetic_teacher_logits=None,
                          batches_per_epoch=math.ceil(len(data.train) / (cfg.train.batch_size * _world_size())))
    if cfg.method == "bdkd":
        from vision_kd.models import build_model

        if cfg.teacher:
            ctx.online_teacher = _load_checked(cfg.teacher, data, "teacher")
            teacher_paths["teacher"] = cfg.teacher
        else:
            arch = cfg.teacher_arch or dataset_defaults(cfg.dataset)["teacher_arch"]
            ctx.online_teacher = build_model(arch, data.in_channels, data.image_size, data.num_outputs,
                                             seed=cfg.train.seed + 1000)
    if cfg.method == "lwkd":
        path = cfg.teacher or default_teacher(cfg, "synthetic", num_classes=data.num_outputs)
        lw_teacher = _load_checked(path, data, "teacher", check_input=False)
        teacher_paths["teacher"] = path
        extra_metrics.update(_teacher_metrics(path, "teacher"))
        ctx.synthetic_teacher_logits = _synthetic_pool(cfg, lw_teacher, data.num_outputs, params.pool_per_class)

    student = _build_student(cfg, data)
    module = method_cls(student, params, ctx)
    return SimpleNamespace(method_cls=method_cls, data=data, params=params, teachers=teachers,
                           teacher_paths=teacher_paths, student=student, module=module, ctx=ctx,
                           extra_metrics=extra_metrics)


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

    On a machine shared with other jobs, one thread is far faster for these small models: measured here, a digits
    ``cnn`` training step took 0.03 s with 1 thread and 0.9 s with 2 threads while another job used the cores."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_vision(cfg: VisionConfig, resume: bool, overwrite: bool, source: str) -> dict:
    from distiller_nlp.core.engine import Engine
    from distiller_nlp.core.rundir import (check_output_dir, create_output_dir, is_main_process, promote_best,
                                           write_json_atomic)
    from torch.utils.data import default_collate

    from vision_kd.metrics import classification_metrics, landmark_metrics
    from vision_kd.models import count_parameters
    from vision_kd.strategies import cache_teacher_outputs, offline_teachers

    out_dir = cfg.output_dir
    check_output_dir(out_dir, resume=resume, overwrite=overwrite)
    cfg.train.validate(source)
    run = prepare_run(cfg, source)
    data, module = run.data, run.module

    train_set, prepare, frozen, cached = data.train, None, [], False
    if run.teachers:
        if data.train.augment is None:
            train_set, cached = cache_teacher_outputs(run.teachers, data.train), True
        else:
            prepare, frozen = offline_teachers(run.teachers)

    create_output_dir(out_dir, overwrite=overwrite)
    if is_main_process():
        dump_yaml(cfg, os.path.join(out_dir, "config.yaml"))
    export_extra = {"task": data.task, "dataset": cfg.dataset, "method": cfg.method}
    landmarks = data.task == LANDMARKS
    engine = Engine(cfg.train, out_dir, module, train_set, default_collate, eval_datasets=data.eval_sets(),
                    compute_metrics=landmark_metrics if landmarks else classification_metrics,
                    main_metric="nme" if landmarks else "accuracy", greater_is_better=not landmarks,
                    prepare_batch=prepare, frozen=frozen,
                    export_fn=lambda mod, d: mod.export(d, export_extra), resume=resume, run_name="vision_kd")
    result = engine.train()
    metrics = dict(result.metrics)
    if engine.accelerator.is_main_process:
        epochs_done = result.global_step * cfg.train.grad_accum / max(1, run.ctx.batches_per_epoch)
        metrics.update({
            "method": cfg.method, "dataset": cfg.dataset, "task": data.task,
            "student_arch": run.student.spec["arch"], "student_params": count_parameters(run.student),
            "method_params": run.module.params_dict(), "teachers": run.teacher_paths, "teacher_cached": cached,
            "train_examples": len(data.train), "epochs_done": round(epochs_done, 3),
            "seconds_per_epoch": round(metrics["train_runtime_s"] / epochs_done, 4) if epochs_done else 0.0,
            "seed": cfg.train.seed, "split_seed": cfg.split_seed, **run.extra_metrics,
        })
        promote_best(out_dir)
        write_json_atomic(os.path.join(out_dir, "metrics.json"), metrics)
    engine.accelerator.wait_for_everyone()
    return metrics


__all__ = ["train_vision", "torch_threads", "prepare_run", "default_teacher", "check_compatible", "dataset_defaults"]
