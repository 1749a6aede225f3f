"""The Distiller KD pipeline: one student, one teacher, prediction loss + hard labels + intermediate matches.

``distill(cfg)`` is what ``distiller-nlp distill`` runs. The KD objective (He et al. 2021, §A.2 of the notes)::

    L = kd_weight · ℓ_pred(z_S, z_T; T) + hard_label_weight · CE(y, z_S) + Σ_m weight_m · ℓ_m(f_S^(l_S), f_T^(l_T))

where each intermediate match ``m`` compares a student feature (hidden state of a layer, 0 = embeddings, or the
pre-softmax attention scores of a layer) with a teacher feature, through a learned projection when the widths differ
(``proj: auto|linear|none``) or through an MI-α critic (``loss: mi_alpha``). Projections and critics are trained
with the student and checkpointed with it, never exported: the exported student is a plain Hugging Face model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from distiller_nlp.config import DistillConfig, KDConfig, MatchConfig, dump_yaml
from distiller_nlp.core.capture import FeatureCapture
from distiller_nlp.core.losses import get_loss, list_losses, loss_kind
from distiller_nlp.errors import DistillerError

logger = logging.getLogger(__name__)

PRED_LOSSES = ("kd", "soft_ce", "logits_mse", "nkd", "dkd", "none")
HIDDEN_LOSSES = ("hidden_mse", "hidden_ce", "cosine", "pkd", "mi_alpha")
FEATURES = ("hidden", "attention_scores")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


@dataclass
class ResolvedMatch:
    """An intermediate match with layers checked against both models and a module key for its projection/critic."""

    layer_T: int
    layer_S: int
    feature: str
    loss: str
    weight: float
    proj: str
    params: dict
    module_key: Optional[str] = None
    emd: bool = False  # one entry of an EMD mapping's cost matrix (weighted by the transport plan, not summed)

    @property
    def name(self) -> str:
        return f"{self.loss}/S{self.layer_S}-T{self.layer_T}"


def _n_layers(config) -> int:
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers"))


def _hidden(config) -> int:
    return int(getattr(config, "hidden_size", None) or getattr(config, "dim"))


def _heads(config) -> int:
    return int(getattr(config, "num_attention_heads", None) or getattr(config, "n_heads"))


def resolve_matches(kd: KDConfig, teacher_config, student_config, source: str = "config") -> list[ResolvedMatch]:
    """Expand ``kd.mapping`` and validate ``kd.intermediate`` into concrete (teacher layer, student layer) matches."""
    from distiller_nlp.mapping import layer_mapping

    lt, ls = _n_layers(teacher_config), _n_layers(student_config)
    out: list[ResolvedMatch] = []
    known = set(list_losses())

    def check(m: MatchConfig, where: str) -> None:
        if m.feature not in FEATURES:
            raise DistillerError(f"{where}.feature '{m.feature}' in {source} must be one of {', '.join(FEATURES)}")
        if m.loss not in known:
            raise DistillerError(f"{where}.loss '{m.loss}' in {source} is not a registered loss "
                                 f"(known: {', '.join(sorted(known))})")
        # the registry says what each loss compares; a user loss registered without a kind is trusted
        if m.feature == "hidden" and loss_kind(m.loss) not in ("hidden", "any"):
            raise DistillerError(f"{where}.loss '{m.loss}' in {source} does not apply to hidden states "
                                 f"(it compares {loss_kind(m.loss)})")
        if m.feature == "attention_scores" and m.loss != "attention_score":
            raise DistillerError(f"{where}: feature attention_scores needs loss attention_score, got '{m.loss}'")
        if m.proj not in ("auto", "linear", "none"):
            raise DistillerError(f"{where}.proj '{m.proj}' in {source} must be auto, linear or none")

    for i, m in enumerate(kd.intermediate):
        where = f"kd.intermediate[{i}]"
        check(m, where)
        pairs = layer_mapping("explicit", lt, ls, feature=m.feature, pairs=[(m.layer_T, m.layer_S)])
        (t, s), = pairs
        out.append(ResolvedMatch(t, s, m.feature, m.loss, m.weight, m.proj, dict(m.params), module_key=f"m{i}"))
    if kd.mapping is not None:
        mp = kd.mapping
        as_match = MatchConfig(feature=mp.feature, loss=mp.loss, weight=mp.weight, proj=mp.proj, params=mp.params)
        check(as_match, "kd.mapping")
        if mp.strategy not in ("skip", "last", "emd"):
            raise DistillerError(f"kd.mapping.strategy '{mp.strategy}' in {source} must be skip, last or emd")
        params = {k: v for k, v in mp.params.items() if k != "emd_temperature"}
        if mp.strategy == "emd":
            # BERT-EMD: every student layer against every teacher layer (1..L), weighted by the transport plan;
            # the embeddings (hidden layer 0) are matched directly.
            if mp.feature == "hidden" and mp.include_embeddings:
                out.append(ResolvedMatch(0, 0, mp.feature, mp.loss, mp.weight, mp.proj, dict(params),
                                         module_key="mapping" if mp.loss == "mi_alpha" else "mapping_S0"))
            for s in range(1, ls + 1):
                for t in range(1, lt + 1):
                    key = "mapping" if mp.loss == "mi_alpha" else f"mapping_S{s}"
                    out.append(ResolvedMatch(t, s, mp.feature, mp.loss, mp.weight, mp.proj, dict(params),
                                             module_key=key, emd=True))
            return out
        pairs = layer_mapping(mp.strategy, lt, ls, feature=mp.feature)
        for t, s in pairs:
            if mp.feature == "hidden" and s == 0 and not mp.include_embeddings:
                continue
            # One critic shared by every layer of a mapping (as Distiller does); projections are per layer.
            key = "mapping" if mp.loss == "mi_alpha" else f"mapping_S{s}"
            out.append(ResolvedMatch(t, s, mp.feature, mp.loss, mp.weight, mp.proj, dict(params), module_key=key))
    return out


class DistillModule(nn.Module):
    """Student + projections + critics; ``forward(batch)`` computes the KD loss from the teacher outputs in ``batch``.

    The batch must hold the student inputs, ``labels`` and (when the pipeline needs a teacher) ``teacher_logits``,
    ``teacher_hidden`` ({layer: (B, seq, d_T)}) and ``teacher_qkv`` ({layer: {"q", "k", "v"}}), as produced by
    :class:`TeacherRunner` (or read from a teacher-output cache).
    """

    def __init__(self, student: nn.Module, kd: KDConfig, matches: list[ResolvedMatch], teacher_config,
                 is_regression: bool = False, general: bool = False):
        super().__init__()
        self.student = student
        self.general = general  # evaluation = held-out distillation loss (see ``predict``)
        self._eval_teacher = None
        self.kd = kd
        self.matches = matches
        self.is_regression = is_regression
        self.projections = nn.ModuleDict()
        self.critics = nn.ModuleDict()
        d_s, d_t = _hidden(student.config), _hidden(teacher_config)
        self.student_heads = _heads(student.config)
        if kd.pred_loss not in PRED_LOSSES:
            raise DistillerError(f"kd.pred_loss '{kd.pred_loss}' must be one of {', '.join(PRED_LOSSES)}")
        if is_regression and kd.pred_loss in ("kd", "soft_ce", "nkd", "dkd") and kd.kd_weight > 0:
            raise DistillerError(
                f"kd.pred_loss '{kd.pred_loss}' needs class probabilities but the task is a regression: use logits_mse"
            )
        if kd.mixup and kd.mixup_alpha <= 0:
            raise DistillerError(f"kd.mixup_alpha must be positive, got {kd.mixup_alpha}")
        self._pred_fn = None if kd.pred_loss == "none" else get_loss(kd.pred_loss)
        self._hard_fn = get_loss("hard_ce")
        self._fns = {}
        for m in matches:
            if m.loss == "mi_alpha":
                if m.module_key not in self.critics:
                    cls = get_loss("mi_alpha")
                    self.critics[m.module_key] = cls(d_s, d_t, **m.params)
            else:
                self._fns[m.loss] = get_loss(m.loss)
                if m.feature == "hidden":
                    if m.proj == "linear" or (m.proj == "auto" and d_s != d_t):
                        if m.module_key not in self.projections:
                            proj = nn.Linear(d_s, d_t)
                            nn.init.normal_(proj.weight, std=0.02)
                            nn.init.zeros_(proj.bias)
                            self.projections[m.module_key] = proj
                    elif d_s != d_t:
                        raise DistillerError(
                            f"intermediate match {m.name}: widths differ ({d_s} vs {d_t}) and proj is none"
                        )
        self.student_hidden_layers = sorted({m.layer_S for m in matches if m.feature == "hidden"})
        self.emd_student_layers = sorted({m.layer_S for m in matches if m.emd})
        self.emd_teacher_layers = sorted({m.layer_T for m in matches if m.emd})
        if self.emd_student_layers:
            self.emd_temperature = float((kd.mapping.params if kd.mapping else {}).get("emd_temperature", 1.0))
            self.emd_weight = next(m.weight for m in matches if m.emd)
            n_s, n_t = len(self.emd_student_layers), len(self.emd_teacher_layers)
            # layer weights of the transport problem: buffers, so they are checkpointed and resumed exactly
            self.register_buffer("emd_weights_s", torch.full((n_s,), 1.0 / n_s, dtype=torch.float64))
            self.register_buffer("emd_weights_t", torch.full((n_t,), 1.0 / n_t, dtype=torch.float64))
        self.student_qkv_layers = sorted({m.layer_S for m in matches if m.feature == "attention_scores"})
        from distiller_nlp.config import SCHEDULED
        from distiller_nlp.core.schedules import KINDS

        for name, sch in kd.schedules.items():
            if name not in SCHEDULED:
                raise DistillerError(f"kd.schedules.{name}: unknown schedule (known: {', '.join(SCHEDULED)})")
            if sch.kind not in KINDS:
                raise DistillerError(f"kd.schedules.{name}.kind '{sch.kind}' must be one of {', '.join(KINDS)}")
            if sch.kind != "constant" and sch.final is None:
                raise DistillerError(f"kd.schedules.{name}: kind {sch.kind} needs a final value")
            if name == "temperature" and sch.final is not None and sch.final <= 0:
                raise DistillerError(f"kd.schedules.temperature.final must be positive, got {sch.final}")
        self.progress = 0.0  # set by the engine before every step (set_progress)

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1] (global step / total steps): drives ``kd.schedules``."""
        self.progress = float(progress)

    def current(self, name: str) -> float:
        """The value of a schedulable KD hyper-parameter at the current progress."""
        from distiller_nlp.core.schedules import schedule_value

        start = 1.0 if name == "intermediate_weight" else float(getattr(self.kd, name))
        sch = self.kd.schedules.get(name)
        if sch is None:
            return start
        return schedule_value(sch.kind, start, sch.final, self.progress)

    @property
    def teacher_hidden_layers(self) -> list[int]:
        return sorted({m.layer_T for m in self.matches if m.feature == "hidden"})

    @property
    def teacher_qkv_layers(self) -> list[int]:
        return sorted({m.layer_T for m in self.matches if m.feature == "attention_scores"})

    @property
    def needs_teacher_logits(self) -> bool:
        return self._pred_fn is not None and (self.kd.kd_weight != 0 or "kd_weight" in self.kd.schedules)

    @property
    def needs_teacher(self) -> bool:
        return self.needs_teacher_logits or bool(self.matches)

    def set_eval_teacher(self, runner) -> None:
        """General distillation: the teacher runner ``predict`` uses on held-out batches (kept out of the module's
        parameters and checkpoints)."""
        object.__setattr__(self, "_eval_teacher", runner)

    def predict(self, batch: dict) -> torch.Tensor:
        """Logits of the student; in general distillation, the batch's distillation loss for each example (the
        engine's metric is then its mean, lower is better)."""
        if self.general:
            if self._eval_teacher is None:
                raise DistillerError("general distillation: no teacher for evaluation (set_eval_teacher)")
            loss = self.forward(self._eval_teacher(batch))["loss"].float()
            return loss.reshape(1, 1).expand(batch["input_ids"].shape[0], 1)
        return self.student(**model_inputs(batch)).logits

    def _pred_loss(self, logits, teacher_logits, labels, temperature: float):
        kd = self.kd
        kwargs = dict(kd.pred_loss_params)
        if kd.pred_loss in ("nkd", "dkd"):
            return self._pred_fn(logits, teacher_logits, labels, temperature=temperature, **kwargs)
        return self._pred_fn(logits, teacher_logits, temperature=temperature, **kwargs)

    def _match_loss(self, m: ResolvedMatch, cap, batch, mask):
        if m.feature == "hidden":
            h_s = cap.hidden[m.layer_S]
            h_t = batch["teacher_hidden"][m.layer_T]
            if m.loss == "mi_alpha":
                return self.critics[m.module_key](h_s, h_t, mask=mask)
            if m.module_key in self.projections:
                h_s = self.projections[m.module_key](h_s)
            return self._fns[m.loss](h_s, h_t.to(h_s.dtype), mask=mask, **m.params)
        qkv_s = cap.qkv[m.layer_S]
        qkv_t = batch["teacher_qkv"][m.layer_T]
        params = dict(m.params)
        num_heads = params.pop("num_heads", self.student_heads)
        return self._fns[m.loss](qkv_s["q"], qkv_s["k"], qkv_t["q"], qkv_t["k"], mask, num_heads=num_heads, **params)

    def forward(self, batch: dict) -> dict:
        kd = self.kd
        labels = batch["labels"]
        mixed = "mix_lambda" in batch
        inputs = mixup_inputs(self.student, batch) if mixed else model_inputs(batch)
        mask = inputs.get("attention_mask")
        with FeatureCapture(self.student, hidden_layers=self.student_hidden_layers,
                            qkv_layers=self.student_qkv_layers) as cap:
            logits = self.student(**inputs).logits
        out = {}
        total = logits.new_zeros((), dtype=torch.float32)
        temperature = self.current("temperature")
        kd_weight, hard_weight = self.current("kd_weight"), self.current("hard_label_weight")
        inter_factor = self.current("intermediate_weight")
        if self.needs_teacher_logits:
            t_logits = batch["teacher_logits"].to(logits.dtype)
            if "teacher_logits_extra" in batch:
                t_logits = ensemble_logits([t_logits] + [t.to(logits.dtype) for t in batch["teacher_logits_extra"]],
                                           temperature, average_logits=kd.pred_loss == "logits_mse")
            pred = self._pred_loss(logits, t_logits, labels, temperature)
            out[kd.pred_loss] = pred
            total = total + kd_weight * pred
        use_hard = kd.hard_label_weight != 0 or "hard_label_weight" in kd.schedules
        if use_hard and mixed:
            b, lam, perm = labels.shape[0], batch["mix_lambda"], batch["mix_perm"]
            mixed_hard = lam * self._hard_fn(logits[b:], labels) + (1 - lam) * self._hard_fn(logits[b:], labels[perm])
            hard = 0.5 * (self._hard_fn(logits[:b], labels) + mixed_hard)
            out["hard_ce"] = hard
            total = total + hard_weight * hard
        elif use_hard:
            hard = self._hard_fn(logits, labels)
            out["hard_ce"] = hard
            total = total + hard_weight * hard
        costs = {}
        for m in self.matches:
            value = self._match_loss(m, cap, batch, mask)
            if m.emd:
                costs[(m.layer_S, m.layer_T)] = value
                continue
            out[m.name] = value
            total = total + inter_factor * m.weight * value
        if costs:
            emd = self._emd_loss(costs)
            out["emd"] = emd
            total = total + inter_factor * self.emd_weight * emd
        out["loss"] = total
        return out

    def _emd_loss(self, costs: dict) -> torch.Tensor:
        """BERT-EMD: Σ_ij F_ij C_ij with F the transport plan between the layer weights for the (detached) costs;
        in training, the layer weights are then updated from the transported costs (see ``mapping``)."""
        from distiller_nlp.mapping import emd_flow, emd_update_weights

        cost = torch.stack([torch.stack([costs[(s, t)].float() for t in self.emd_teacher_layers])
                            for s in self.emd_student_layers])
        c = cost.detach().double().cpu().numpy()
        flow = emd_flow(self.emd_weights_s.cpu().numpy(), self.emd_weights_t.cpu().numpy(), c)
        loss = (torch.from_numpy(flow).to(cost) * cost).sum()
        if self.training:
            w_s, w_t = emd_update_weights(self.emd_weights_s.cpu().numpy(), self.emd_weights_t.cpu().numpy(), flow,
                                          c, self.emd_temperature)
            self.emd_weights_s.copy_(torch.from_numpy(w_s))
            self.emd_weights_t.copy_(torch.from_numpy(w_t))
        return loss


