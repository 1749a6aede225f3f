"""``distill-lm``: distil a causal LM into a smaller one on the shared engine (issue #21).

One run follows the run skeleton (:mod:`distiller_nlp.core.run`) and the one engine
(:class:`~distiller_nlp.core.engine.Engine`); what is LM-specific lives here:

* **Batches.** Every training batch is ``input_ids`` / ``attention_mask`` / ``position_ids`` plus ``loss_mask``
  ``(B, T-1)``: 1 where the logit at position t predicts a *response* token t+1 (prompts and padding never count).
  Supervised and sequence-KD batches are right-padded prompt + response; generated ones are left-padded prompts
  followed by the generated response (positions from the mask).
* **Data modes** (``--data-mode``):
  ``supervised`` — the dataset's responses (teacher-forced KD on ground truth, DistiLLM/GKD "supervised KD");
  ``seqkd`` — the teacher's greedy responses to the training prompts, generated once before training and cached by
  fingerprint (Kim & Rush 2016, sequence-level KD);
  ``on_policy`` — with probability λ a batch's responses are the student's own samples, else the dataset's (GKD,
  Agarwal et al. 2024, TRL's rule ``random() <= lmbda``);
  ``skd`` — speculative KD (Xu et al. 2024): the student proposes blocks of tokens, the teacher verifies a block in
  one forward pass and replaces the first proposal outside its top-K by a sample of its own
  (:func:`~distiller_nlp.lm.generate.skd_generate`); the interleaved sequence is the training data.
* **Loss.** ``(1 - w) · divergence(student, teacher) + w · CE(student, tokens)`` over the loss mask, with the
  divergence one of :data:`DIVERGENCE_NAMES` (:mod:`distiller_nlp.lm.divergences`: fp32, chunked over tokens) and
  ``w`` = ``--hard-label-weight``. The teacher is frozen and runs in ``prepare_batch`` (no grad), like the NLP
  side's live teacher.
* **Evaluation.** The student generates greedily for each dev prompt (``--max-new-tokens``, KV cache); ROUGE-1/2/L
  and exact match against the references select the best model (``rougeL``).

The student is exported with ``save_pretrained`` (safetensors), its tokenizer and a model card; it loads with
``AutoModelForCausalLM.from_pretrained(DIR)`` and nothing of ours installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass

import torch
from torch import nn

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import TrainArgs

__all__ = ["LMDataConfig", "LMTrainArgs", "DistillLMConfig", "DATA_MODES", "DIVERGENCE_NAMES", "distill_lm",
           "LMDistillModule", "encode_prompt", "tokenize_lm_dataset", "collate_lm", "load_lm_data",
           "teacher_responses", "generation_metric_fn"]

logger = logging.getLogger(__name__)

DATA_MODES = ("supervised", "seqkd", "on_policy", "skd")
#: ``--divergence`` names → the registered token divergences
DIVERGENCE_NAMES = {"fkl": "lm_fkl", "rkl": "lm_rkl", "skew_fkl": "lm_skew_fkl", "skew_rkl": "lm_skew_rkl",
                    "jsd": "lm_jsd", "tv": "lm_tv"}
#: ``--inter-loss`` choices (registered hidden-state losses of ``core.losses``)
INTER_LOSSES = ("none", "hidden_mse", "cosine", "mi_alpha")
#: data modes whose responses are generated during training (no offline teacher cache can serve them)
GENERATING_MODES = ("on_policy", "skd")


@dataclass
class LMDataConfig:
    """The prompts and responses: a registered generation task or a directory of ``train/validation[/test]`` JSON
    Lines files with ``prompt`` and ``response`` fields."""

    task: str = option("bbc-headline-gen", help="generation task name, or a directory of train/validation[/test]"
                                                ".jsonl files with 'prompt' and 'response'", flag=True)
    max_train_examples: int = option(0, help="use at most this many training examples (0 = all; seeded)", min=0,
                                     flag=True)
    max_eval_examples: int = option(0, help="use at most this many dev examples (0 = all; seeded)", min=0,
                                    flag=True)
    max_test_examples: int = option(0, help="use at most this many test examples (0 = all; seeded)", min=0,
                                    flag=True)
    subset_seed: int = option(42, help="seed of the example subsets")
    max_prompt_tokens: int = option(256, help="longest prompt (tokens, chat template included); a longer one is an "
                                              "error naming it", positive=True, flag=True)
    max_new_tokens: int = option(32, help="response tokens: the training responses are cut there, generation stops "
                                          "there", positive=True, flag=True)


@dataclass
class LMTrainArgs(TrainArgs):
    """:class:`~distiller_nlp.core.train_args.TrainArgs` with batch sizes for causal LMs on one device."""

    batch_size: int = option(8, help="per-process train batch size", positive=True, flag=True)
    eval_batch_size: int = option(16, help="per-process eval batch size (generation)", positive=True, flag=True)
    max_length: int = option(512, help="(set from --max-prompt-tokens + --max-new-tokens)")
    lr_fallback: float = option(1e-4, help="--lr auto: the learning rate of a run too short for a range test (under "
                                           "200 steps)", positive=True)


@dataclass
class DistillLMConfig:
    """``distill-lm``: one causal-LM distillation run."""

    teacher: str = option("smollm2", help="teacher: a causal-LM directory, or smollm2 (the packaged SmolLM2-135M-"
                                          "Instruct)", flag=True)
    student: str = option("", help="student: a causal-LM directory with the teacher's tokenizer ('' = cut the teacher "
                                   "with --student-layers)", flag=True)
    student_layers: str = option("every3", help="layers of the teacher the student keeps: every3 (DistilBERT-style, "
                                                "0,3,6,...) or a comma list", flag=True)
    divergence: str = option("fkl", help="token divergence: {choices}", choices=tuple(DIVERGENCE_NAMES), flag=True)
    beta: float = option(0.5, help="--divergence jsd: β (0 = forward KL, 1 = reverse KL; GKD)", min=0, max=1,
                         flag=True)
    skew: float = option(0.1, help="--divergence skew_fkl/skew_rkl: α (DistiLLM; 0 = plain KL)", min=0, max=1,
                         flag=True)
    temperature: float = option(1.0, help="softmax temperature of both distributions in the divergence",
                                positive=True, flag=True)
    hard_label_weight: float = option(0.0, help="weight of the cross-entropy on the training tokens (the rest goes "
                                                "to the divergence)", min=0, max=1, flag=True)
    inter_loss: str = option("none", help="intermediate objective on hidden states: {choices} (Distiller's "
                                          "intermediate losses, through the capture hooks)", choices=INTER_LOSSES,
                             flag=True)
    mapping: str = option("skip", help="--inter-loss: which teacher layer each student layer matches: {choices} "
                                       "(kd.mapping)", choices=("skip", "last"), flag=True)
    inter_weight: float = option(1.0, help="--inter-loss: its weight beside the divergence", min=0, flag=True)
    mi_alpha: float = option(0.9, help="--inter-loss mi_alpha: α of the MI-α bound", min=0, max=1)
    data_mode: str = option("supervised", help="{choices}", choices=DATA_MODES, flag=True)
    lmbda: float = option(0.5, help="--data-mode on_policy: probability that a batch uses the student's own "
                                    "samples (GKD's λ)", min=0, max=1, flag="lambda")
    top_k: int = option(25, help="--data-mode skd: a proposal outside the teacher's top-K is replaced", positive=True,
                        flag=True)
    num_proposals: int = option(5, help="--data-mode skd: tokens the student proposes per teacher verification",
                                positive=True)
    sample_temperature: float = option(1.0, help="temperature of the student's (and SKD teacher's) sampling",
                                       positive=True)
    teacher_topk: int = option(0, help="offline modes (supervised, seqkd): cache the teacher's top-k log-probabilities "
                                       "of every response token once (datasets columns, fingerprinted) instead of "
                                       "running it every step; 0 = the live teacher", min=0, flag=True)
    trust_remote_code: bool = option(False, help="allow model code from the model directory", flag=True)
    output_dir: str = option("", help="output directory (must be empty unless --resume/--overwrite)",
                             flag="output-dir")
    data: LMDataConfig = option(default_factory=LMDataConfig, help="prompts and responses")
    train: LMTrainArgs = option(default_factory=LMTrainArgs, help="training settings")

    def validate(self, source: str = "config") -> None:
        from distiller_nlp.core.config import check_config

        check_config(self, source)
        self.train.validate(source)
        if self.teacher_topk and self.data_mode in GENERATING_MODES:
            raise DistillerError(f"--teacher-topk in {source}: --data-mode {self.data_mode} generates its responses "
                                 "during training, so no teacher cache can hold them (use supervised or seqkd, or "
                                 "--teacher-topk 0)")
        if self.teacher_topk and self.inter_loss != "none":
            raise DistillerError(f"--teacher-topk with --inter-loss {self.inter_loss} in {source}: hidden states "
                                 "need the live teacher (the cache holds its output distribution only)")
        if self.student and self.student_layers != "every3":
            raise DistillerError(f"--student and --student-layers in {source}: give one (a student directory, or the "
                                 "teacher layers to keep)")


# --------------------------------------------------------------------------------------------------------- data


def encode_prompt(tokenizer, prompt: str) -> list:
    """Token ids of ``prompt`` as the model expects it (:func:`distiller_nlp.lm.tasks.encode_prompts`: through the
    tokenizer's chat template, a user turn plus the generation prompt, when it has one)."""
    from distiller_nlp.lm.tasks import encode_prompts

    return list(encode_prompts(tokenizer, [prompt])[0])


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DistillerError(f"the tokenizer {type(tokenizer).__name__} has no EOS token: a response cannot end")
    return int(eos)


def load_lm_data(cfg: LMDataConfig):
    """The run's ``datasets.DatasetDict`` with ``prompt`` / ``response`` (``train``, ``validation``, optional
    ``test``), subsets drawn with ``subset_seed``."""
    import datasets

    if os.path.isdir(cfg.task):
        files = {s: os.path.join(cfg.task, f"{s}.jsonl") for s in ("train", "validation", "test")}
        missing = [s for s in ("train", "validation") if not os.path.isfile(files[s])]
        if missing:
            raise DistillerError(f"data.task {cfg.task}: no {missing[0]}.jsonl (expected train.jsonl and "
                                 "validation.jsonl with 'prompt' and 'response' fields)")
        dd = datasets.DatasetDict({s: datasets.Dataset.from_json(p) for s, p in files.items() if os.path.isfile(p)})
    else:
        from distiller_nlp.lm.tasks import load_lm_task

        dd = load_lm_task(cfg.task)
    for split, ds in dd.items():
        missing = {"prompt", "response"} - set(ds.column_names)
        if missing:
            raise DistillerError(f"column {sorted(missing)[0]!r} not found in the {split} split of {cfg.task} "
                                 f"(found {ds.column_names})")
        if len(ds) == 0:
            raise DistillerError(f"the {split} split of {cfg.task} is empty")
    out = {}
    for split, ds in dd.items():
        cap = {"train": cfg.max_train_examples, "test": cfg.max_test_examples}.get(split, cfg.max_eval_examples)
        if cap and len(ds) > cap:
            ds = ds.shuffle(seed=cfg.subset_seed).select(range(cap))
        out[split] = ds
    return datasets.DatasetDict(out)


def tokenize_lm_dataset(ds, tokenizer, cfg: LMDataConfig, context: int, source: str = "data"):
    """Columns ``prompt_ids`` and ``response_ids`` (the response cut to ``max_new_tokens`` − 1 tokens, then EOS). A
    prompt longer than ``max_prompt_tokens``, or one that leaves no room for the response in the model's context
    (``context`` positions), is a one-line error naming the example."""
    eos = _eos_id(tokenizer)

    def encode(example, idx):
        p = encode_prompt(tokenizer, example["prompt"])
        if len(p) > cfg.max_prompt_tokens or len(p) + cfg.max_new_tokens > context:
            raise DistillerError(f"example {idx} of {source}: its prompt has {len(p)} tokens, more than "
                                 f"--max-prompt-tokens {cfg.max_prompt_tokens} (or with --max-new-tokens "
                                 f"{cfg.max_new_tokens} more than the model's context of {context})")
        r = tokenizer(example["response"], add_special_tokens=False)["input_ids"][: cfg.max_new_tokens - 1]
        return {"prompt_ids": p, "response_ids": list(r) + [eos]}

    return ds.map(encode, with_indices=True, remove_columns=ds.column_names, desc=f"tokenising {source}")


def collate_lm(pad_id: int, max_new_tokens: int):
    """The collator: training rows (right-padded prompt + response, ``loss_mask``), plus the left-padded prompts
    (``prompt_ids`` / ``prompt_mask``) that generation needs and the references (``labels``: response ids padded to
    ``max_new_tokens`` with -1, for evaluation)."""

    def collate(rows):
        seqs = [list(r["prompt_ids"]) + list(r["response_ids"]) for r in rows]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        loss_mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
        for i, (r, s) in enumerate(zip(rows, seqs)):
            input_ids[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            p = len(r["prompt_ids"])
            loss_mask[i, p - 1: len(s) - 1] = 1.0  # logit t predicts token t+1: the response tokens
        plen = max(len(r["prompt_ids"]) for r in rows)
        prompt_ids = torch.full((len(rows), plen), pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(rows), plen), dtype=torch.long)
        labels = torch.full((len(rows), max_new_tokens), -1, dtype=torch.long)
        for i, r in enumerate(rows):
            p = list(r["prompt_ids"])
            prompt_ids[i, plen - len(p):] = torch.tensor(p)
            prompt_mask[i, plen - len(p):] = 1
            resp = list(r["response_ids"])[:max_new_tokens]
            labels[i, : len(resp)] = torch.tensor(resp)
        batch = {"input_ids": input_ids, "attention_mask": attn, "position_ids": _positions(attn),
                 "loss_mask": loss_mask, "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "labels": labels}
        if TOPK_IDS in rows[0]:
            batch.update(_sparse_batch(rows, width - 1))
        return batch

    return collate


TOPK_IDS = "teacher_topk_ids"


def _sparse_batch(rows, positions: int) -> dict:
    """The cached top-k targets of a batch, aligned with the logits ``(B, positions)``: a row's i-th cached token
    sits at position ``len(prompt) - 1 + i`` (where ``loss_mask`` is 1); other positions hold a dummy distribution
    (masked out)."""
    from distiller_nlp.lm.sparse import from_columns

    cols = {k: [r[k] for r in rows] for k in rows[0] if k.startswith("teacher_")}
    t = from_columns(cols, vocab_size=1 << 30)
    k = t.k
    idx = torch.arange(k).repeat(len(rows), positions, 1)
    lp = torch.full((len(rows), positions, k), -float(torch.log(torch.tensor(k + 1.0))), dtype=torch.float32)
    rest = lp[..., 0].clone()
    for i, r in enumerate(rows):
        n, start = len(r[TOPK_IDS]), len(r["prompt_ids"]) - 1
        idx[i, start: start + n] = t.indices[i, :n]
        lp[i, start: start + n] = t.logprobs[i, :n]
        rest[i, start: start + n] = t.rest_logprob[i, :n]
    return {"t_idx": idx, "t_logp": lp, "t_rest": rest}


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _from_generation(out) -> dict:
    """A training batch from a :class:`~distiller_nlp.lm.generate.GenerationOutput`: the left-padded prompts and the
    generated responses; the loss covers the generated tokens (EOS included)."""
    seq, attn, resp = out.sequences, out.attention_mask.long(), out.response_mask.float()
    p = out.prompt_length
    loss_mask = torch.zeros((seq.shape[0], seq.shape[1] - 1), dtype=torch.float32, device=seq.device)
    loss_mask[:, p - 1:] = resp[:, : seq.shape[1] - p]
    return {"input_ids": seq, "attention_mask": attn, "position_ids": _positions(attn), "loss_mask": loss_mask}


# ------------------------------------------------------------------------------------------------------- module


class LMDistillModule(nn.Module):
    """The trainable module: the student, the divergence and the CE term. ``forward(batch)`` needs the teacher's
    logits in ``batch["teacher_logits"]`` (added by :class:`LMTeacherRunner`); ``predict(batch)`` generates."""

    def __init__(self, student, cfg: DistillLMConfig, pad_id: int, eos_id: int, teacher_config=None):
        super().__init__()
        self.student = student
        self.loss_name = DIVERGENCE_NAMES[cfg.divergence]
        self.params = ({"beta": cfg.beta} if cfg.divergence == "jsd" else
                       {"alpha": cfg.skew} if cfg.divergence.startswith("skew") else {})
        self.temperature = float(cfg.temperature)
        self.hard_weight = float(cfg.hard_label_weight)
        self.max_new_tokens = int(cfg.data.max_new_tokens)
        self.pad_id, self.eos_id = int(pad_id), int(eos_id)
        self.progress = 0.0
        self.pairs: list = []
        self.inter_name = cfg.inter_loss
        self.inter_weight = float(cfg.inter_weight)
        if cfg.inter_loss != "none":
            self._build_inter(cfg, teacher_config)

    def _build_inter(self, cfg, teacher_config) -> None:
        """Layer pairs (``kd.mapping``: skip or last over hidden states 0..L), a linear projection per pair when the
        widths differ, and one MI-α critic per pair (mean-pooled over the real tokens) for ``mi_alpha``."""
        from distiller_nlp.core.capture import num_layers
        from distiller_nlp.core.losses.mutual_info import MIAlphaLoss
        from distiller_nlp.kd.mapping import layer_mapping

        if teacher_config is None:
            raise DistillerError("--inter-loss needs the teacher's config")
        lt, ls = int(teacher_config.num_hidden_layers), num_layers(self.student)
        self.pairs = layer_mapping(cfg.mapping, lt, ls, "hidden")
        ds, dt = int(self.student.config.hidden_size), int(teacher_config.hidden_size)
        self.proj = nn.ModuleList([nn.Linear(ds, dt) for _ in self.pairs]) if ds != dt else None
        self.critics = (nn.ModuleList([MIAlphaLoss(dt if self.proj is not None else ds, dt, alpha=cfg.mi_alpha,
                                                   pool="mean") for _ in self.pairs])
                        if cfg.inter_loss == "mi_alpha" else None)

    @property
    def teacher_layers(self) -> list:
        return [t for t, _ in self.pairs]

    def set_progress(self, p: float) -> None:
        """The engine's training progress (global step / total steps): it seeds the batch's sampling draws."""
        self.progress = float(p)

    def _logits(self, batch) -> torch.Tensor:
        return self.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"], use_cache=False).logits

    def forward(self, batch) -> dict:
        from distiller_nlp.lm.divergences import lm_divergence

        out = {}
        if self.pairs:
            from distiller_nlp.core.capture import FeatureCapture

            with FeatureCapture(self.student, hidden_layers=sorted({s for _, s in self.pairs})) as cap:
                logits = self._logits(batch)[:, :-1]
            hidden = cap.hidden
        else:
            logits = self._logits(batch)[:, :-1]
        mask = batch["loss_mask"]
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.pairs:
            inter = self._inter(hidden, batch["teacher_hidden"], batch["attention_mask"])
            out[self.inter_name] = inter.detach()
            loss = loss + self.inter_weight * inter
        if self.hard_weight < 1:
            if "t_idx" in batch:  # the cached top-k teacher targets
                from distiller_nlp.lm.sparse import SparseTargets

                target = SparseTargets(batch["t_idx"], batch["t_logp"], batch["t_rest"], int(logits.shape[-1]),
                                       self.temperature)
            else:
                target = batch["teacher_logits"][:, :-1]
            div = lm_divergence(self.loss_name, logits, target, mask, self.temperature, **self.params)
            out[self.loss_name] = div.detach()
            loss = loss + (1 - self.hard_weight) * div
        if self.hard_weight > 0:
            targets = batch["input_ids"][:, 1:]
            ce = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="none").reshape(targets.shape)
            ce = (ce * mask).sum() / mask.sum().clamp(min=1)
            out["ce"] = ce.detach()
            loss = loss + self.hard_weight * ce
        out["loss"] = loss
        return out

    def _inter(self, hidden: dict, teacher_hidden: dict, mask: torch.Tensor) -> torch.Tensor:
        from distiller_nlp.core.losses import get_loss

        total = 0.0
        for i, (t, s) in enumerate(self.pairs):
            h_s = hidden[s] if self.proj is None else self.proj[i](hidden[s])
            h_t = teacher_hidden[t]
            if self.critics is not None:
                total = total + self.critics[i](h_s, h_t, mask)
            else:
                total = total + get_loss(self.inter_name)(h_s, h_t, mask)
        return total / len(self.pairs)

    @torch.no_grad()
    def predict(self, batch) -> torch.Tensor:
        from distiller_nlp.lm.generate import generate

        gen = generate(self.student, batch["prompt_ids"], batch["prompt_mask"], max_new_tokens=self.max_new_tokens,
                       eos_token_id=self.eos_id, pad_token_id=self.pad_id)
        resp = gen.responses
        out = torch.full((resp.shape[0], self.max_new_tokens), -1, dtype=torch.long, device=resp.device)
        out[:, : resp.shape[1]] = torch.where(gen.response_mask.bool(), resp, torch.full_like(resp, -1))
        return out.float()


class LMTeacherRunner:
    """``prepare_batch``: builds the batch the data mode asks for (generating with the student or with SKD when it
    must) and adds the frozen teacher's logits on it."""

    def __init__(self, teacher, module: LMDistillModule, cfg: DistillLMConfig, seed: int):
        self.teacher, self.module, self.cfg, self.seed = teacher, module, cfg, int(seed)
        self.generated = 0
        self.replaced = 0
        self.tokens = 0
        self._calls = 0

    def _rng(self) -> random.Random:
        """The batch's draws (λ, sampling): a pure function of the seed and the training step (so a resumed run
        draws what the uninterrupted one drew); the LR range test's batches (before training) count apart."""
        step = int(round(self.module.progress * 1e9)) if self.module.progress else -self._calls
        self._calls += 1
        return random.Random(f"{self.seed}:{step}")

    def __call__(self, batch: dict) -> dict:
        from distiller_nlp.lm.generate import generate, skd_generate

        cfg, mode = self.cfg, self.cfg.data_mode
        student = self.module.student
        rng = self._rng()
        use_student = mode == "on_policy" and rng.random() <= cfg.lmbda  # TRL GKD: random() <= lmbda
        if mode == "skd" or use_student:
            device = batch["prompt_ids"].device
            was = student.training
            student.eval()
            gen = torch.Generator(device=device)
            gen.manual_seed(rng.randrange(2 ** 31))
            common = dict(max_new_tokens=self.module.max_new_tokens, eos_token_id=self.module.eos_id,
                          pad_token_id=self.module.pad_id, generator=gen)
            if mode == "skd":
                out = skd_generate(student, self.teacher, batch["prompt_ids"], batch["prompt_mask"],
                                   num_proposals=cfg.num_proposals, top_k=cfg.top_k,
                                   student_temperature=cfg.sample_temperature,
                                   teacher_temperature=cfg.sample_temperature, **common)
                self.replaced += sum(out.n_replaced or [])
            else:
                out = generate(student, batch["prompt_ids"], batch["prompt_mask"], do_sample=True,
                               temperature=cfg.sample_temperature, **common)
            student.train(was)
            self.generated += 1
            self.tokens += int(out.response_mask.sum())
            batch = {**batch, **_from_generation(out)}
        needs_hidden = bool(self.module.pairs)
        if not needs_hidden and (self.module.hard_weight >= 1 or "t_idx" in batch):  # CE only / cached targets
            return batch
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], use_cache=False)
        if needs_hidden:
            from distiller_nlp.core.capture import FeatureCapture

            with FeatureCapture(self.teacher, hidden_layers=sorted(set(self.module.teacher_layers))) as cap:
                teacher_logits = self.teacher(**kwargs).logits
            return {**batch, "teacher_logits": teacher_logits, "teacher_hidden": dict(cap.hidden)}
        return {**batch, "teacher_logits": self.teacher(**kwargs).logits}


