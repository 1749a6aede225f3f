"""The trainable module of a distillation run: student + projections + MI critics, and the KD objective.

    L = kd_weight · ℓ_pred(z_S, z_T; T) + hard_label_weight · CE(y, z_S) + Σ_m weight_m · ℓ_m(f_S^(l_S), f_T^(l_T))

(He et al. 2021, §A.2 of the notes), where each intermediate match ``m`` compares a student feature (hidden state of a
layer, 0 = embeddings, or the pre-softmax attention scores of a layer) with a teacher feature, through a learned
projection when the widths differ (``proj: auto|linear|none``) or through an MI-α critic (``loss: mi_alpha``).
Projections and critics are trained with the student and checkpointed with it, never exported: the exported student
is a plain Hugging Face model.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from distiller_nlp.config import KDConfig
from distiller_nlp.core.capture import FeatureCapture
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import LOSSES, get_loss, loss_takes, prediction_losses
from distiller_nlp.kd.ensemble import ensemble_logits
from distiller_nlp.kd.matches import ResolvedMatch, config_heads, config_hidden, emd_options
from distiller_nlp.kd.mixup import mixup_inputs
from distiller_nlp.tasks import model_inputs

logger = logging.getLogger(__name__)

def check_prediction_loss(name: str, source: str = "the KD config", is_regression: bool = False) -> None:
    """``kd.pred_loss`` must be a prediction loss of the registry (or ``none``); a loss that compares class
    probabilities needs a classification task."""
    known = [*prediction_losses(), "none"]
    if name not in known:
        raise DistillerError(f"kd.pred_loss '{name}' in {source} must be one of {', '.join(known)}")
    if is_regression and name != "none" and LOSSES.meta(name).get("probabilities"):
        others = [n for n in prediction_losses() if not LOSSES.meta(n).get("probabilities")]
        raise DistillerError(f"kd.pred_loss '{name}' needs class probabilities but the task is a regression: use "
                             f"{' or '.join(others)}")


def pool_hidden(hidden: torch.Tensor, mask, how: str) -> torch.Tensor:
    """Sequence-level view of hidden states (B, T, d) → (B, 1, d): the first token (``cls``) or the mean over the
    tokens where ``mask`` is 1 (``mean``; all tokens without a mask). A mask longer or shorter than ``hidden`` (cached
    teacher rows are padded to the batch's longest cached example) is cut to the common length."""
    if how == "cls":
        return hidden[:, :1]
    if how != "mean":
        raise DistillerError(f"unknown pooling '{how}' (none, cls, mean)")
    if mask is None:
        return hidden.mean(dim=1, keepdim=True)
    n = min(hidden.shape[1], mask.shape[1])
    w = mask[:, :n].to(hidden.dtype).unsqueeze(-1)
    return (hidden[:, :n] * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1.0)


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
        # general distillation never uses the student's pooler / classifier: DDP must expect unused parameters
        self.has_unused_parameters = bool(general)
        self._eval_teacher = None
        from distiller_nlp.config import resolve_kd_defaults

        kd = resolve_kd_defaults(kd)  # unset temperature / CE weight / warm-up: the prediction loss's paper values
        self.kd = kd
        self.matches = matches
        self.is_regression = is_regression
        self.projections = nn.ModuleDict()
        self.critics = nn.ModuleDict()
        d_s, d_t = config_hidden(student.config), config_hidden(teacher_config)
        self.student_heads = config_heads(student.config)
        check_prediction_loss(kd.pred_loss, is_regression=is_regression and kd.kd_weight > 0)
        if kd.mixup and kd.mixup_alpha <= 0:
            raise DistillerError(f"kd.mixup_alpha must be positive, got {kd.mixup_alpha}")
        has_pred = kd.pred_loss != "none" and (kd.kd_weight != 0 or "kd_weight" in kd.schedules)
        has_hard = kd.hard_label_weight != 0 or "hard_label_weight" in kd.schedules
        if not (has_pred or has_hard or any(m.weight != 0 for m in matches)):
            raise DistillerError(f"every loss weight is 0 (kd.kd_weight {kd.kd_weight}, kd.hard_label_weight "
                                 f"{kd.hard_label_weight}, {len(matches)} intermediate match(es)): nothing to train")
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
            emd_loss = next(m.loss for m in matches if m.emd)
            self.emd_rule, self.emd_temperature = emd_options(kd.mapping.params if kd.mapping else {}, emd_loss)
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
        value = start if sch is None else schedule_value(sch.kind, start, sch.final, self.progress)
        if name == "kd_weight" and self.kd.kd_warmup:  # DKD's linear warm-up: min(progress / warm-up, 1)
            value *= min(self.progress / self.kd.kd_warmup, 1.0)
        return value

    @property
    def teacher_hidden_layers(self) -> list[int]:
        """Teacher layers whose hidden states the matches read."""
        return sorted({m.layer_T for m in self.matches if m.feature == "hidden"})

    @property
    def teacher_qkv_layers(self) -> list[int]:
        """Teacher layers whose queries/keys the attention matches read."""
        return sorted({m.layer_T for m in self.matches if m.feature == "attention_scores"})

    @property
    def needs_teacher_logits(self) -> bool:
        """Whether the prediction loss needs the teacher's logits."""
        return self._pred_fn is not None and (self.kd.kd_weight != 0 or "kd_weight" in self.kd.schedules)

    @property
    def needs_teacher(self) -> bool:
        """Whether anything in the objective needs the teacher."""
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

    def _pred_loss(self, logits, teacher_logits, labels, temperature: float, mix=None):
        """The prediction-layer loss. ``mix = (λ, π)`` when the batch is MixUp's originals + mixed copies (2B logit
        rows for B labels): a loss without labels sees all 2B rows against the teacher's 2B rows (the teacher ran on
        the mixed inputs too); a loss that takes labels (NKD, DKD: the gold label picks the target class) gets, like
        the hard-label term of :meth:`forward`, ``½·[ℓ(orig, y) + λ·ℓ(mixed, y) + (1−λ)·ℓ(mixed, y_π)]`` — the mean
        over the 2B rows, each mixed row λ-weighted over its two labels instead of one dominant label."""
        kd = self.kd
        kwargs = dict(kd.pred_loss_params)
        if "labels" not in loss_takes(kd.pred_loss):
            return self._pred_fn(logits, teacher_logits, temperature=temperature, **kwargs)
        if mix is None:
            return self._pred_fn(logits, teacher_logits, labels, temperature=temperature, **kwargs)
        lam, perm = mix
        b = labels.shape[0]

        def loss(rows: slice, y):
            return self._pred_fn(logits[rows], teacher_logits[rows], y, temperature=temperature, **kwargs)

        mixed = lam * loss(slice(b, None), labels) + (1 - lam) * loss(slice(b, None), labels[perm])
        return 0.5 * (loss(slice(None, b), labels) + mixed)

    def _match_loss(self, m: ResolvedMatch, cap, batch, mask):
        if m.feature == "hidden":
            h_s = cap.hidden[m.layer_S]
            h_t = batch["teacher_hidden"][m.layer_T]
            if m.pool != "none":  # one vector per sequence: each side pooled over its own tokens
                h_s = pool_hidden(h_s, mask, m.pool)
                h_t = pool_hidden(h_t, batch.get("teacher_attention_mask", mask), m.pool)
                mask = None
            if m.loss == "mi_alpha":
                return self.critics[m.module_key](h_s, h_t, mask=mask)
            if m.module_key in self.projections:
                h_s = self.projections[m.module_key](h_s)
            return self._fns[m.loss](h_s.float(), h_t.float(), mask=mask, **m.params)  # fp32 losses
        qkv_s = cap.qkv[m.layer_S]
        qkv_t = batch["teacher_qkv"][m.layer_T]
        params = dict(m.params)
        num_heads = params.pop("num_heads", self.student_heads)
        return self._fns[m.loss](qkv_s["q"], qkv_s["k"], qkv_t["q"], qkv_t["k"], mask, num_heads=num_heads, **params)

    def forward(self, batch: dict) -> dict:
        """The KD loss of a batch holding the teacher outputs: ``{"loss": total, <term name>: value, ...}``."""
        kd = self.kd
        labels = batch["labels"]
        mixed = "mix_lambda" in batch
        inputs = mixup_inputs(self.student, batch) if mixed else model_inputs(batch)
        mask = inputs.get("attention_mask")
        with FeatureCapture(self.student, hidden_layers=self.student_hidden_layers,
                            qkv_layers=self.student_qkv_layers) as cap:
            logits = self.student(**inputs).logits
        logits = logits.float()  # the losses accumulate in fp32 whatever the autocast dtype (bf16 logits otherwise)
        out = {}
        total = logits.new_zeros((), dtype=torch.float32)
        temperature = self.current("temperature")
        kd_weight, hard_weight = self.current("kd_weight"), self.current("hard_label_weight")
        inter_factor = self.current("intermediate_weight")
        if self.needs_teacher_logits:
            t_logits = batch["teacher_logits"].float()
            if "teacher_logits_extra" in batch:
                t_logits = ensemble_logits([t_logits] + [t.float() for t in batch["teacher_logits_extra"]],
                                           temperature,
                                           average_logits=not LOSSES.meta(kd.pred_loss).get("probabilities"))
            mix = (batch["mix_lambda"], batch["mix_perm"]) if mixed else None
            pred = self._pred_loss(logits, t_logits, labels, temperature, mix=mix)
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
        in training, the layer weights are then updated from the transported costs by ``kd.mapping.params.
        emd_weights`` (``bert_emd``: cost attention, scale-invariant; ``uniform``: fixed, as Distiller runs it; see
        :func:`distiller_nlp.kd.mapping.emd_update_weights`)."""
        from distiller_nlp.core.distributed import all_reduce_mean
        from distiller_nlp.kd.mapping import emd_flow, emd_update_weights

        cost = torch.stack([torch.stack([costs[(s, t)].float() for t in self.emd_teacher_layers])
                            for s in self.emd_student_layers])
        # Several processes: the mean of every rank's costs (= the global batch's), so all ranks solve the same
        # transport problem and keep identical layer weights (DDP would otherwise overwrite them with rank 0's).
        # The plan is a small linear program solved on the host: one L_S x L_T copy per step, by design.
        c = all_reduce_mean(cost.detach().double()).cpu().numpy()
        flow = emd_flow(self.emd_weights_s.cpu().numpy(), self.emd_weights_t.cpu().numpy(), c)
        loss = (torch.from_numpy(flow).to(cost) * cost).sum()
        if self.training and self.emd_rule != "uniform":  # uniform (Distiller): the weights never change
            w_s, w_t = emd_update_weights(self.emd_weights_s.cpu().numpy(), self.emd_weights_t.cpu().numpy(), flow,
                                          c, self.emd_temperature, rule=self.emd_rule)
            self.emd_weights_s.copy_(torch.from_numpy(w_s))
            self.emd_weights_t.copy_(torch.from_numpy(w_t))
        return loss


