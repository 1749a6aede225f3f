"""Masked-LM substitution (Distiller's ``contextual`` stage; nlpaug ``ContextualWordEmbsAug`` there, our own code here).

For each text, ``n = max(1, round(aug_p · #words))`` of its replaceable words (at most all of them) are chosen with
the example's random stream, each replaced by one mask token, and the masked text goes through a ``*ForMaskedLM``
checkpoint (any local directory or Hub id; ``AutoModelForMaskedLM`` / ``AutoTokenizer``, ``trust_remote_code=False``)
in batches of ``batch_size``. At each mask a word is drawn by nucleus (top-p) sampling from
``softmax(logits / temperature)`` restricted to

- whole words: no special tokens, no subword continuations (WordPiece ``##x``; for SentencePiece / byte-level BPE
  vocabularies only word-initial pieces ``▁x`` / ``Ġx``), made of letters only (optionally joined by ``'`` or
  ``-``), so no ``[unused12]``, digits or punctuation;
- a word different from the one replaced (case-insensitive).

The draw uses the example's numpy generator (a uniform number against the cumulative nucleus probabilities), so the
result depends on the seed and the example only, not on the batch size or on the order of the texts (up to the
floating-point noise of padded batches, ~1e-6 in a probability, which could change a draw only at an exact boundary).

Words are whitespace-separated tokens. A word is replaceable when its core (the token without leading and trailing
punctuation) is made of letters (optionally joined by ``'`` or ``-``) and the token is not a mention, hashtag, URL or
e-mail. Only the core is replaced: punctuation around it, the other words and all whitespace are kept exactly. A
replacement copies the capitalisation of the replaced word (``Great`` → ``Nice``, ``GREAT`` → ``NICE``).

The checkpoint is loaded lazily, once per process (a process-wide cache keyed by path and device). There is no
default checkpoint: a masked-LM head is task data, not a download. ``distiller-nlp train-mlm`` fits one for the
packaged MiniLM (which ships without a head) in a few minutes of CPU.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Optional, Sequence

import numpy as np

from distiller_nlp.augment.registry import register_augmenter
from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

#: How a user points a stage at a checkpoint (the distill config key, settable with ``--set``).
PARAMS_HINT = "--aug-param {stage}.{param}=DIR"

_WORD_RE = re.compile(r"\S+")
_CORE_RE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_LETTERS_RE = re.compile(r"[^\W\d_]+(?:['\-’][^\W\d_]+)*")
_SKIP_RE = re.compile(r"[@#/]|^www\.|^https?:|\.com\b", re.I)

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------ shared helpers

def resolve_checkpoint(name: Optional[str], stage: str, param: str, what: str) -> str:
    """Resolve a stage's checkpoint argument like every model argument (local dir, HF cache offline, Hub id
    online); a miss is a DistillerError naming the checkpoint and the override to use."""
    from distiller_nlp.models import resolve_model_path

    hint = PARAMS_HINT.format(stage=stage, param=param)
    if name is None or str(name).strip() == "":
        raise DistillerError(f"{stage} augmenter: no {what} checkpoint given; pass {hint}")
    try:
        return resolve_model_path(str(name))
    except DistillerError:
        raise DistillerError(_missing_message(name, stage, param, what)) from None


def _missing_message(name, stage: str, param: str, what: str) -> str:
    hint = PARAMS_HINT.format(stage=stage, param=param)
    if stage == "contextual":
        fix = f"train one with `distiller-nlp train-mlm` and pass {hint}, or use --augment random"
    else:
        fix = f"pass {hint} (a local MarianMT-style checkpoint), or use --augment random"
    return (f"{stage} augmenter: {what} checkpoint '{name}' not found offline (no such local directory, and the "
            f"Hugging Face cache has no copy); {fix}")


def load_cached(kind: str, path: str, device: str, stage: str, param: str, what: str):
    """``(model, tokenizer)`` of ``path`` for ``kind`` (``masked_lm`` | ``seq2seq``), loaded once per process, in
    eval mode, fp32, on ``device``. A load failure is a DistillerError in the style of :func:`resolve_checkpoint`."""
    key = (kind, path, device)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from distiller_nlp.models.load import info_keys, quiet_transformers

        auto = AutoModelForMaskedLM if kind == "masked_lm" else AutoModelForSeq2SeqLM
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
                model, info = auto.from_pretrained(path, trust_remote_code=False, output_loading_info=True)
        except OSError as exc:
            raise DistillerError(_missing_message(path, stage, param, what) + f" ({_first_line(exc)})") from exc
        except (ValueError, KeyError) as exc:
            raise DistillerError(f"{stage} augmenter: cannot load '{path}' as a {what} model: {_first_line(exc)}") \
                from exc
        missing = info_keys(info, "missing_keys") + info_keys(info, "mismatched_keys")
        if kind == "masked_lm" and missing:
            raise DistillerError(
                f"{stage} augmenter: '{path}' has no trained masked-LM head (newly initialised: "
                f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); fit one with "
                f"`distiller-nlp train-mlm --model {path}` and pass {PARAMS_HINT.format(stage=stage, param=param)}"
            )
        model.to(device).eval()
        _CACHE[key] = (model, tokenizer)
        return _CACHE[key]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def pick_device(device: str) -> str:
    """This process's GPU (``cuda:<local rank>``, :func:`distiller_nlp.core.distributed.process_device`) for
    ``auto`` or a bare ``cuda`` when a GPU is present — not ``cuda`` = ``cuda:0`` on every rank of a multi-GPU run —
    ``cpu`` without one, else the given device. The result names the device exactly (the model cache's key)."""
    import torch

    from distiller_nlp.core.distributed import process_device

    if device in ("auto", "cuda"):
        if not torch.cuda.is_available():
            if device == "cuda":
                raise DistillerError("augmentation device 'cuda' asked for, but no CUDA GPU is available")
            return "cpu"
        return str(process_device(False))
    return str(device)


def check_positive(stage: str, **values) -> None:
    """Each named value must be a positive number (one-line error naming the stage and parameter)."""
    for k, v in values.items():
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
            raise DistillerError(f"{stage} augmenter: {k} must be a positive number, got {v!r}")


def nucleus_draw(probs: np.ndarray, top_p: float, u: float) -> int:
    """Index drawn from the top-p nucleus of ``probs`` with the uniform number ``u`` ∈ [0, 1).

    The nucleus is the smallest set of most probable entries whose mass reaches ``top_p`` (at least one entry); it
    is renormalised and ``u`` is looked up in its cumulative sum. Ties are broken by index (a stable sort), so the
    result is a deterministic function of (probs, u)."""
    order = np.argsort(-probs, kind="stable")
    sorted_p = probs[order]
    cum = np.cumsum(sorted_p)
    k = int(np.searchsorted(cum, top_p * cum[-1], side="left")) + 1
    k = max(1, min(k, len(order)))
    nucleus = cum[:k] / cum[k - 1]
    j = int(np.searchsorted(nucleus, u, side="right"))
    return int(order[min(j, k - 1)])


# ------------------------------------------------------------------------------------------------ the stage

def _vocab_word_table(tokenizer) -> tuple[np.ndarray, list[str], dict]:
    """``(allowed, words, index)``: which vocabulary ids may replace a whole word, the word each id spells, and
    ``{lower-cased word: [ids]}`` (to exclude the replaced word itself)."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    tokens = [t if isinstance(t, str) else "" for t in tokens]
    special = set(tokenizer.all_special_ids)
    wordpiece = any(t.startswith("##") for t in tokens)
    marker = None
    if not wordpiece:
        n_sp = sum(t.startswith("\u2581") for t in tokens)
        n_bpe = sum(t.startswith("\u0120") for t in tokens)
        if max(n_sp, n_bpe) > 0:
            marker = "\u2581" if n_sp >= n_bpe else "\u0120"
    allowed = np.zeros(size, dtype=bool)
    words = [""] * size
    for i, t in enumerate(tokens):
        if i in special or not t:
            continue
        if wordpiece:
            if t.startswith("##"):
                continue
            word = t
        elif marker is not None:
            if not t.startswith(marker):
                continue
            word = t[len(marker):]
        else:
            word = t
        if _LETTERS_RE.fullmatch(word):
            allowed[i] = True
            words[i] = word
    index: dict = {}
    for i, w in enumerate(words):
        if w:
            index.setdefault(w.lower(), []).append(i)
    return allowed, words, index


def _match_case(word: str, like: str) -> str:
    if len(like) > 1 and like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@register_augmenter("contextual")
class ContextualAugmenter:
    """``augment(texts, rngs)`` → texts with a fraction ``aug_p`` of their words replaced by a masked LM's samples.

    Params: ``model`` (required: a local ``*ForMaskedLM`` directory or Hub id), ``batch_size`` (texts per forward
    pass, 32), ``top_p`` (nucleus mass, 0.9), ``temperature`` (1.0), ``max_length`` (tokens per masked text, 128;
    masks cut off by truncation keep their word), ``device`` (``auto`` | ``cpu`` | ``cuda``...).
    """

    def __init__(self, aug_p: float = 0.3, model: Optional[str] = None, batch_size: int = 32, top_p: float = 0.9,
                 temperature: float = 1.0, max_length: int = 128, device: str = "auto"):
        check_positive("contextual", batch_size=batch_size, top_p=top_p, temperature=temperature,
                       max_length=max_length)
        if top_p > 1:
            raise DistillerError(f"contextual augmenter: top_p must be in (0, 1], got {top_p}")
        self.aug_p = float(aug_p)
        self.model_name = model
        self.path = resolve_checkpoint(model, "contextual", "model", "masked-LM")
        self.batch_size = int(batch_size)
        self.top_p = float(top_p)
        self.temperature = float(temperature)
        self.max_length = int(max_length)
        self.device = device

    # ------------------------------------------------------------------ per-process state
    def _load(self):
        device = pick_device(self.device)
        model, tokenizer = load_cached("masked_lm", self.path, device, "contextual", "model", "masked-LM")
        if tokenizer.mask_token is None:
            raise DistillerError(f"contextual augmenter: the tokenizer of '{self.path}' has no mask token")
        key = ("vocab", self.path)
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE[key] = _vocab_word_table(tokenizer)
        return model, tokenizer, _CACHE[key], device

    # ------------------------------------------------------------------ planning (uses the rngs)
    def _plan(self, text: str, rng: np.random.Generator):
        """``(spans, chosen)``: word cores ``(start, end)`` of the text and the sorted indices (into spans) to mask."""
        words = list(_WORD_RE.finditer(text))
        spans = []
        for m in words:
            token = m.group(0)
            if _SKIP_RE.search(token):
                continue
            lead, core, _ = _CORE_RE.match(token).groups()
            if core and _LETTERS_RE.fullmatch(core):
                start = m.start() + len(lead)
                spans.append((start, start + len(core)))
        if not spans:
            return spans, []
        n = min(len(spans), max(1, int(round(self.aug_p * len(words)))))
        chosen = sorted(rng.choice(len(spans), size=n, replace=False).tolist())
        return spans, chosen

    def augment(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        """Augmented copies of ``texts``; ``rngs[i]`` is example i's random stream."""
        import torch

        plans = [self._plan(t, rng) for t, rng in zip(texts, rngs)]
        todo = [i for i, (_, chosen) in enumerate(plans) if chosen]
        out = list(texts)
        if not todo:
            return out
        model, tokenizer, table, device = self._load()
        from distiller_nlp.models import mlm_prediction_head

        head = mlm_prediction_head(model)
        mask = tokenizer.mask_token
        mask_id = tokenizer.mask_token_id
        masked = {}
        for i in todo:
            spans, chosen = plans[i]
            text, pieces, pos = texts[i], [], 0
            for j in chosen:
                s, e = spans[j]
                pieces += [text[pos:s], mask]
                pos = e
            masked[i] = "".join(pieces) + text[pos:]
        # longest first: less padding per batch; the result does not depend on the order
        order = sorted(todo, key=lambda i: -len(masked[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            enc = tokenizer([masked[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                            return_tensors="pt").to(device)
            sel = enc["input_ids"] == mask_id
            with torch.inference_mode():
                if head is not None:  # vocabulary logits at the masks only (for MiniLM half the cost of a pass)
                    hidden = getattr(model, model.base_model_prefix)(**enc).last_hidden_state
                    logits = head(hidden[sel])
                else:
                    logits = model(**enc).logits[sel]
            logits = logits.double().cpu().numpy()
            starts = np.concatenate([[0], np.cumsum(sel.sum(1).cpu().numpy())])
            for row, i in enumerate(idx):
                out[i] = self._fill(texts[i], plans[i], logits[starts[row]:starts[row + 1]], table, rngs[i])
        return out

    def _fill(self, text, plan, logits, table, rng) -> str:
        allowed, vocab_words, index = table
        spans, chosen = plan
        pieces, pos = [], 0
        for k, j in enumerate(chosen):
            s, e = spans[j]
            original = text[s:e]
            u = rng.random()  # drawn for every chosen word, so the stream does not depend on truncation
            word = original
            if k < len(logits):
                scores = np.where(allowed, logits[k] / self.temperature, -np.inf)
                same = index.get(original.lower())
                if same:
                    scores[same] = -np.inf
                finite = np.isfinite(scores)
                if finite.any():
                    probs = np.exp(scores - scores[finite].max())
                    word = _match_case(vocab_words[nucleus_draw(probs, self.top_p, u)], original)
            pieces += [text[pos:s], word]
            pos = e
        return "".join(pieces) + text[pos:]