# ---------------------------------------------------------------------------------------------------- metrics


def generation_metric_fn(tokenizer):
    """``compute_metrics(predictions, references)`` for the engine: decodes the generated and the reference ids
    (-1 = none) and scores them with :func:`distiller_nlp.lm.metrics.generation_metrics`."""
    from distiller_nlp.lm.metrics import generation_metrics

    def decode(rows):
        return [tokenizer.decode([int(t) for t in row if t >= 0], skip_special_tokens=True).strip() for row in rows]

    def compute(preds, refs):
        return generation_metrics(decode(preds), decode(refs))

    return compute


# --------------------------------------------------------------------------------------------- sequence-level KD


def teacher_responses(teacher, tokenizer, tok_train, cfg: DistillLMConfig, accelerator, cache_key: str):
    """``seqkd``: the teacher's greedy responses (``response_ids``) to every training prompt, generated once in
    batches with the KV cache and cached by ``cache_key`` under the project cache (``datasets`` on disk, written
    atomically by the main process; the other processes wait and read it)."""
    import datasets

    from distiller_nlp.env import cache_dir
    from distiller_nlp.lm.generate import generate, left_pad

    target = os.path.join(str(cache_dir()), "lm_seqkd", cache_key)
    if accelerator.is_main_process and not os.path.isfile(os.path.join(target, "dataset_info.json")):
        from tqdm.auto import tqdm

        eos, pad = _eos_id(tokenizer), int(tokenizer.pad_token_id)
        device = accelerator.device
        prompts = [list(p) for p in tok_train["prompt_ids"]]
        responses = []
        bs = cfg.train.eval_batch_size
        for start in tqdm(range(0, len(prompts), bs), desc="seqkd: teacher responses", dynamic_ncols=True):
            ids, mask = left_pad(prompts[start: start + bs], pad, device=device)
            out = generate(teacher, ids, mask, max_new_tokens=cfg.data.max_new_tokens, eos_token_id=eos,
                           pad_token_id=pad)
            for row, m in zip(out.responses.tolist(), out.response_mask.tolist()):
                toks = [t for t, k in zip(row, m) if k]
                responses.append(toks if toks and toks[-1] == eos else toks[: cfg.data.max_new_tokens - 1] + [eos])
        ds = datasets.Dataset.from_dict({"prompt_ids": prompts, "response_ids": responses})
        _save_atomic(ds, target)
    accelerator.wait_for_everyone()
    return datasets.load_from_disk(target)