def ensemble_logits(logits: list, temperature: float, average_logits: bool = False) -> torch.Tensor:
    """Averaged soft targets of several teachers, as logits the prediction losses accept.

    Returns ``T · log( mean_k softmax(z_k / T) )``, so ``softmax(result / T)`` is exactly the teachers' mean
    probability at temperature T (what ``kd`` and ``soft_ce`` read); with ``average_logits`` (``logits_mse``, and
    regression) the plain mean of the logits. For ``nkd``/``dkd``, whose target-class terms read the teacher at
    τ = 1, the ensemble is the one at temperature T.
    """
    stacked = torch.stack([z.float() for z in logits])
    if average_logits:
        return stacked.mean(0)
    t = float(temperature)
    log_mean = torch.logsumexp(torch.log_softmax(stacked / t, dim=-1), dim=0) - torch.log(
        torch.tensor(float(len(logits))))
    return t * log_mean


def mixup_inputs(model: nn.Module, batch: dict) -> dict:
    """Model inputs for originals + MixUp copies (Distiller's MixUp, Zhang et al. 2018 on word embeddings).

    ``inputs_embeds = [E(x); λ·E(x) + (1−λ)·E(x_π)]`` in the model's own word-embedding table, with ``λ =
    batch["mix_lambda"]`` and ``π = batch["mix_perm"]``; the mixed rows attend to the union of both masks.
    """
    lam, perm = batch["mix_lambda"], batch["mix_perm"]
    emb = model.get_input_embeddings()(batch["input_ids"])
    out = {"inputs_embeds": torch.cat([emb, lam.to(emb.dtype) * emb + (1 - lam.to(emb.dtype)) * emb[perm]])}
    mask = batch["attention_mask"]
    out["attention_mask"] = torch.cat([mask, torch.maximum(mask, mask[perm])])
    if "token_type_ids" in batch:
        out["token_type_ids"] = torch.cat([batch["token_type_ids"], batch["token_type_ids"]])
    return out


