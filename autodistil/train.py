"""Task-agnostic SuperLM training on the shared :class:`~distiller_nlp.core.engine.Engine`.

Per optimiser step the teacher runs once (``prepare_batch``, under ``no_grad``) and the module's ``forward`` runs the
subnets chosen by the sampling strategy (:mod:`autodistil.sampling`: ``sandwich``, AutoDistil's rule, or
``uniform``) on the same batch, summing their relation losses, so one backward accumulates every subnet's gradient
before the single optimiser step.

The random choice is a pure function of ``(seed, step)`` where ``step`` is a buffer of the module, so it is saved
in every checkpoint and a resumed run samples exactly the subnets the uninterrupted run would.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from distiller_nlp.core.errors import DistillerError

from .config import TrainSuperLMConfig
from .sampling import SAMPLERS, sample_subnets
from .objective import TeacherFeatures, subnet_relation_loss
from .subspaces import Arch, SubSpace, resolve_spaces
from .superlm import SUPERLM_FILE, SuperLM, save_superlm

logger = logging.getLogger(__name__)

__all__ = ["SuperLMTrainer", "sample_subnets", "train_superlm", "plan_superlm_runs", "check_resumed_objective"]

CONFIG_FILE = "train_superlm.yaml"


class SuperLMTrainer(nn.Module):
    """The engine's trainable module: ``forward(batch)`` = summed relation loss of the sampled subnets.

    A step's sampled subnets leave some SuperLM weights without a gradient (a smaller subnet never touches the
    widest rows), so DDP must look for unused parameters (``has_unused_parameters``)."""

    has_unused_parameters = True

    def __init__(self, superlm: SuperLM, space: SubSpace, sampling: str = "sandwich", num_random: int = 2,
                 seed: int = 42, relation_heads: int = 12, kind: str = "mse", mse_pairs: str = "all"):
        super().__init__()
        superlm.check_space(space)
        self.superlm = superlm
        self.space = space
        self.sampling = sampling
        self.sampler = SAMPLERS.get(sampling)()
        self.num_random = int(num_random)
        self.seed = int(seed)
        self.relation_heads = int(relation_heads)
        self.kind = kind
        self.mse_pairs = mse_pairs
        self.archs = sorted(space, key=lambda a: (a.params(), a.flops(), a))
        if not self.archs:
            raise DistillerError(f"sub-space '{space.name}' is empty")
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def current_subnets(self) -> list[Arch]:
        """The subnets of the current step (a pure function of seed and step)."""
        return sample_subnets(self.archs, self.sampling, self.num_random, self.seed, int(self.step))

    def forward(self, batch: dict) -> dict:
        """``{"loss": sum of the sampled subnets' relation losses, ...}``."""
        teacher_qkv = batch["teacher_qkv"]
        archs = self.current_subnets()
        out: dict = {}
        total = None
        for i, arch in enumerate(archs):
            self.superlm.set_active(arch)
            loss = subnet_relation_loss(self.superlm, batch, teacher_qkv, self.relation_heads, self.kind,
                                        self.mse_pairs)
            total = loss if total is None else total + loss
            if i < len(self.sampler.named):
                out[self.sampler.named[i]] = loss.detach()
        if self.training:
            self.step += 1
        out["loss"] = total
        return out

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """[CLS] vector of the largest subnet (the engine's contract; SuperLM training has no evaluation set)."""
        self.superlm.set_active(self.archs[-1])
        return self.superlm(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))[:, 0]


def _teacher_config(path: str):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if config.model_type not in ("bert", "autodistil_bert"):
        raise DistillerError(f"teacher {path} has model type '{config.model_type}'; a SuperLM needs a BERT checkpoint")
    return config


def plan_superlm_runs(cfg: TrainSuperLMConfig) -> tuple[str, object, list[tuple[SubSpace, str]]]:
    """Validate a config without training: ``(teacher_path, teacher_config, [(space, run_dir), ...])``."""
    from distiller_nlp.models import resolve_model_path

    cfg.validate()
    path = resolve_model_path(cfg.teacher)
    config = _teacher_config(path)
    probe = SuperLM.__new__(SuperLM)  # check_space only needs config + head_dim
    nn.Module.__init__(probe)
    probe.config = config
    from .superlm import _head_dim

    probe.head_dim = _head_dim(config)
    spaces = resolve_spaces(cfg.subspaces, config.hidden_size, probe.head_dim, cfg.plain_bert)
    names = [s.name for s in spaces]
    if len(set(names)) != len(names):
        raise DistillerError(f"sub-space names repeat: {', '.join(names)}")
    for space in spaces:
        probe.check_space(space)
    if not cfg.output_dir:
        raise DistillerError("--output-dir is required")
    runs = [(s, cfg.output_dir if len(spaces) == 1 else os.path.join(cfg.output_dir, s.name)) for s in spaces]
    return path, config, runs