def teacher_topk_cache(teacher, tokenizer, train_set, cfg: DistillLMConfig, accelerator, cache_key: str):
    """``--teacher-topk K``: the teacher's top-K log-probabilities (and the rest mass) at every response token of
    every training row, computed once in batches and stored as ``datasets`` columns (``teacher_topk_ids`` uint16,
    ``teacher_topk_logprobs`` / ``teacher_rest_logprob`` float32) beside ``prompt_ids`` / ``response_ids``, under the
    project cache keyed by ``cache_key`` (main process writes atomically; the others wait and read)."""
    import datasets

    from distiller_nlp.env import cache_dir
    from distiller_nlp.lm.sparse import column_features, sparse_targets, to_columns

    target = os.path.join(str(cache_dir()), "lm_teacher_topk", cache_key)
    vocab = int(teacher.config.vocab_size)
    if accelerator.is_main_process and not os.path.isfile(os.path.join(target, "dataset_info.json")):
        from tqdm.auto import tqdm

        collate = collate_lm(int(tokenizer.pad_token_id), cfg.data.max_new_tokens)
        cols = {"teacher_topk_ids": [], "teacher_topk_logprobs": [], "teacher_rest_logprob": []}
        bs = cfg.train.eval_batch_size
        with torch.no_grad():
            for start in tqdm(range(0, len(train_set), bs), desc=f"teacher top-{cfg.teacher_topk} cache",
                              dynamic_ncols=True):
                rows = [train_set[i] for i in range(start, min(start + bs, len(train_set)))]
                b = {k: v.to(accelerator.device) for k, v in collate(rows).items()}
                logits = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                 position_ids=b["position_ids"], use_cache=False).logits[:, :-1]
                for i, r in enumerate(rows):
                    sel = logits[i][b["loss_mask"][i].bool()].unsqueeze(0)  # (1, response tokens, V)
                    part = to_columns(sparse_targets(sel, cfg.teacher_topk, cfg.temperature))
                    for key, value in part.items():
                        cols[key].append(value[0])
        feats = datasets.Features({**train_set.features, **column_features(vocab, dtype="float32")})
        ds = datasets.Dataset.from_dict({**train_set.to_dict(), **cols}, features=feats)
        _save_atomic(ds, target)
    accelerator.wait_for_everyone()
    return datasets.load_from_disk(target)


