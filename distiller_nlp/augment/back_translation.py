"""Back-translation (Distiller's ``back_translation`` stage): English → pivot language → English with two
MarianMT-style sequence-to-sequence checkpoints (``AutoModelForSeq2SeqLM`` / ``AutoTokenizer``, ``trust_remote_code=
False``; any local directory or Hub id).

Distiller used ``Helsinki-NLP/opus-mt-en-ROMANCE`` → ``opus-mt-ROMANCE-en`` with the target-language token ``>>fr<<``;
our defaults are the bilingual pair ``Helsinki-NLP/opus-mt-en-de`` / ``opus-mt-de-en`` (``target_prefix`` =
``">>fr<<"`` reproduces the multilingual setup with the ROMANCE pair).

``aug_p`` is the probability that an example is back-translated at all (drawn from the example's random stream);
the others are returned unchanged, as are empty texts. Translation runs in batches of ``batch_size``.

Decoding: beam search with ``num_beams`` (default 4) when ``top_p`` is unset — deterministic; or nucleus sampling
when ``top_p`` is set (with ``temperature``). Sampling is done per example and seeded from the example's numpy
generator: every example gets its own ``torch.Generator`` (one seed per direction) and a logits processor adds
Gumbel noise drawn from it to the nucleus-filtered, temperature-scaled scores before a greedy pick — the
Gumbel-max trick, an exact sample of the filtered softmax. So the result depends on the seed and the example only,
not on the batch size or on the other texts of a batch (up to the floating-point noise of padded batches).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from distiller_nlp.augment.contextual import check_positive, load_cached, pick_device, resolve_checkpoint
from distiller_nlp.augment.registry import register_augmenter
from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

DEFAULT_FORWARD = "Helsinki-NLP/opus-mt-en-de"
DEFAULT_BACKWARD = "Helsinki-NLP/opus-mt-de-en"


def _gumbel_processor(generators, top_p: float, temperature: float):
    """A ``LogitsProcessor``: temperature, top-p filtering, then per-row Gumbel noise from ``generators[row]``."""
    import torch
    from transformers import LogitsProcessor

    class _PerRowGumbel(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.float() / temperature
            probs = torch.softmax(scores, dim=-1)
            sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
            cum = sorted_p.cumsum(-1)
            # keep the smallest prefix whose mass reaches top_p (always the first entry)
            drop_sorted = (cum - sorted_p) >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
            noise = torch.stack([
                -torch.log(-torch.log(torch.rand(scores.shape[-1], generator=g).clamp_(1e-20, 1.0 - 1e-7)))
                for g in generators
            ]).to(scores.device)
            return scores + noise

    return _PerRowGumbel()


@register_augmenter("back_translation")
class BackTranslationAugmenter:
    """``augment(texts, rngs)`` → each text back-translated with probability ``aug_p``, else unchanged.

    Params: ``forward_model`` (English → pivot), ``backward_model`` (pivot → English), ``target_prefix`` (the
    pivot-language token of a multilingual forward model, prepended to every source text, e.g. ``">>fr<<"``; a
    space is added unless it ends with one; default none), ``batch_size`` (16),
    ``num_beams`` (4, beam search when ``top_p`` is unset), ``top_p`` (nucleus sampling when set), ``temperature``
    (1.0, sampling only), ``max_length`` (128: source tokens kept and new tokens generated), ``device``.
    """

    def __init__(self, aug_p: float = 0.3, forward_model: str = DEFAULT_FORWARD,
                 backward_model: str = DEFAULT_BACKWARD, target_prefix: str = "", batch_size: int = 16,
                 num_beams: int = 4, top_p: Optional[float] = None, temperature: float = 1.0,
                 max_length: int = 128, device: str = "auto"):
        check_positive("back_translation", batch_size=batch_size, num_beams=num_beams, temperature=temperature,
                       max_length=max_length)
        if top_p is not None:
            check_positive("back_translation", top_p=top_p)
            if top_p > 1:
                raise DistillerError(f"back_translation augmenter: top_p must be in (0, 1], got {top_p}")
        self.aug_p = float(aug_p)
        self.forward_path = resolve_checkpoint(forward_model, "back_translation", "forward_model", "translation")
        self.backward_path = resolve_checkpoint(backward_model, "back_translation", "backward_model",
                                                "translation")
        prefix = str(target_prefix or "")
        self.target_prefix = prefix + " " if prefix and not prefix[-1].isspace() else prefix
        self.batch_size = int(batch_size)
        self.num_beams = int(num_beams)
        self.top_p = None if top_p is None else float(top_p)
        self.temperature = float(temperature)
        self.max_length = int(max_length)
        self.device = device

    def _translate(self, path: str, param: str, texts: list[str], seeds: Optional[list[int]]) -> list[str]:
        import torch

        device = pick_device(self.device)
        model, tokenizer = load_cached("seq2seq", path, device, "back_translation", param, "translation")
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [""] * len(texts)
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                            return_tensors="pt").to(device)
            kwargs = dict(max_new_tokens=self.max_length, num_return_sequences=1)
            if seeds is None:
                kwargs.update(num_beams=self.num_beams, do_sample=False)
            else:
                gens = []
                for i in idx:
                    g = torch.Generator()
                    g.manual_seed(int(seeds[i]))
                    gens.append(g)
                from transformers import LogitsProcessorList

                kwargs.update(num_beams=1, do_sample=False, top_p=None, top_k=None, temperature=None,
                              logits_processor=LogitsProcessorList(
                                  [_gumbel_processor(gens, self.top_p, self.temperature)]))
            with torch.inference_mode():
                gen = model.generate(**enc, **kwargs)
            decoded = tokenizer.batch_decode(gen, skip_special_tokens=True)
            for i, t in zip(idx, decoded):
                out[i] = t.strip()
        return out

    def augment(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        """Augmented copies of ``texts``; ``rngs[i]`` is example i's random stream."""
        out = list(texts)
        chosen, fwd_seeds, bwd_seeds = [], [], []
        for i, (text, rng) in enumerate(zip(texts, rngs)):
            if rng.random() >= self.aug_p or not text.strip():
                continue
            chosen.append(i)
            if self.top_p is not None:
                fwd_seeds.append(int(rng.integers(2**63 - 1)))
                bwd_seeds.append(int(rng.integers(2**63 - 1)))
        if not chosen:
            return out
        sampling = self.top_p is not None
        src = [self.target_prefix + texts[i] for i in chosen]
        pivot = self._translate(self.forward_path, "forward_model", src, fwd_seeds if sampling else None)
        back = self._translate(self.backward_path, "backward_model", pivot, bwd_seeds if sampling else None)
        for i, t in zip(chosen, back):
            out[i] = t if t else texts[i]
        return out