def check_resumed_objective(cfg: TrainSuperLMConfig, config_path: str) -> None:
    """On ``--resume``: the objective must be the one the run started with (``config_path``, the
    ``train_superlm.yaml`` the first start wrote), else a resumed run would silently switch losses mid-training —
    e.g. a run started when the default was ``kind: kl`` (before issue #17), resumed without ``--relation-kind kl``.
    A saved config without ``mse_pairs`` predates it: its ``mse`` kind averaged over real-token pairs (``valid``).
    A missing file (nothing started yet) passes."""
    if not os.path.isfile(config_path):
        return
    from distiller_nlp.core.config import read_yaml

    old = read_yaml(config_path).get("objective") or {}
    saved = {"kind": old.get("kind", "kl"), "relation_heads": old.get("relation_heads", 12),
             "teacher_layer": old.get("teacher_layer", 0)}
    now = {"kind": cfg.objective.kind, "relation_heads": cfg.objective.relation_heads,
           "teacher_layer": cfg.objective.teacher_layer}
    if saved["kind"] == now["kind"] == "mse":  # mse_pairs matters only between two mse runs
        saved["mse_pairs"] = old.get("mse_pairs", "valid")
        now["mse_pairs"] = cfg.objective.mse_pairs
    diff = [k for k in now if saved.get(k) != now[k]]
    if diff:
        flags = {"kind": "--relation-kind", "mse_pairs": "--relation-mse-pairs", "relation_heads": "--relation-heads",
                 "teacher_layer": "--teacher-layer"}
        raise DistillerError(
            f"--resume: {os.path.dirname(config_path) or '.'} was started with objective "
            + ", ".join(f"{k}={saved.get(k)}" for k in diff) + " but this run says "
            + ", ".join(f"{k}={now[k]}" for k in diff) + " (the relation default is kind=mse, mse_pairs=all since "
            "issue #17); resume with " + " ".join(f"{flags[k]} {saved.get(k)}" for k in diff))


def train_superlm(cfg: TrainSuperLMConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Train one SuperLM per sub-space of ``cfg`` (``output_dir`` itself for one sub-space, ``output_dir/<name>``
    for several). Returns ``{space name: metrics}``; each run directory holds the SuperLM (``config.json``,
    ``model.safetensors``, ``superlm.json``, tokenizer) and ``metrics.json``."""
    from transformers import AutoModel

    from distiller_nlp.core.engine import Engine
    from distiller_nlp.core.run import TrainingRun
    from distiller_nlp.core.rundir import finished_run
    from distiller_nlp.models import load_tokenizer, quiet_transformers
    from distiller_nlp.tasks import make_collator

    from .data import load_texts, tokenized_texts

    teacher_path, _, runs = plan_superlm_runs(cfg)
    if resume:
        check_resumed_objective(cfg, os.path.join(cfg.output_dir, CONFIG_FILE))
    top = TrainingRun(cfg.output_dir, resume=resume, overwrite=overwrite)
    tokenizer = load_tokenizer(teacher_path)
    texts = load_texts(cfg.data, "train", cfg.data.max_train_examples, cfg.train.seed)
    top.start(cfg, config_file=CONFIG_FILE)
    train_ds = tokenized_texts(texts, tokenizer, cfg.train.max_length)
    collate = make_collator(tokenizer)

    results = {}
    for space, run_dir in runs:
        done = finished_run(run_dir, requires=(SUPERLM_FILE,),
                            accept=lambda m: cfg.train.max_steps > 0 and m.get("global_step") == cfg.train.max_steps
                            ) if resume else None
        if done is not None:
            results[space.name] = done
            logger.info("sub-space %s already trained in %s", space.name, run_dir)
            continue
        run = top
        if run_dir != cfg.output_dir:  # several sub-spaces: one run directory each under the output directory
            run = TrainingRun(run_dir, resume=True)
            run.start()
        with quiet_transformers():
            teacher = AutoModel.from_pretrained(teacher_path)
        superlm = SuperLM.from_teacher(teacher, cfg.layer_selection)
        module = SuperLMTrainer(superlm, space, cfg.sampling, cfg.num_random, cfg.train.seed,
                                cfg.objective.relation_heads, cfg.objective.kind, cfg.objective.mse_pairs)
        features = TeacherFeatures(teacher, cfg.objective.teacher_layer)
        extra = {
            "teacher": os.path.abspath(teacher_path) if os.path.isdir(teacher_path) else teacher_path,
            "objective": {"relation_heads": cfg.objective.relation_heads, "kind": cfg.objective.kind,
                          "mse_pairs": cfg.objective.mse_pairs, "teacher_layer": features.layer},
            "sampling": cfg.sampling, "num_random": cfg.num_random, "max_length": cfg.train.max_length,
        }

        def prepare(batch, features=features):
            batch = dict(batch)
            batch["teacher_qkv"] = features(batch)
            return batch

        def export(module, directory, space=space, extra=extra):
            save_superlm(module.superlm, directory, space, tokenizer, {**extra, "steps": int(module.step)})

        engine = Engine(cfg.train, run_dir, module, train_ds, collate, eval_datasets=None, prepare_batch=prepare,
                        frozen=[teacher], export_fn=export, resume=resume, run_name="autodistil")
        result = engine.train()
        results[space.name] = run.finish(engine, result, history=False, extra={
            "subspace": space.name, "subnets": len(space), "sampling": cfg.sampling})
    return results
