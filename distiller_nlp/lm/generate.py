"""Generation for causal-LM distillation: batched decoding with a KV cache, speculative KD data, on-policy mixing.

- :func:`generate` — greedy or sampled decoding for any Hugging Face causal LM: left-padded prompts with their
  attention mask, explicit position ids (so left padding does not shift positions), a KV cache (``cache`` in
  transformers ≥ 5.x, ``past_key_values`` before), temperature, optional top-p, EOS stop, and a ``torch.Generator``
  that makes sampling reproducible. ``use_cache=False`` recomputes the whole forward each step (the reference the
  cached path is tested against).
- :func:`skd_accept` / :func:`skd_generate` — Speculative Knowledge Distillation (SKD; Xu et al., ICLR 2025,
  arXiv 2410.11325): the student proposes, the teacher verifies a block of proposals in one forward pass, and every
  proposal outside the teacher's top-K is replaced by a token sampled from the teacher. The interleaved sequences are
  the training data (then trained with any divergence of :mod:`distiller_nlp.lm.divergences`).
- :func:`use_student_samples` / :func:`on_policy_batch` — GKD's data mixing (Agarwal et al., ICLR 2024): with
  probability λ a batch's responses are the student's own samples, otherwise the dataset's.

Models are used as given: call ``model.eval()`` first (dropout would make sampling irreproducible). Everything runs
under ``torch.no_grad()``.

How :func:`skd_generate` follows the reference code (google-research/google-research, ``speculative_kd/``: the SKD
rule lives in a fork of transformers 4.44's assisted generation, ``transformers/utils.py`` — ``_assisted_decoding``
and ``_speculative_kd_sampling`` — driven by ``train/ddp_skd.py``):

1. block size: ``ddp_skd.py`` sets ``generation_config.num_assistant_tokens = 5`` with the ``"constant"`` schedule, so
   the student (the "assistant") proposes γ = 5 tokens per round (``num_proposals=5``), each sampled
   (``do_sample=True``) — ``AssistedCandidateGenerator.get_candidates`` calls the student's ``generate`` for
   ``num_assistant_tokens`` new tokens;
2. verification: ``_assisted_decoding`` step 2 runs the teacher once over prompt + candidates and keeps the last
   ``candidate_length + 1`` logits; ``new_logits`` are then warped by the teacher's logits processors (temperature,
   top-p) — here ``teacher_temperature`` / ``teacher_top_p``;
3. the rule (``_speculative_kd_sampling``): ``torch.topk(p[0, :-1, :], teacher_k)`` — the teacher's top-K at each
   proposal's position (the extra last position is dropped); ``is_accepted`` = the proposal is among them;
   ``n_matches = ((~is_accepted).cumsum(dim=-1) < 1).sum()`` — the accepted prefix ends at the first rejection;
   at that position a token ``t = torch.multinomial(p[:, n_matches, :], 1)`` is drawn from the teacher's (warped)
   distribution and the round's output is ``candidates[:n_matches] + [t]``; the proposals after it are discarded;
4. if all γ proposals are accepted the round adds exactly those γ tokens (``valid_tokens =
   new_candidate_input_ids[:, :n_matches]``, no bonus teacher token, unlike speculative decoding); the teacher's
   ``top_k`` in the README's ``config/kd_train.yaml`` example is 25 (our default).

Three deliberate differences: (a) the reference checks a *fresh* student sample
(``q_selected_tokens = torch.multinomial(q[0, :, :], 1)`` from the candidate logits) against the top-K but appends
the original candidates; we check the proposed token itself, as the paper's Algorithm 1 states ("if y_i ∉ top-K of
M_t, resample y_i ∼ M_t"); (b) the reference is batch-size 1 (``p[0, ...]``) with cropped KV caches; we verify a
batch of rows at once and re-pad the prefixes each round (no teacher cache: the prefix is recomputed, the data are the
same); (c) a proposal the (top-p-warped) teacher gives probability 0 is never "in the top-K" (the reference's
``topk`` over a distribution with fewer than K non-zero entries can pick zero-probability tokens). Two reference
features are left out: the optional decay of K over the response (``expected_seq_len`` > 0; off by default), and
its top-p acceptance set (``teacher_p``; used only when ``top_k`` is 0). Note also that in the reference the student's
proposals are sampled with the *teacher's* generation config (``ddp_skd.py`` sets ``assistant_model.top_p`` /
``.temperature`` as plain attributes, which ``generate`` ignores); here the student has its own
``student_temperature`` / ``student_top_p``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

import torch

from distiller_nlp.core.errors import DistillerError

__all__ = [
    "GenerationOutput",
    "SKDAcceptance",
    "SKDOutput",
    "generate",
    "left_pad",
    "on_policy_batch",
    "position_ids_from_mask",
    "sample_token",
    "skd_accept",
    "skd_generate",
    "use_student_samples",
    "warp_logits",
]

EosIds = Union[int, Sequence[int], None]


# ------------------------------------------------------------------------------------------------------ helpers


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: the first real token of every row is position 0 (pads get 0 too)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token lists left-padded to the longest."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


_PARAMS: dict = {}


def _forward_params(model) -> set:
    """Names ``model.forward`` accepts (cached per class): ``cache`` vs ``past_key_values``, ``logits_to_keep``."""
    key = type(model)
    if key not in _PARAMS:
        try:
            _PARAMS[key] = set(inspect.signature(model.forward).parameters)
        except (TypeError, ValueError):
            _PARAMS[key] = set()
    return _PARAMS[key]


def _forward(model, input_ids, attention_mask, *, cache=None, use_cache=False, keep: int = 0):
    """One forward with positions from the mask; ``keep`` > 0 computes only the last ``keep`` positions' logits."""
    params = _forward_params(model)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                              "position_ids": position_ids_from_mask(attention_mask)[:, -input_ids.shape[1]:],
                              "use_cache": use_cache}
    if cache is not None:
        kwargs["cache" if "cache" in params else "past_key_values"] = cache
    if keep and "logits_to_keep" in params:
        kwargs["logits_to_keep"] = keep
    out = model(**kwargs)
    logits = out.logits if not keep else out.logits[:, -keep:]
    new_cache = None
    if use_cache:
        for name in ("cache", "past_key_values"):
            value = out.get(name, None) if hasattr(out, "get") else getattr(out, name, None)
            if value is not None:
                new_cache = value
                break
        if new_cache is None:
            raise DistillerError(f"{type(model).__name__} returned no KV cache with use_cache=True")
    return logits, new_cache