def _save_atomic(ds, target: str) -> None:
    """Save a ``datasets`` object to ``target`` through a temporary directory and a rename (a kill leaves no half
    cache that a later run would accept)."""
    import shutil

    tmp = f"{target}.tmp-{os.getpid()}"
    ds.save_to_disk(tmp)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.replace(tmp, target)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ------------------------------------------------------------------------------------------------------ the run


def _load_models(cfg: DistillLMConfig):
    from distiller_nlp.lm.models import check_same_vocabulary, cut_layers, load_lm, resolve_lm

    t_path = resolve_lm(cfg.teacher)
    teacher, tokenizer = load_lm(t_path)
    if cfg.student:
        s_path = resolve_lm(cfg.student)
        student, s_tok = load_lm(s_path)
        check_same_vocabulary(tokenizer, s_tok)
        s_desc = s_path
    else:
        keep = cfg.student_layers
        if keep != "every3":
            try:
                keep = [int(x) for x in keep.split(",") if x.strip()]
            except ValueError:
                raise DistillerError(f"--student-layers: expected every3 or a comma list of layer indices, got "
                                     f"{cfg.student_layers!r}") from None
        student = cut_layers(teacher, keep)
        s_desc = f"{cfg.teacher} cut to layers {cfg.student_layers}"
    return t_path, teacher, tokenizer, student, s_desc


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def distill_lm(cfg: DistillLMConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Distil ``cfg.teacher`` into a student (see the module docstring) and return ``metrics.json``'s content:
    ``eval_rouge1/2/L``, ``eval_exact_match`` on the dev split (and ``test_*`` on the test split), the training
    losses, ``examples_per_s``, the data mode's counts (``generated_batches``, ``skd_replacement_rate``), the
    parameter counts and the wall time."""
    from distiller_nlp.core.engine import Engine, make_accelerator
    from distiller_nlp.core.run import TrainingRun

    t_wall = time.perf_counter()
    cfg.validate()
    if cfg.top_k < 1:
        raise DistillerError("--top-k must be positive")
    run = TrainingRun(cfg.output_dir, resume=resume, overwrite=overwrite)
    accelerator = make_accelerator(cfg.train, run.output_dir, tracking=True)
    t_path, teacher, tokenizer, student, s_desc = _load_models(cfg)
    vocab = int(teacher.config.vocab_size)
    if cfg.data_mode == "skd" and cfg.top_k > vocab:
        raise DistillerError(f"--top-k {cfg.top_k} is larger than the vocabulary ({vocab} tokens)")
    context = int(getattr(teacher.config, "max_position_embeddings", 1 << 30) or (1 << 30))
    dd = load_lm_data(cfg.data)
    tok = {split: tokenize_lm_dataset(ds, tokenizer, cfg.data, context, source=f"{cfg.data.task}/{split}")
           for split, ds in dd.items()}
    cfg.train.max_length = cfg.data.max_prompt_tokens + cfg.data.max_new_tokens
    train_set = tok["train"]
    if cfg.data_mode == "seqkd":
        key = hashlib.sha256(json.dumps({"teacher": t_path, "task": cfg.data.task, "n": len(train_set),
                                         "max_new": cfg.data.max_new_tokens, "subset": cfg.data.subset_seed,
                                         "fp": train_set._fingerprint}, sort_keys=True).encode()).hexdigest()[:16]
        train_set = teacher_responses(teacher.to(accelerator.device), tokenizer, train_set, cfg, accelerator, key)
    cache_info = {}
    if cfg.teacher_topk:
        from distiller_nlp.env import cache_dir
        from distiller_nlp.lm.sparse import bytes_per_token

        if cfg.teacher_topk > vocab:
            raise DistillerError(f"--teacher-topk {cfg.teacher_topk} is larger than the vocabulary ({vocab} tokens)")
        key = hashlib.sha256(json.dumps({"teacher": t_path, "k": cfg.teacher_topk, "tau": cfg.temperature,
                                         "fp": train_set._fingerprint, "n": len(train_set)},
                                        sort_keys=True).encode()).hexdigest()[:16]
        train_set = teacher_topk_cache(teacher.to(accelerator.device), tokenizer, train_set, cfg, accelerator, key)
        tokens = sum(len(r) for r in train_set["response_ids"])
        size = _dir_bytes(os.path.join(str(cache_dir()), "lm_teacher_topk", key))
        per = bytes_per_token(cfg.teacher_topk, vocab, "float32")
        cache_info = {"teacher_topk": cfg.teacher_topk, "teacher_cache_tokens": tokens,
                      "teacher_cache_bytes_per_token": round(size / max(1, tokens), 1),
                      "teacher_cache_payload_bytes_per_token": per["sparse"],
                      "dense_fp16_bytes_per_token": per["dense_fp16"], "dense_fp32_bytes_per_token": per["dense_fp32"]}
    run.start(cfg)

    pad, eos = int(tokenizer.pad_token_id), _eos_id(tokenizer)
    module = LMDistillModule(student, cfg, pad, eos, teacher_config=teacher.config)
    runner = LMTeacherRunner(teacher, module, cfg, seed=cfg.train.seed + 1000 * accelerator.process_index)
    evals = {"validation": tok["validation"], **({"test": tok["test"]} if "test" in tok else {})}

    def export(mod, directory):
        mod.student.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)

    engine = Engine(cfg.train, run.output_dir, module, train_set, collate_lm(pad, cfg.data.max_new_tokens),
                    eval_datasets=evals, compute_metrics=generation_metric_fn(tokenizer), main_metric="rougeL",
                    prepare_batch=runner, frozen=[teacher], export_fn=export, resume=run.resume,
                    run_name="distill-lm", accelerator=accelerator)
    result = engine.train()
    extra = {"teacher": t_path, "student": s_desc, "data_mode": cfg.data_mode, "divergence": cfg.divergence,
             "teacher_params": _n_params(teacher), "student_params": _n_params(student),
             "generated_batches": runner.generated, **cache_info,
             "wall_s": round(time.perf_counter() - t_wall, 1)}
    if cfg.data_mode == "skd" and runner.tokens:
        extra["skd_replacement_rate"] = round(runner.replaced / runner.tokens, 4)
    return run.finish(engine, result, extra=extra, on_finish=[lambda m: _write_card(run.output_dir, cfg, m, extra)])


def _write_card(directory: str, cfg: DistillLMConfig, metrics: dict, extra: dict) -> None:
    from distiller_nlp.core.card import CardInfo, write_model_card

    info = CardInfo(
        title=f"{os.path.basename(os.path.abspath(directory))}: a causal LM distilled by distiller_nlp",
        summary=(f"Distilled from `{extra['teacher']}` ({extra['teacher_params'] / 1e6:.1f}M parameters) into "
                 f"{extra['student']} ({extra['student_params'] / 1e6:.1f}M) with `distiller-nlp distill-lm`: "
                 f"{cfg.data_mode} data, {cfg.divergence} divergence."),
        task_type="text-generation", tags=["knowledge-distillation", "distiller-nlp", cfg.data_mode],
        dataset_name=cfg.data.task,
        pipeline={"data mode": cfg.data_mode, "divergence": cfg.divergence, "temperature": cfg.temperature,
                  **({"intermediate": f"{cfg.inter_loss} on hidden states, {cfg.mapping} mapping, weight "
                                      f"{cfg.inter_weight:g}"} if cfg.inter_loss != "none" else {}),
                  "CE weight": cfg.hard_label_weight,
                  **({"λ": cfg.lmbda} if cfg.data_mode == "on_policy" else {}),
                  **({"top-K": cfg.top_k, "proposals": cfg.num_proposals} if cfg.data_mode == "skd" else {})},
        data={"task": cfg.data.task, "max new tokens": cfg.data.max_new_tokens},
        metrics=metrics,
        load_snippet=("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                      f"model = AutoModelForCausalLM.from_pretrained({directory!r})\n"
                      f"tokenizer = AutoTokenizer.from_pretrained({directory!r})"))
    write_model_card(directory, info)