class TeacherRunner:
    """``prepare_batch`` for the engine: runs the teacher once per batch (no autograd) and adds its outputs.

    With MixUp it also draws ``λ ~ Beta(α, α)`` and an in-batch permutation (from the global RNG, which checkpoints
    save and resume restores) and runs the teacher on originals + mixed copies.
    """

    def __init__(self, teacher: nn.Module, module: DistillModule, extra_teachers: Optional[list] = None):
        self.teacher = teacher
        self.extra_teachers = list(extra_teachers or [])
        self.hidden_layers = module.teacher_hidden_layers
        self.qkv_layers = module.teacher_qkv_layers
        self.mixup_alpha = module.kd.mixup_alpha if module.kd.mixup else None

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        if self.mixup_alpha:
            alpha = torch.tensor(float(self.mixup_alpha))
            batch["mix_lambda"] = torch.distributions.Beta(alpha, alpha).sample().to(batch["input_ids"].device)
            batch["mix_perm"] = torch.randperm(batch["input_ids"].shape[0]).to(batch["input_ids"].device)
            inputs = mixup_inputs(self.teacher, batch)
        else:
            inputs = model_inputs(batch)
        with FeatureCapture(self.teacher, hidden_layers=self.hidden_layers, qkv_layers=self.qkv_layers) as cap:
            logits = self.teacher(**inputs).logits
        batch["teacher_logits"] = logits
        batch["teacher_hidden"] = dict(cap.hidden)
        batch["teacher_qkv"] = dict(cap.qkv)
        if self.extra_teachers:  # their soft targets are averaged with the first teacher's (logits only)
            batch["teacher_logits_extra"] = [
                t(**(mixup_inputs(t, batch) if self.mixup_alpha else model_inputs(batch))).logits
                for t in self.extra_teachers]
        return batch