def warp_logits(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """fp32 logits divided by ``temperature`` and, for ``top_p`` < 1, with every token outside the nucleus set to
    -inf (the smallest set of most likely tokens whose mass reaches ``top_p``; the most likely token always stays)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / float(temperature)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = before >= float(top_p)
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_token(logits: torch.Tensor, do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens ``(B,)`` from logits ``(B, V)``: argmax when ``do_sample`` is False or ``temperature`` is 0,
    else one draw from ``softmax(warp_logits(...))`` using ``generator``."""
    if not do_sample or temperature == 0:
        return logits.float().argmax(dim=-1)
    probs = warp_logits(logits, temperature, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _eos_tensor(eos_token_id: EosIds, device) -> torch.Tensor | None:
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.as_tensor(ids, dtype=torch.long, device=device) if ids else None


# ---------------------------------------------------------------------------------------------------- generate


@dataclass
class GenerationOutput:
    """``sequences`` (B, P + N): the (left-padded) prompts then the responses, right-padded with ``pad_token_id``
    after EOS; ``attention_mask`` (B, P + N) marks the real tokens; ``response_mask`` (B, N) the generated ones
    (EOS included); ``logits`` (B, N, V) fp32 raw next-token logits when asked for."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_length: int
    logits: torch.Tensor | None = None

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length:]


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, eos_token_id: EosIds = None,
             pad_token_id: int = 0, generator: torch.Generator | None = None, use_cache: bool = True,
             output_logits: bool = False) -> GenerationOutput:
    """Batched greedy / sampled decoding of a Hugging Face causal LM from left-padded prompts.

    With ``use_cache`` the prompt is run once and each step feeds one token with the KV cache; without it every
    step recomputes the full sequence (same tokens, for testing). Sampling draws from ``generator`` only, so a
    seeded generator reproduces the output. A row stops at its first token in ``eos_token_id`` (an id or a list);
    generation ends when every row has stopped or after ``max_new_tokens``.
    """
    if input_ids.dim() != 2:
        raise DistillerError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}")
    if int(max_new_tokens) < 0:
        raise DistillerError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample and temperature is not None and temperature < 0:
        raise DistillerError(f"temperature must be >= 0, got {temperature}")
    device = input_ids.device
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device).long()
    if mask.shape != input_ids.shape:
        raise DistillerError(f"attention_mask {tuple(mask.shape)} must match input_ids {tuple(input_ids.shape)}")
    eos = _eos_tensor(eos_token_id, device)
    batch, prompt_len = input_ids.shape
    seq, seq_mask = input_ids, mask
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, alive, logits_out = [], [], []
    cache = None
    for _ in range(int(max_new_tokens)):
        if use_cache:
            step_ids = seq if cache is None else seq[:, -1:]
            logits, cache = _forward(model, step_ids, seq_mask, cache=cache, use_cache=True, keep=1)
        else:
            logits, _ = _forward(model, seq, seq_mask, use_cache=False, keep=1)
        logits = logits[:, -1, :]
        if output_logits:
            logits_out.append(logits.float())
        tok = sample_token(logits, do_sample, temperature, top_p, generator)
        alive.append(~finished)
        tok = torch.where(finished, torch.full_like(tok, int(pad_token_id)), tok)
        tokens.append(tok)
        if eos is not None:
            finished = finished | torch.isin(tok, eos)
        seq = torch.cat([seq, tok[:, None]], dim=1)
        seq_mask = torch.cat([seq_mask, torch.ones_like(tok[:, None])], dim=1)
        if eos is not None and bool(finished.all()):
            break
    if tokens:
        response_mask = torch.stack(alive, dim=1).long()
    else:
        response_mask = torch.zeros(batch, 0, dtype=torch.long, device=device)
    return GenerationOutput(
        sequences=seq, attention_mask=torch.cat([mask, response_mask], dim=1), response_mask=response_mask,
        prompt_length=prompt_len, logits=torch.stack(logits_out, dim=1) if output_logits and logits_out else None)


# ---------------------------------------------------------------------------------------------------------- SKD


class SKDAcceptance(NamedTuple):
    """Result of :func:`skd_accept` for ``(B, γ)`` proposals.

    ``tokens`` (B, γ): the round's output — accepted proposals, then the teacher's replacement at the first rejected
    position; positions from ``lengths`` on hold ``pad_value``. ``accepted`` (B, γ): kept student tokens.
    ``replaced`` (B, γ): the one position (if any) filled by the teacher. ``n_accepted`` (B,): length of the
    accepted prefix. ``lengths`` (B,): tokens the round adds (``n_accepted + 1`` after a rejection, else γ)."""

    tokens: torch.Tensor
    accepted: torch.Tensor
    replaced: torch.Tensor
    n_accepted: torch.Tensor
    lengths: torch.Tensor


def skd_accept(proposals: torch.Tensor, teacher_logits: torch.Tensor, top_k: int = 25,
               generator: torch.Generator | None = None, pad_value: int = -1) -> SKDAcceptance:
    """The SKD replacement rule on one block (pure; the only randomness is the replacement draw from ``generator``).

    ``proposals`` (B, γ): the student's tokens; ``teacher_logits`` (B, γ, V): the teacher's (already warped) logits
    at the positions that predict them. A proposal is accepted when it is among the teacher's ``top_k`` most likely
    tokens there (and has non-zero teacher probability); the block is cut at the first rejection, whose token is
    replaced by a draw from ``softmax(teacher_logits)`` at that position (reference: ``_speculative_kd_sampling``).
    """
    if proposals.dim() != 2 or teacher_logits.dim() != 3 or teacher_logits.shape[:2] != proposals.shape:
        raise DistillerError(f"skd_accept: proposals (B, γ) and teacher_logits (B, γ, V) expected, got "
                             f"{tuple(proposals.shape)} and {tuple(teacher_logits.shape)}")
    if int(top_k) < 1:
        raise DistillerError(f"top_k must be a positive integer, got {top_k!r}")
    gamma = proposals.shape[1]
    logits = teacher_logits.float()
    k = min(int(top_k), logits.shape[-1])
    proposals = proposals.long()
    top = logits.topk(k, dim=-1).indices                                         # (B, γ, K)
    in_top = (top == proposals.unsqueeze(-1)).any(dim=-1)
    possible = logits.gather(-1, proposals.unsqueeze(-1)).squeeze(-1) > float("-inf")
    is_accepted = in_top & possible
    n_accepted = is_accepted.long().cumprod(dim=-1).sum(dim=-1)                    # accepted prefix length
    rejected = n_accepted < gamma
    positions = torch.arange(gamma, device=proposals.device).unsqueeze(0)
    accepted = positions < n_accepted.unsqueeze(1)
    replaced = (positions == n_accepted.unsqueeze(1)) & rejected.unsqueeze(1)
    tokens = torch.where(accepted, proposals, torch.full_like(proposals, int(pad_value)))
    rows = rejected.nonzero().squeeze(-1)
    if rows.numel():
        at = n_accepted[rows]
        probs = logits[rows, at].softmax(dim=-1)
        draw = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        tokens[rows, at] = draw
    lengths = torch.where(rejected, n_accepted + 1, n_accepted)
    return SKDAcceptance(tokens, accepted, replaced, n_accepted, lengths)


@dataclass
class SKDOutput(GenerationOutput):
    """:class:`GenerationOutput` plus ``replaced`` (B, N): True where the token was sampled from the teacher, and
    per-row counts of ``rounds`` (teacher forwards) and ``n_replaced`` tokens."""

    replaced: torch.Tensor | None = None
    rounds: int = 0
    n_replaced: list | None = None

    @property
    def replacement_rate(self) -> float:
        """Teacher-sampled tokens / all generated tokens."""
        total = int(self.response_mask.sum())
        return sum(self.n_replaced or []) / total if total else 0.0


@torch.no_grad()
def skd_generate(student, teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 max_new_tokens: int, num_proposals: int = 5, top_k: int = 25, student_temperature: float = 1.0,
                 student_top_p: float = 1.0, teacher_temperature: float = 1.0, teacher_top_p: float = 1.0,
                 eos_token_id: EosIds = None, pad_token_id: int = 0,
                 generator: torch.Generator | None = None) -> SKDOutput:
    """Speculative-KD responses to a batch of (left-padded) prompts (Xu et al., ICLR 2025; see the module docstring
    for the line-level correspondence with the reference code).

    Each round: the student samples ``num_proposals`` (γ) tokens per unfinished row (KV-cached :func:`generate`,
    ``student_temperature`` / ``student_top_p``); the teacher runs **one** forward over prefix + proposals; its logits
    at the proposal positions, warped by ``teacher_temperature`` / ``teacher_top_p``, decide with :func:`skd_accept`
    (top-``top_k`` membership, cut at the first rejection, replacement drawn from the teacher). A row stops at EOS
    or after ``max_new_tokens``. ``student`` and ``teacher`` must share the tokenizer.
    """
    if int(num_proposals) < 1:
        raise DistillerError(f"num_proposals must be a positive integer, got {num_proposals!r}")
    device = input_ids.device
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device).long()
    eos = set() if eos_token_id is None else ({eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id))
    batch = input_ids.shape[0]
    prompts = [input_ids[b][mask[b] != 0].tolist() for b in range(batch)]
    out_tokens: list[list[int]] = [[] for _ in range(batch)]
    out_replaced: list[list[bool]] = [[] for _ in range(batch)]
    n_replaced = [0] * batch
    rounds = 0
    done = [int(max_new_tokens) <= 0] * batch
    while not all(done):
        active = [b for b in range(batch) if not done[b]]
        ids, row_mask = left_pad([prompts[b] + out_tokens[b] for b in active], pad_token_id, device)
        gamma = min(int(num_proposals), max(int(max_new_tokens) - len(out_tokens[b]) for b in active))
        proposal = generate(student, ids, row_mask, max_new_tokens=gamma, do_sample=student_temperature > 0,
                            temperature=student_temperature, top_p=student_top_p, eos_token_id=None,
                            pad_token_id=pad_token_id, generator=generator)
        proposals = proposal.sequences[:, ids.shape[1]:]
        logits, _ = _forward(teacher, proposal.sequences, proposal.attention_mask, use_cache=False, keep=gamma + 1)
        verdict = skd_accept(proposals, warp_logits(logits[:, :gamma], teacher_temperature, teacher_top_p),
                             top_k, generator)
        rounds += 1
        lengths = verdict.lengths.tolist()
        tokens = verdict.tokens.tolist()
        replaced = verdict.replaced.tolist()
        for i, b in enumerate(active):
            budget = int(max_new_tokens) - len(out_tokens[b])
            new, rep = tokens[i][:lengths[i]][:budget], replaced[i][:lengths[i]][:budget]
            stop = next((j for j, t in enumerate(new) if t in eos), None)
            if stop is not None:
                new, rep = new[:stop + 1], rep[:stop + 1]
                done[b] = True
            out_tokens[b] += new
            out_replaced[b] += rep
            n_replaced[b] += sum(rep)
            if len(out_tokens[b]) >= int(max_new_tokens):
                done[b] = True
    width = max((len(t) for t in out_tokens), default=0)
    responses = torch.full((batch, width), int(pad_token_id), dtype=torch.long)
    response_mask = torch.zeros((batch, width), dtype=torch.long)
    replaced_t = torch.zeros((batch, width), dtype=torch.bool)
    for b in range(batch):
        n = len(out_tokens[b])
        if n:
            responses[b, :n] = torch.as_tensor(out_tokens[b], dtype=torch.long)
            response_mask[b, :n] = 1
            replaced_t[b, :n] = torch.as_tensor(out_replaced[b], dtype=torch.bool)
    responses, response_mask, replaced_t = responses.to(device), response_mask.to(device), replaced_t.to(device)
    return SKDOutput(sequences=torch.cat([input_ids, responses], dim=1),
                     attention_mask=torch.cat([mask, response_mask], dim=1), response_mask=response_mask,
                     prompt_length=input_ids.shape[1], replaced=replaced_t, rounds=rounds,
                     n_replaced=n_replaced)


# ------------------------------------------------------------------------------------------- on-policy mixing


def use_student_samples(lmbda: float, generator: torch.Generator | None = None) -> bool:
    """GKD's data mixing (Agarwal et al. 2024, Algorithm 1): True with probability λ (``lmbda``, the *student data
    fraction*) — this batch's responses should be the student's own samples; False — keep the dataset's (supervised)
    responses. TRL's ``GKDTrainer.training_step``: ``if random.random() <= self.lmbda:`` generate on-policy."""
    value = float(lmbda)
    if not 0.0 <= value <= 1.0:
        raise DistillerError(f"lmbda must be in [0, 1], got {lmbda!r}")
    return bool(torch.rand((), generator=generator).item() < value)


def on_policy_batch(batch: Any, lmbda: float, sample_fn: Callable[[Any], Any],
                    generator: torch.Generator | None = None) -> tuple[Any, bool]:
    """``(sample_fn(batch), True)`` with probability λ (on-policy: the student's responses), else ``(batch, False)``
    (the supervised responses). ``sample_fn`` is e.g. a closure over :func:`generate` or :func:`skd_generate`."""
    if use_student_samples(lmbda, generator):
        return sample_fn(batch), True
    return batch, False
