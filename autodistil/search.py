"""Student search under a FLOPs budget, scoring subnets inherited from trained SuperLMs (no retraining).

``task-agnostic`` score (the default, AutoDistil's fully task-agnostic search): the held-out MiniLMv2 relation loss
of the subnet against the teacher on unlabelled text (lower is better). ``task-proxy``: minus the validation metric
of the inherited subnet after a short fine-tune on k labelled examples per class of a target task. The teacher's
relations on the held-out set are computed once and reused for every candidate (:class:`HeldOutScorer`: sequences
bucketed by length, only the last layer's q/k/v computed, shared layer prefixes, no autograd; same scores as the
straightforward :class:`ReferenceHeldOutScorer`). Candidates come from every given SuperLM; those whose FLOPs
(encoder, one sequence of ``max_length`` tokens, in ``flops_convention``: ``exact`` = 2 × the real multiply-adds,
``autodistil`` = multiply-adds by AutoDistil's formula, see :mod:`distiller_nlp.core.flops`) exceed the budget
are never scored; the budget, the teacher's count behind ``budget_ratio`` and every reported FLOPs number are in
that same convention. Up to ``max_evals`` fitting candidates per SuperLM are scored exhaustively; larger spaces are
searched with Optuna's TPE sampler for ``max_evals`` trials.

The held-out score is padding-independent by design, whatever the SuperLM was trained with: ``kind="mse"`` (the
default, as in training) is averaged over the (query, key) pairs of real tokens only (``mse_pairs="valid"`` of the
shared relation loss), ``kind="kl"`` over real query rows with padded keys out of the softmax. SuperLM training
defaults to AutoDistil's released-code MSE, the mean over *every* entry of the padded batch (``mse_pairs="all"``,
:mod:`distiller_nlp.core.losses.relations`), but that mean changes with how much padding a sequence shares a batch
with: it cannot be a score of a sequence, and the fast scorer's re-bucketing by length (which cuts trailing padding)
could not reproduce it. So the search keeps the real-token reduction; its ``objective`` section therefore has no
``mse_pairs`` key (:class:`autodistil.config.RelationConfig`). The paper ranks candidates by the task-agnostic
distillation loss on held-out data; the released code has no task-agnostic ranking script to match.

Writes ``candidates.csv`` (every candidate with FLOPs, params, whether it fits, score if scored), ``pareto.png``
(FLOPs vs score, Pareto front, budget), ``student/`` (the chosen subnet extracted; loads with ``from_pretrained``)
and ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import scaled_scores
from distiller_nlp.core.rundir import write_text_atomic
from distiller_nlp.tasks import MODEL_INPUTS

from .config import SearchConfig
from .subspaces import Arch, SubSpace
from .superlm import SUPERLM_FILE, load_superlm

logger = logging.getLogger(__name__)

__all__ = ["Candidate", "find_superlms", "search", "resolve_budget", "pareto_front", "HeldOutScorer",
           "ReferenceHeldOutScorer"]


@dataclass
class Candidate:
    """One subnet of one SuperLM: its FLOPs (one sequence, in the search's FLOPs convention) and parameters, whether
    it fits the budget, and its score once scored (lower is better)."""

    superlm: str
    subspace: str
    arch: Arch
    flops: int
    params: int
    fits: bool
    score: Optional[float] = None

    def row(self) -> dict:
        """The candidate's ``candidates.csv`` row (score with 6 significant digits, empty when not scored)."""
        a = self.arch
        return {"superlm": self.superlm, "subspace": self.subspace, "layers": a.layers, "hidden": a.hidden,
                "heads": a.heads, "mlp_ratio": a.mlp_ratio, "head_dim": a.head_dim, "intermediate": a.intermediate,
                "plain_bert": a.is_plain_bert, "flops": self.flops, "params": self.params,
                "fits_budget": self.fits, "score": "" if self.score is None else f"{self.score:.6g}"}


def find_superlms(paths: list[str]) -> list[str]:
    """SuperLM directories: each path is one (has ``superlm.json``) or holds SuperLMs in its sub-directories."""
    out: list[str] = []
    for path in paths:
        if os.path.isfile(os.path.join(path, SUPERLM_FILE)):
            out.append(path)
            continue
        if not os.path.isdir(path):
            raise DistillerError(f"--superlm {path}: no such directory")
        subs = sorted(os.path.join(path, d) for d in os.listdir(path)
                      if os.path.isfile(os.path.join(path, d, SUPERLM_FILE)))
        if not subs:
            raise DistillerError(f"--superlm {path} holds no SuperLM ({SUPERLM_FILE} missing; train one with "
                                 "`autodistil train-superlm`)")
        out += subs
    return out


def _read_meta(path: str) -> dict:
    with open(os.path.join(path, SUPERLM_FILE), encoding="utf-8") as fh:
        meta = json.load(fh)
    if not meta.get("space"):
        raise DistillerError(f"SuperLM {path} records no sub-space in {SUPERLM_FILE}")
    return meta


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (FLOPs, score), both minimised; sorted by FLOPs."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


class ReferenceHeldOutScorer:
    """The straightforward scorer, the reference the fast :class:`HeldOutScorer` is tested and benchmarked against:
    for every candidate, the full active subnet runs on the held-out batches as collated, its last layer's
    q/k/v are captured with hooks and the shared ``relation`` loss recomputes the teacher's relations each time.
    Score = mean over batches (weighted by batch size) of the batch's relation loss, with ``mse`` averaged over
    real-token pairs (``mse_pairs="valid"``; see the module docstring)."""

    def __init__(self, teacher, batches: list[dict], teacher_layer: int, relation_heads: int, kind: str,
                 autocast_bf16: bool = False):
        from .objective import TeacherFeatures

        self.batches = batches
        self.relation_heads = relation_heads
        self.kind = kind
        self.autocast_bf16 = autocast_bf16
        features = TeacherFeatures(teacher, teacher_layer)
        self.teacher_layer = features.layer
        with torch.no_grad(), _autocast(autocast_bf16):
            self.teacher_qkv = [features(b) for b in batches]

    @torch.no_grad()
    def __call__(self, superlm, arch: Arch) -> float:
        """Held-out relation loss of ``arch`` inherited from ``superlm`` (lower is better)."""
        from .objective import subnet_relation_loss

        superlm.set_active(arch)
        total, n = 0.0, 0
        with _autocast(self.autocast_bf16):
            for batch, tq in zip(self.batches, self.teacher_qkv):
                size = int(batch["input_ids"].shape[0])
                loss = subnet_relation_loss(superlm, batch, tq, self.relation_heads, self.kind, mse_pairs="valid")
                total += float(loss) * size
                n += size
        return total / max(1, n)

    def score_many(self, superlm, archs) -> dict:
        """``{arch: score}``, one candidate after the other."""
        return {arch: self(superlm, arch) for arch in archs}


class HeldOutScorer:
    """Held-out relation loss of inherited subnets; the same score as :class:`ReferenceHeldOutScorer` (to float
    rounding), computed without waste:

    - the teacher's relations (log-softmax and probabilities for ``kl``, pre-softmax scores for ``mse``) on the
      held-out set are computed once, not per candidate;
    - held-out sequences are re-bucketed by length (trailing padding cut), so a candidate's forward and its S×S
      relations run on ~real tokens; each sequence keeps the weight it had in its collated batch
      (``batch size / (valid rows (kl) or valid pairs (mse) of that batch × relation heads × N)``), so the score equals
      the reference's batch-size-weighted mean of per-batch losses;
    - only what the score needs runs: the kept layers before the last one, then the last layer's q/k/v projections;
    - candidates that share hidden size, heads and FFN width share every common prefix of their kept layers
      (:meth:`score_many`), e.g. with ``uniform`` selection from 6 layers, L=4 keeps 0,1,3,4 and L=5 0,1,2,3,4;
    - no autograd (``torch.inference_mode``), nothing extracted, nothing re-tokenized per candidate.

    The relations are those of the shared relation loss (:func:`distiller_nlp.core.losses.relation_loss`): the same
    :func:`~distiller_nlp.core.losses.scaled_scores` per relation head, padded keys masked out of the softmax (``kl``)
    or padded pairs out of the squared error (``mse``); only the reduction differs (per sequence, with its weight,
    instead of per collated batch).
    """

    def __init__(self, teacher, batches: list[dict], teacher_layer: int, relation_heads: int, kind: str,
                 autocast_bf16=False, bucket_size: int = 32, device=None):
        from .objective import TeacherFeatures

        if kind not in ("kl", "mse"):
            raise DistillerError(f"relation kind must be 'kl' or 'mse', got {kind!r}")
        self.relation_heads = int(relation_heads)
        self.kind = kind
        self.autocast_bf16 = autocast_bf16
        features = TeacherFeatures(teacher, teacher_layer)
        self.teacher_layer = features.layer
        self.device = torch.device(device) if device is not None else next(teacher.parameters()).device
        self.buckets = [_bucket_to(bk, self.device)
                        for bk in _length_buckets(batches, kind, self.relation_heads, max(1, int(bucket_size)))]
        for bk in self.buckets:
            with torch.inference_mode(), _autocast(autocast_bf16, self.device.type):
                tq = {k: v.float() for k, v in features(bk["inputs"]).items()}
            bk["teacher"] = {}
            with torch.inference_mode():  # relations in fp32
                for name in ("q", "k", "v"):
                    r_t = self._relations(tq[name], "relation (teacher)")
                    if kind == "kl":
                        log_p_t = _masked_log_softmax(r_t, bk["key_valid"])
                        # zero rows of padded queries; padded keys have p = exp(min - lse) = 0 already
                        p_t = (log_p_t.exp() * bk["query_valid"]).contiguous()
                        bk["teacher"][name] = (log_p_t, p_t)
                    else:
                        bk["teacher"][name] = r_t.masked_fill(~bk["pair_valid"], 0.0)

    def __call__(self, superlm, arch: Arch) -> float:
        """Held-out relation loss of ``arch`` inherited from ``superlm`` (lower is better)."""
        return self.score_many(superlm, [arch])[arch]

    def score_many(self, superlm, archs) -> dict:
        """``{arch: score}`` for candidates of one SuperLM (groups of equal widths share layer prefixes)."""
        from .superlm import layer_map

        groups: dict = {}
        for arch in archs:
            groups.setdefault((arch.hidden, arch.heads, arch.intermediate, arch.head_dim), []).append(arch)
        totals = {arch: 0.0 for arch in archs}
        was_training = superlm.training
        superlm.eval()
        try:
            with torch.inference_mode(), _autocast(self.autocast_bf16, self.device.type):
                for members in groups.values():
                    superlm.set_active(members[0])
                    maps = {a: layer_map(a.layers, superlm.max_layers, superlm.layer_selection) for a in members}
                    for bk in self.buckets:
                        inputs = bk["inputs"]
                        x = superlm.embeddings(inputs["input_ids"], inputs.get("token_type_ids"))
                        mask = torch.zeros(bk["key_valid"].shape, dtype=x.dtype, device=x.device).masked_fill(
                            ~bk["key_valid"], torch.finfo(x.dtype).min)
                        states = {(): x}

                        def state(prefix: tuple):
                            if prefix not in states:
                                states[prefix] = superlm.encoder.layer[prefix[-1]](state(prefix[:-1]), mask)
                            return states[prefix]

                        for arch in sorted(members, key=lambda a: a.layers):
                            kept = maps[arch]
                            h = state(tuple(kept[:-1]))
                            sa = superlm.encoder.layer[kept[-1]].attention.self
                            qkv = {"q": sa.query(h), "k": sa.key(h), "v": sa.value(h)}
                            with torch.autocast(x.device.type, enabled=False):  # relations in fp32
                                totals[arch] += self._bucket_score(bk, qkv)
        finally:
            superlm.train(was_training)
        return {arch: float(v) for arch, v in totals.items()}

    def _relations(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """fp32 relations ``(B, relation heads, S, S)`` of one projection output, as the shared relation loss forms
        them (width truncated to a multiple of the relation heads)."""
        return scaled_scores(x, x, self.relation_heads, truncate=True, what=what)

    def _bucket_score(self, bk: dict, qkv: dict) -> torch.Tensor:
        """Σ over the bucket's sequences of weight × (sum of the relation terms of the sequence)."""
        per_seq = None
        batch = bk["key_valid"].shape[0]
        for name in ("q", "k", "v"):
            r_s = self._relations(qkv[name], "relation (student)")
            if self.kind == "kl":
                diff = _masked_log_softmax(r_s, bk["key_valid"])
                log_p_t, p_t = bk["teacher"][name]
                torch.sub(log_p_t, diff, out=diff)  # log p_t − log p_s (finite: both are ~min at padded keys)
                term = torch.bmm(p_t.reshape(batch, 1, -1), diff.reshape(batch, -1, 1)).view(batch).double()
            else:
                r_s.masked_fill_(~bk["pair_valid"], 0.0).sub_(bk["teacher"][name])
                flat = r_s.reshape(batch, 1, -1)
                term = torch.bmm(flat, flat.transpose(1, 2)).view(batch).double()
            per_seq = term if per_seq is None else per_seq + term
        return (per_seq * bk["weight"]).sum()  # stays on the device: one host sync per candidate, at the end


def _bucket_to(bk: dict, device) -> dict:
    """A length bucket with every tensor (and its ``inputs``) on ``device``."""
    out = {}
    for k, v in bk.items():
        if torch.is_tensor(v):
            v = v.to(device)
        elif k == "inputs":
            v = {n: t.to(device) if torch.is_tensor(t) else t for n, t in v.items()}
        out[k] = v
    return out


def _masked_log_softmax(scores: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Log-softmax over keys with padded keys set to the dtype's minimum first (the relation loss's masking);
    ``scores`` is overwritten (it is a fresh tensor at every call site)."""
    return torch.log_softmax(scores.masked_fill_(~key_valid, torch.finfo(scores.dtype).min), -1)


def _autocast(bf16, device_type: str = "cpu"):
    """Autocast for scoring: ``bf16`` is False/``"no"`` (none), True/``"bf16"`` or ``"fp16"``, on ``device_type``."""
    if bf16 in (True, "bf16"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if bf16 == "fp16":
        return torch.autocast(device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def _length_buckets(batches: list[dict], kind: str, relation_heads: int, bucket_size: int) -> list[dict]:
    """Re-bucket the sequences of collated ``batches`` by length, trailing padding cut (positions stay absolute, so
    outputs at real tokens are unchanged). Each sequence carries its reference weight (see :class:`HeldOutScorer`)."""
    rows = []  # (trimmed length, weight, {key: 1-D tensor}, 1-D keep mask)
    n_total = sum(int(b["input_ids"].shape[0]) for b in batches)
    keys = [k for k in MODEL_INPUTS if k in batches[0]]
    for b in batches:
        ids = b["input_ids"]
        size, seq = ids.shape
        mask = b.get("attention_mask")
        valid = torch.ones(size, seq, dtype=torch.bool) if mask is None else mask != 0
        per_row = valid.sum(1)
        count = int(per_row.sum()) if kind == "kl" else int((per_row * per_row).sum())
        weight = size / (max(1, count) * relation_heads * n_total)
        for i in range(size):
            idx = torch.nonzero(valid[i]).flatten()
            length = int(idx[-1]) + 1 if len(idx) else 1
            rows.append((length, weight, {k: b[k][i, :length] for k in keys}, valid[i, :length]))
    rows.sort(key=lambda r: r[0])
    buckets = []
    for start in range(0, len(rows), bucket_size):
        chunk = rows[start:start + bucket_size]
        seq = max(r[0] for r in chunk)
        inputs = {}
        for k in keys:
            t = torch.zeros(len(chunk), seq, dtype=chunk[0][2][k].dtype)
            for j, r in enumerate(chunk):
                t[j, : r[0]] = r[2][k]
            inputs[k] = t
        valid = torch.zeros(len(chunk), seq, dtype=torch.bool)
        for j, r in enumerate(chunk):
            valid[j, : r[0]] = r[3]
        inputs["attention_mask"] = valid.long()
        buckets.append({
            "inputs": inputs,
            "key_valid": valid[:, None, None, :],
            "query_valid": valid[:, None, :, None].float(),
            "pair_valid": valid[:, None, :, None] & valid[:, None, None, :],
            "weight": torch.tensor([r[1] for r in chunk], dtype=torch.float64),
        })
    return buckets


class TaskProxyScorer:
    """Negative validation metric after a short fine-tune of the inherited subnet on k examples per class (the
    shared engine, no checkpoints); lower is better like the task-agnostic score."""

    def __init__(self, proxy, tokenizer, max_length: int, seed: int, work_dir: str):
        import numpy as np

        from distiller_nlp.tasks import load_task_data, make_collator, tokenize_dataset
        from distiller_nlp.tasks import task_metric_fn

        ds, spec = load_task_data(proxy.task, data_dir=proxy.data_dir or None, seed=seed,
                                  max_eval_examples=proxy.eval_examples)
        if spec.is_regression:
            raise DistillerError(f"task-proxy scoring needs a classification task, '{proxy.task}' is a regression")
        labels = np.asarray(ds[spec.train_split]["label"])
        rng = np.random.default_rng(seed)
        picked = []
        for c in range(spec.num_labels):
            idx = np.flatnonzero(labels == c)
            picked += rng.choice(idx, size=min(proxy.k, len(idx)), replace=False).tolist()
        self.train = tokenize_dataset(ds[spec.train_split].select(sorted(picked)), tokenizer, max_length)
        self.eval = tokenize_dataset(ds[spec.validation_split], tokenizer, max_length)
        self.collate = make_collator(tokenizer)
        self.metrics = task_metric_fn(spec)
        self.spec = spec
        self.proxy = proxy
        self.seed = seed
        self.work_dir = work_dir

    def __call__(self, superlm, arch: Arch) -> float:
        import shutil

        from distiller_nlp.core.train_args import TrainArgs
        from distiller_nlp.core.engine import Engine
        from distiller_nlp.models import SupervisedModule

        torch.manual_seed(self.seed)
        model = superlm.extract(arch, num_labels=self.spec.num_labels).train()
        steps = self.proxy.steps
        args = TrainArgs(max_steps=steps, batch_size=self.proxy.batch_size, eval_batch_size=64, lr=self.proxy.lr,
                         warmup_ratio=0.0, precision="no", seed=self.seed, eval_steps=steps, save_steps=10 * steps,
                         logging_steps=steps, report_to="none")
        run_dir = os.path.join(self.work_dir, "proxy-run")
        shutil.rmtree(run_dir, ignore_errors=True)
        engine = Engine(args, run_dir, SupervisedModule(model), self.train, self.collate,
                        eval_datasets={"validation": self.eval}, compute_metrics=self.metrics,
                        main_metric=self.spec.main_metric, run_name="task-proxy")
        value = float(engine.train().metrics[f"eval_{self.spec.main_metric}"])
        shutil.rmtree(run_dir, ignore_errors=True)
        return -value


def _optuna_search(space: SubSpace, fits: dict, score_fn, n_trials: int, seed: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    seen: dict = {}

    def objective(trial):
        arch = Arch(trial.suggest_categorical("layers", list(space.layers)),
                    trial.suggest_categorical("hidden", list(space.hidden)),
                    trial.suggest_categorical("heads", list(space.heads)),
                    trial.suggest_categorical("mlp_ratio", list(space.mlp_ratio)), space.head_dim)
        if arch not in fits:
            raise optuna.TrialPruned()
        if arch not in seen:
            seen[arch] = score_fn(arch)
        return seen[arch]

    study.optimize(objective, n_trials=n_trials)


def _plot(path: str, candidates: list[Candidate], budget: float, chosen: Candidate,
          xlabel: str = "encoder GFLOPs per sequence (2 x multiply-adds)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [c for c in candidates if c.score is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in sorted({c.subspace for c in scored}):
        pts = [c for c in scored if c.subspace == name]
        ax.scatter([c.flops / 1e9 for c in pts], [c.score for c in pts], s=10, alpha=0.6, label=name)
    front = [scored[i] for i in pareto_front([(c.flops, c.score) for c in scored])]
    ax.plot([c.flops / 1e9 for c in front], [c.score for c in front], "k-", lw=1, label="Pareto front")
    ax.axvline(budget / 1e9, color="r", ls="--", lw=1, label="budget")
    ax.scatter([chosen.flops / 1e9], [chosen.score], marker="*", s=200, color="gold", edgecolor="k", zorder=5,
               label="chosen")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _write_csv(path: str, candidates: list[Candidate]) -> None:
    """``candidates.csv``: one :meth:`Candidate.row` per candidate, written atomically."""
    rows = [c.row() for c in candidates]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def resolve_budget(teacher, seq_len: int = 128, convention: str = "exact", budget: float = 0.0,
                   budget_ratio: float = 0.0) -> tuple[float, int]:
    """``(budget, teacher count)`` in FLOPs ``convention``: the teacher (a Hugging Face config, or any shape
    :func:`distiller_nlp.core.flops.shape_dims` reads) counted at ``seq_len`` tokens, and ``budget`` when positive,
    else ``budget_ratio`` × that count. With the paper's reduction factor (``budget_ratio`` = 1 / factor) only the
    ``autodistil`` convention reproduces the paper's budgets: ``exact`` counts narrow students' attention 64·A wide,
    not hidden·A/12, and rejects the paper's own picks (e.g. the 12-layer, 9-head, 544-wide base student)."""
    from distiller_nlp.core.flops import flops

    if (budget > 0) == (budget_ratio > 0):
        raise DistillerError("give exactly one of --budget FLOPS or --budget-ratio R (both positive)")
    teacher_flops = flops(teacher, seq_len, convention)
    return (float(budget) if budget > 0 else budget_ratio * teacher_flops), teacher_flops


def search(cfg: SearchConfig, overwrite: bool = False) -> dict:
    """Run the search described by ``cfg`` (see the module docstring); returns the metrics written to
    ``metrics.json`` (chosen arch, its FLOPs/params/score, budget, teacher FLOPs — all in ``cfg.flops_convention``,
    recorded as ``flops_convention`` and ``unit``, with ``chosen_flops_<convention>`` for every convention —,
    candidate counts, runtime). Every
    file appears atomically, and only the main process writes. Under several processes each rank scores its share of the candidates."""
    from transformers import AutoConfig, AutoModel

    from distiller_nlp.core.engine import resolve_precision
    from distiller_nlp.core.flops import FLOPS_CONVENTIONS, get_flops_convention
    from distiller_nlp.tasks import make_collator
    from distiller_nlp.models import quiet_transformers, load_tokenizer, resolve_model_path, save_student
    from distiller_nlp.core.rundir import check_output_dir, create_output_dir, write_json_atomic

    from .data import load_texts, tokenized_texts

    t_start = time.perf_counter()
    cfg.validate()
    check_output_dir(cfg.output_dir, overwrite=overwrite)
    state = _process_state(cfg.cpu)
    device = state.device
    dirs = find_superlms(cfg.superlm)
    metas = {d: _read_meta(d) for d in dirs}
    teachers = {m.get("teacher") for m in metas.values()}
    if len(teachers) != 1 or None in teachers:
        raise DistillerError(f"the SuperLMs were trained from different teachers ({', '.join(map(str, teachers))}); "
                             "search one teacher's SuperLMs at a time")
    teacher_path = resolve_model_path(teachers.pop())
    tconfig = AutoConfig.from_pretrained(teacher_path)
    conv = get_flops_convention(cfg.flops_convention)
    budget, teacher_flops = resolve_budget(tconfig, cfg.max_length, conv.name, cfg.budget, cfg.budget_ratio)

    spaces: dict[str, SubSpace] = {}
    candidates: list[Candidate] = []
    for d in dirs:
        space = SubSpace.from_dict(metas[d]["space"], source=os.path.join(d, SUPERLM_FILE))
        if cfg.plain_bert:
            space = space.restrict_plain_bert()
        spaces[d] = space
        for arch in space:
            cost = arch.flops(cfg.max_length, conv.name)
            params = arch.params(tconfig.vocab_size, tconfig.max_position_embeddings, tconfig.type_vocab_size)
            candidates.append(Candidate(d, space.name, arch, cost, params, cost <= budget))
    if not any(c.fits for c in candidates):
        small = min(candidates, key=lambda c: c.flops)
        raise DistillerError(
            f"no candidate fits the budget of {budget:,.0f} {conv.symbol} at {cfg.max_length} tokens: the smallest "
            f"candidate ({small.subspace}: {small.arch}) needs {small.flops:,} {conv.symbol}"
            + ("" if conv.name == "exact" else f" ({conv.name} convention)")
        )

    # all input validated: now load, score and write
    tokenizer = load_tokenizer(teacher_path)
    texts = load_texts(cfg.data, "heldout", cfg.data.heldout_examples, cfg.seed)
    create_output_dir(cfg.output_dir, overwrite=overwrite)
    ds = tokenized_texts(texts, tokenizer, cfg.max_length)
    collate = make_collator(tokenizer)
    batches = [collate([ds[j] for j in range(i, min(i + cfg.batch_size, len(ds)))])
               for i in range(0, len(ds), cfg.batch_size)]
    shapes = None
    if cfg.precision == "auto" and device.type == "cpu":  # the probe of the teacher's (and the subnets') widths
        from transformers import AutoConfig

        from distiller_nlp.core.engine import shapes_from_configs

        shapes = shapes_from_configs([AutoConfig.from_pretrained(teacher_path)], cfg.batch_size, cfg.max_length)
    precision = resolve_precision(cfg.precision, cpu=device.type == "cpu", shapes=shapes)
    if cfg.score == "task-proxy":
        scorer = TaskProxyScorer(cfg.proxy, tokenizer, cfg.max_length, cfg.seed, cfg.output_dir)
    else:
        with quiet_transformers():
            teacher = AutoModel.from_pretrained(teacher_path).eval().to(device)
        scorer = HeldOutScorer(teacher, batches, cfg.objective.teacher_layer, cfg.objective.relation_heads,
                               cfg.objective.kind, autocast_bf16=precision, device=device)
        del teacher

    t_score, cpu_score = time.perf_counter(), time.process_time()
    n_scored = 0
    for d in dirs:
        superlm, _, _ = load_superlm(d)
        superlm.eval()
        if cfg.score != "task-proxy":
            superlm.to(device)
        mine = {c.arch: c for c in candidates if c.superlm == d and c.fits}

        def score(arch: Arch, superlm=superlm, mine=mine) -> float:
            value = scorer(superlm, arch)
            mine[arch].score = value
            return value

        if len(mine) <= cfg.max_evals:
            # Several processes: each scores its share of the candidates, then every rank gets every score.
            archs = sorted(mine, key=lambda a: a.to_dict().__repr__())
            local = archs[state.process_index::state.num_processes]
            if hasattr(scorer, "score_many"):  # one pass: candidates of equal widths share layer prefixes
                values = scorer.score_many(superlm, local)
            else:
                values = {arch: scorer(superlm, arch) for arch in local}
            for arch, value in _gather_scores(state, values).items():
                mine[arch].score = value
        else:
            # A sequential TPE study: the main process runs it, the others receive its scores.
            found = {}
            if state.is_main_process:
                _optuna_search(spaces[d], mine, score, cfg.max_evals, cfg.seed)
                found = {a: c.score for a, c in mine.items() if c.score is not None}
            for arch, value in _broadcast_scores(state, found).items():
                mine[arch].score = value
        n_scored += sum(1 for c in mine.values() if c.score is not None)
    score_time = time.perf_counter() - t_score
    score_cpu = time.process_time() - cpu_score

    scored = [c for c in candidates if c.score is not None]
    chosen = min(scored, key=lambda c: (c.score, c.flops))
    superlm, _, chosen_meta = load_superlm(chosen.superlm)
    student = superlm.extract(chosen.arch)
    main = state.is_main_process
    if main:
        save_student(student, tokenizer, os.path.join(cfg.output_dir, "student"),
                     require_builtin=chosen.arch.is_plain_bert)
        _write_csv(os.path.join(cfg.output_dir, "candidates.csv"), candidates)
        _plot(os.path.join(cfg.output_dir, "pareto.png"), candidates, budget, chosen,
              xlabel=f"encoder cost per sequence, 10^9 {conv.symbol} ({conv.name}: {conv.unit})")
    metrics = {
        "chosen_superlm": chosen.superlm, "chosen_subspace": chosen.subspace, **{f"chosen_{k}": v for k, v in
                                                                               chosen.arch.to_dict().items()},
        "chosen_plain_bert": chosen.arch.is_plain_bert, "chosen_flops": chosen.flops,
        "chosen_params": chosen.params, "chosen_score": chosen.score, "flops_ratio": chosen.flops / teacher_flops,
        "budget_flops": budget, "teacher_flops": teacher_flops, "max_length": cfg.max_length,
        "candidates": len(candidates), "candidates_fitting": sum(c.fits for c in candidates),
        "candidates_scored": n_scored, "heldout_sequences": len(ds), "score": cfg.score,
        "precision": precision, "device": device.type, "world_size": state.num_processes,
        "score_runtime_s": round(score_time, 3),
        "score_cpu_s": round(score_cpu, 3), "torch_threads": torch.get_num_threads(),
        "search_runtime_s": round(time.perf_counter() - t_start, 3),
        "flops_convention": conv.name, "unit": conv.unit,
        "relation_kind": cfg.objective.kind if cfg.score != "task-proxy" else None,
        **{f"chosen_flops_{name}": chosen.arch.flops(cfg.max_length, name) for name in FLOPS_CONVENTIONS.names()},
    }
    if main:
        write_json_atomic(os.path.join(cfg.output_dir, "metrics.json"), metrics)
        from .card import write_student_card

        write_student_card(os.path.join(cfg.output_dir, "student"), student, chosen.arch, chosen.superlm,
                           chosen_meta, search=metrics)
    state.wait_for_everyone()
    return metrics


def _process_state(cpu: bool):
    """The process state of a search (``cuda:<local rank>`` on GPUs unless ``cpu``); checks a multi-process launch."""
    from accelerate import PartialState

    from distiller_nlp.core.distributed import check_launch

    state = PartialState(cpu=bool(cpu) or not torch.cuda.is_available())
    check_launch(state.num_processes)
    return state


def _gather_scores(state, values: dict) -> dict:
    """Every rank's ``{arch: score}`` merged, on every rank."""
    if state.num_processes == 1:
        return values
    from accelerate.utils import gather_object

    return dict(gather_object(list(values.items())))


def _broadcast_scores(state, values: dict) -> dict:
    """The main process's ``{arch: score}`` on every rank."""
    if state.num_processes == 1:
        return values
    from accelerate.utils import broadcast_object_list

    box = [list(values.items())]
    broadcast_object_list(box, from_process=0)
    return dict(box[0])