class CachedMixupRunner(TeacherRunner):
    """MixUp with a teacher cache: the originals' teacher outputs come from the cache and the teacher runs only on
    the mixed copies — half the teacher's work of :class:`TeacherRunner`, with the same λ and permutation draws
    (same RNG order), so the run matches the live one up to the cache's precision."""

    def __call__(self, batch: dict) -> dict:
        from distiller_nlp.teacher_cache import CachedTeacher

        batch = CachedTeacher()(batch)
        alpha = torch.tensor(float(self.mixup_alpha))
        batch["mix_lambda"] = torch.distributions.Beta(alpha, alpha).sample().to(batch["input_ids"].device)
        batch["mix_perm"] = torch.randperm(batch["input_ids"].shape[0]).to(batch["input_ids"].device)
        both = mixup_inputs(self.teacher, batch)
        n = batch["input_ids"].shape[0]
        mixed = {k: v[n:] for k, v in both.items()}
        with FeatureCapture(self.teacher, hidden_layers=self.hidden_layers) as cap:
            logits = self.teacher(**mixed).logits
        batch["teacher_logits"] = torch.cat([batch["teacher_logits"].to(logits.dtype), logits])
        length = batch["input_ids"].shape[1]
        hidden = {}
        for layer, cached in batch["teacher_hidden"].items():
            live = cap.hidden[layer]
            if cached.shape[1] < length:  # cached rows are padded to the longest cached example
                cached = torch.nn.functional.pad(cached, (0, 0, 0, length - cached.shape[1]))
            hidden[layer] = torch.cat([cached[:, :length].to(live.dtype), live])
        batch["teacher_hidden"] = hidden
        return batch


def check_pipeline(cfg: DistillConfig, source: str = "the recipe") -> None:
    """Validate what can be checked without loading a model: augmentation stages and their ``aug_p`` / checkpoints,
    the prediction loss, the mapping strategy, loss names and schedules (``run`` calls it for every stage before the
    first one starts, so a typo in stage 2 does not surface after an hour of stage 1)."""
    from distiller_nlp.augment import build_augmenter
    from distiller_nlp.config import SCHEDULED
    from distiller_nlp.core.schedules import KINDS

    for name in cfg.augment.stages:
        build_augmenter(name, cfg.augment.aug_p, cfg.augment.params.get(name))
    kd = cfg.kd
    if kd.pred_loss not in PRED_LOSSES:
        raise DistillerError(f"kd.pred_loss '{kd.pred_loss}' in {source} must be one of {', '.join(PRED_LOSSES)}")
    known = set(list_losses())
    losses = [m.loss for m in kd.intermediate] + ([kd.mapping.loss] if kd.mapping else [])
    for loss in losses:
        if loss not in known:
            raise DistillerError(f"intermediate loss '{loss}' in {source} is not a registered loss")
    if kd.mapping is not None and kd.mapping.strategy not in ("skip", "last", "emd"):
        raise DistillerError(f"kd.mapping.strategy '{kd.mapping.strategy}' in {source} must be skip, last or emd")
    for name, sch in kd.schedules.items():
        if name not in SCHEDULED or sch.kind not in KINDS:
            raise DistillerError(f"kd.schedules.{name} in {source}: schedules are {', '.join(SCHEDULED)}, kinds "
                                 f"{', '.join(KINDS)}")


def _setup(cfg: DistillConfig):
    """Load and validate everything a run needs (data, teacher, student, KD config), writing nothing."""
    from types import SimpleNamespace

    from accelerate.utils import set_seed

    from distiller_nlp.data import load_data_config, make_collator, tokenize_dataset
    from distiller_nlp.models import (build_student, load_teacher_for_task, load_tokenizer, parse_student_shape,
                                      resolve_model_path)
    from distiller_nlp.runs import eval_splits

    if not cfg.teacher:
        raise DistillerError("--teacher is required (a fine-tuned checkpoint: see `distiller-nlp finetune-teacher`)")
    if cfg.student_init not in ("auto", "teacher", "random"):
        raise DistillerError(f"student_init '{cfg.student_init}' must be auto, teacher or random")
    set_seed(cfg.train.seed)
    d = cfg.data
    ds, task = load_data_config(d, seed=cfg.train.seed)
    n_original = len(ds["train"])
    a = cfg.augment
    online = bool(a.stages) and (a.reaug_every > 0 or a.repeated_aug > 1)
    if a.reaug_every < 0 or a.repeated_aug < 1:
        raise DistillerError(f"augment.reaug_every must be >= 0 and augment.repeated_aug >= 1, got {a.reaug_every} "
                             f"and {a.repeated_aug}")
    if (a.reaug_every > 0 or a.repeated_aug > 1) and not a.stages:
        raise DistillerError("augment.reaug_every / augment.repeated_aug need augmentation stages (augment.stages)")
    originals = ds["train"]
    if a.stages and not online:
        import datasets

        from distiller_nlp.augment import augment_dataset

        extra = augment_dataset(ds["train"], a.stages, aug_p=a.aug_p, copies=a.copies, seed=a.seed, params=a.params)
        ds["train"] = datasets.concatenate_datasets([ds["train"], extra])
        logger.info("augmentation %s: %d original + %d augmented training examples", "+".join(a.stages),
                    n_original, len(extra))
    teacher_path = resolve_model_path(cfg.teacher)
    if cfg.general:
        kd = cfg.kd
        if (kd.pred_loss != "none" and kd.kd_weight) or kd.hard_label_weight or kd.mixup:
            raise DistillerError("general (task-agnostic) distillation uses intermediate matches only: set "
                                 "kd.pred_loss none, kd.hard_label_weight 0 and kd.mixup false")
        if not kd.intermediate and kd.mapping is None:
            raise DistillerError("general distillation needs intermediate matches (kd.intermediate or kd.mapping)")
        if cfg.teachers:
            raise DistillerError("general distillation takes one teacher")
        from distiller_nlp.models import load_backbone_for_finetune

        # any encoder: its classifier (new or not) is never used
        teacher = load_backbone_for_finetune(teacher_path, task, trust_remote_code=cfg.trust_remote_code).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    else:
        teacher = load_teacher_for_task(teacher_path, task, trust_remote_code=cfg.trust_remote_code)
    tokenizer = load_tokenizer(teacher_path, trust_remote_code=cfg.trust_remote_code)
    extra_teachers = []
    for name in cfg.teachers:
        path = resolve_model_path(name)
        other_tok = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
        if other_tok.get_vocab() != tokenizer.get_vocab():
            raise DistillerError(f"teacher {name} uses another vocabulary than {cfg.teacher}: several teachers must "
                                 "share one tokenizer")
        extra_teachers.append(load_teacher_for_task(path, task, trust_remote_code=cfg.trust_remote_code))
    shape = None if cfg.student else parse_student_shape(cfg.student_shape)
    student = build_student(teacher, shape=shape, student=cfg.student or None, init=cfg.student_init, task=task,
                            seed=cfg.train.seed)
    matches = resolve_matches(cfg.kd, teacher.config, student.config, source="the KD config")
    module = DistillModule(student, cfg.kd, matches, teacher.config, is_regression=task.is_regression,
                           general=cfg.general)
    if cfg.kd.mixup and not module.needs_teacher:
        raise DistillerError("kd.mixup needs a KD loss (the teacher labels the mixed examples): set kd.pred_loss")
    if extra_teachers and not module.needs_teacher_logits:
        raise DistillerError("several teachers average their soft targets: set kd.pred_loss and kd.kd_weight")
    tok = tokenize_dataset(ds, tokenizer, max_length=cfg.train.max_length)
    train_set = tok["train"]
    if online:
        from distiller_nlp.augment import augment_dataset, build_augmenter
        from distiller_nlp.augment.online import AugmentedTrainSet, round_seed

        for name in a.stages:  # validate stages and aug_p now, not at the first epoch
            build_augmenter(name, a.aug_p, a.params.get(name))
        copies = a.repeated_aug - 1 if a.repeated_aug > 1 else a.copies

        def make_round(r: int):
            aug = augment_dataset(originals, a.stages, aug_p=a.aug_p, copies=copies, seed=round_seed(a.seed, r),
                                  params=a.params)
            return tokenize_dataset(aug, tokenizer, max_length=cfg.train.max_length)

        train_set = AugmentedTrainSet(tok["train"], make_round, copies, reaug_every=a.reaug_every,
                                      repeated_aug=a.repeated_aug)
        logger.info("augmentation %s: %d original + %d augmented training examples, regenerated every %s epochs%s",
                    "+".join(a.stages), n_original, n_original * copies, a.reaug_every or "∞",
                    f", {a.repeated_aug} versions of each example per batch" if a.repeated_aug > 1 else "")
    from distiller_nlp.teacher_cache import DTYPES

    if cfg.teacher_cache_dtype not in DTYPES:
        raise DistillerError(f"teacher_cache_dtype '{cfg.teacher_cache_dtype}' must be one of {', '.join(DTYPES)}")
    return SimpleNamespace(cache_dtype=cfg.teacher_cache_dtype, n_original=n_original, task=task, raw=ds,
                           raw_train=originals,
                           teacher_path=teacher_path, teacher=teacher, extra_teachers=extra_teachers,
                           tokenizer=tokenizer, train_set=train_set, online_augment=online,
                           student=student, module=module, tok=tok, evals=eval_splits(tok, task),
                           collate=make_collator(tokenizer, is_regression=task.is_regression))


def _cache_problem(run) -> Optional[str]:
    """Why this pipeline cannot read the teacher from a cache (None if it can)."""
    if run.module.teacher_qkv_layers:
        return "attention_scores matches need the teacher's q/k, which are not cached"
    if run.extra_teachers:
        return "several teachers are averaged live"
    if run.online_augment:
        return "augmented copies change during training (augment.reaug_every / augment.repeated_aug)"
    if getattr(run.tokenizer, "padding_side", "right") != "right":
        return "the tokenizer pads on the left"
    return None


def _cache_key_for(run) -> str:
    from distiller_nlp.teacher_cache import cache_key, teacher_fingerprint

    return cache_key(teacher_fingerprint(run.teacher_path), run.tok["train"]._fingerprint,
                     run.module.teacher_hidden_layers, dtype=run.cache_dtype)


def _cached_train_set(cfg: DistillConfig, run):
    """The training set with cached teacher columns, or None to run the teacher live (see ``teacher_cache``)."""
    from distiller_nlp import teacher_cache as tc

    mode = cfg.teacher_cache or "off"
    if mode == "off" or not run.module.needs_teacher:
        return None
    problem = _cache_problem(run)
    if problem and mode != "auto":
        raise DistillerError(f"teacher_cache {mode}: {problem}")
    if problem:
        logger.info("teacher cache off: %s", problem)
        return None
    try:
        key = _cache_key_for(run)
    except DistillerError as exc:
        if mode != "auto":
            raise
        logger.info("teacher cache off: %s", exc)
        return None
    if mode != "auto":
        return tc.as_cached_format(tc.load_teacher_cache(mode, key))
    from accelerate import PartialState

    from distiller_nlp.data import cache_dir

    state = PartialState()
    target = cache_dir() / "teacher_outputs" / key
    target.mkdir(parents=True, exist_ok=True)
    with state.main_process_first():
        run.teacher.to(state.device)
        ds = tc.compute_teacher_outputs(run.tok["train"], run.teacher, key, run.module.teacher_hidden_layers,
                                        pad_token_id=run.tokenizer.pad_token_id,
                                        cache_file=str(target / "train.arrow"), dtype=run.cache_dtype)
    return tc.as_cached_format(ds)


def cache_teacher(cfg: DistillConfig, output_dir: str, overwrite: bool = False) -> dict:
    """Compute the teacher outputs the KD config ``cfg`` needs on its training set and save them to ``output_dir``.

    ``distill`` with ``teacher_cache: DIR`` then reads them instead of running the teacher, after checking that the
    cache was computed for the same teacher, data and layers. Returns ``{"key", "examples", "hidden_layers"}``.
    """
    from distiller_nlp import teacher_cache as tc
    from distiller_nlp.runs import check_output_dir

    check_output_dir(output_dir, overwrite=overwrite)
    run = _setup(cfg)
    problem = _cache_problem(run)
    if problem:
        raise DistillerError(f"cannot cache the teacher for this KD config: {problem}")
    key = _cache_key_for(run)
    layers = run.module.teacher_hidden_layers
    ds = tc.compute_teacher_outputs(run.tok["train"], run.teacher, key, layers,
                                    pad_token_id=run.tokenizer.pad_token_id, dtype=run.cache_dtype)
    tc.save_teacher_cache(ds, output_dir, key, run.teacher_path, layers)
    return {"key": key, "examples": len(ds), "hidden_layers": layers}


def distill(cfg: DistillConfig, resume: bool = False, overwrite: bool = False, on_evaluate=None,
            record_source: str = "distill") -> dict:
    """Distil ``cfg.teacher`` into a student on ``cfg.data.task``; returns (and writes) ``metrics.json``.

    Everything is validated before the output directory is touched: the data (columns, labels, non-empty splits),
    the teacher (its classifier must match the task's labels — fine-tune it first otherwise), the student (shape,
    init), the KD config (loss names, layer indices). The output directory then receives the student
    (``save_pretrained`` + tokenizer; loads with ``AutoModelForSequenceClassification.from_pretrained(DIR)``),
    ``metrics.json``, ``config.yaml``, ``checkpoints/`` (for ``--resume``) and TensorBoard logs.
    ``cfg.teacher_cache``: ``off`` (run the teacher every step), ``auto`` (compute its outputs once, cached by
    teacher + data + layers, whenever the pipeline allows) or a directory written by :func:`cache_teacher`.
    """
    from distiller_nlp.core.engine import Engine
    from distiller_nlp.core.flops import encoder_flops_from_config
    from distiller_nlp.models import describe_model, save_student
    from distiller_nlp.runs import (check_output_dir, create_output_dir, is_main_process, promote_best, task_metric_fn,
                                    write_json_atomic)

    out_dir = cfg.output_dir
    t_wall = time.perf_counter()
    check_output_dir(out_dir, resume=resume, overwrite=overwrite)
    if cfg.meta_dataset:
        from distiller_nlp.metadataset import check_meta_path

        check_meta_path(cfg.meta_dataset)
    run = _setup(cfg)
    teacher, student, module, task, tokenizer = run.teacher, run.student, run.module, run.task, run.tokenizer
    t_cache = time.perf_counter()
    cached = _cached_train_set(cfg, run)
    t_cache = time.perf_counter() - t_cache

    create_output_dir(out_dir, overwrite=overwrite)
    if is_main_process():
        dump_yaml(cfg, os.path.join(out_dir, "config.yaml"))

    def export(mod, directory):
        save_student(mod.student, tokenizer, directory)

    if cached is not None:
        from distiller_nlp.teacher_cache import CachedTeacher

        runner, train_set, frozen = CachedTeacher(), cached, []
        if module.kd.mixup:  # originals from the cache, the teacher live on the mixed copies only
            runner, frozen = CachedMixupRunner(teacher, module), [teacher]
    else:
        runner = TeacherRunner(teacher, module, run.extra_teachers) if module.needs_teacher else None
        train_set, frozen = run.train_set, [teacher, *run.extra_teachers]
    metric_fn, main_metric, greater = task_metric_fn(task), task.main_metric, True
    if cfg.general:
        module.set_eval_teacher(TeacherRunner(teacher, module))
        frozen = [teacher]

        def metric_fn(preds, labels):
            return {"distill_loss": float(preds.mean())}

        main_metric, greater = "distill_loss", False
    engine = Engine(cfg.train, out_dir, module, train_set, run.collate, eval_datasets=run.evals,
                    compute_metrics=metric_fn, main_metric=main_metric, greater_is_better=greater,
                    prepare_batch=runner, frozen=frozen, export_fn=export, resume=resume, run_name="distill",
                    on_evaluate=on_evaluate)
    result = engine.train()
    metrics = dict(result.metrics)
    if engine.accelerator.is_main_process:
        s_info = describe_model(student, seq_len=cfg.train.max_length)
        t_info = describe_model(teacher, seq_len=cfg.train.max_length)
        metrics.update({f"student_{k}": v for k, v in s_info.items()})
        metrics.update({f"teacher_{k}": v for k, v in t_info.items()})
        metrics["flops_ratio"] = round(encoder_flops_from_config(student.config, 128)
                                       / encoder_flops_from_config(teacher.config, 128), 4)
        metrics["train_examples"] = len(run.train_set)
        metrics["train_examples_original"] = run.n_original
        metrics["teacher_cached"] = cached is not None
        metrics["teacher_cache_s"] = round(t_cache, 3) if cached is not None else 0.0  # computing or loading it
        promote_best(out_dir)
        write_json_atomic(os.path.join(out_dir, "history.json"), {"train": result.log_history, "eval": result.history})
        write_json_atomic(os.path.join(out_dir, "metrics.json"), metrics)
        if cfg.meta_dataset and not cfg.general:
            from distiller_nlp.metadataset import record_run

            record_run(cfg, run, metrics, wall_s=time.perf_counter() - t_wall, source=record_source)
    engine.accelerator.wait_for_everyone()
    return metrics
