"""The cheap floors every text run is compared with: the majority class and TF-IDF + a linear model.

A fine-tuned teacher or a distilled student that does not beat a bag of n-grams fitted in seconds on the same
training split is not worth having, however the run itself "succeeded". :func:`compute_floors` fits both floors on
the run's own training split and scores them with the task's metrics on the run's own evaluation splits;
:func:`floor_warning` says, in one line, when a run's selection metric does not beat the TF-IDF floor and what to try.

* classification: majority class of the training labels; TF-IDF (word 1-2 grams, sublinear tf) + logistic
  regression (C=4, lbfgs).
* regression: the training mean; TF-IDF + ridge regression (alpha=1).

Pairs are joined as ``text [SEP] text_pair``. Large training splits are subsampled to :data:`MAX_FIT_EXAMPLES`
(seeded) so that the floors stay a few seconds on CPU. Depends on scikit-learn (a dependency of the package).
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Optional

import numpy as np

__all__ = ["fit_tfidf", "tfidf_texts", "compute_floors", "floors_or_none", "floor_warning", "floor_summary", "floor_card_row", "MAX_FIT_EXAMPLES"]

logger = logging.getLogger(__name__)

MAX_FIT_EXAMPLES = 50_000


def _texts(split) -> list[str]:
    texts = split["text"]
    if "text_pair" in split.column_names:
        return [f"{a} [SEP] {b}" for a, b in zip(texts, split["text_pair"])]
    return list(texts)


def tfidf_texts(split) -> list[str]:
    """The texts the TF-IDF floor reads: ``text``, or ``text [SEP] text_pair`` for pair tasks."""
    return _texts(split)


def fit_tfidf(train, is_regression: bool = False):
    """The TF-IDF floor fitted on a normalized training split: ``(vectorizer, model)``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    from sklearn.dummy import DummyClassifier

    y = np.asarray(train["label"])
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    try:
        x = vec.fit_transform(_texts(train))
    except ValueError:  # no word at all in the training texts (e.g. only punctuation): the floor is a constant
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 1))
        x = vec.fit_transform([t or " " for t in _texts(train)])
    if is_regression:
        model = Ridge(alpha=1.0).fit(x, y.astype(np.float64))
    elif len(np.unique(y)) < 2:  # one class in training: logistic regression is undefined, the floor is that class
        model = DummyClassifier(strategy="most_frequent").fit(x, y)
    else:
        model = LogisticRegression(max_iter=2000, C=4.0).fit(x, y)
    return vec, model


def compute_floors(ds, task, seed: int = 0) -> dict:
    """Fit the floors on ``ds["train"]`` (the normalized splits of :func:`~distiller_nlp.tasks.load_task_data`)
    and score them on :func:`~distiller_nlp.tasks.eval_splits` — the first as ``eval_``, the others by name, as the
    engine names them. Returns flat keys ``floor_majority_<prefix>_<metric>``, ``floor_tfidf_<prefix>_<metric>``
    and ``floors_s``."""
    from distiller_nlp.tasks.loading import eval_splits
    from distiller_nlp.tasks.metrics import compute_task_metrics

    t0 = time.perf_counter()
    train = ds["train"]
    if len(train) > MAX_FIT_EXAMPLES:
        train = train.shuffle(seed=seed).select(range(MAX_FIT_EXAMPLES))
    y = np.asarray(train["label"])
    vec, model = fit_tfidf(train, task.is_regression)
    if task.is_regression:
        constant = float(y.mean())
    else:
        values, counts = np.unique(y, return_counts=True)
        constant = int(values[np.argmax(counts)])
    out: dict = {}
    for i, (name, split) in enumerate(eval_splits(ds, task).items()):
        prefix = "eval" if i == 0 else name
        refs = np.asarray(split["label"])
        pred = model.predict(vec.transform(_texts(split)))
        flat = np.full(len(refs), constant, dtype=np.float64 if task.is_regression else np.int64)
        for kind, preds in (("majority", flat), ("tfidf", pred)):
            with warnings.catch_warnings():  # a constant predictor has no correlation: NaN, reported as 0
                warnings.simplefilter("ignore")
                scores = compute_task_metrics(task.metrics, preds, refs)
            for metric, value in scores.items():
                value = float(value)
                out[f"floor_{kind}_{prefix}_{metric}"] = 0.0 if np.isnan(value) else round(value, 6)
    out["floors_s"] = round(time.perf_counter() - t0, 3)
    return out


def floor_summary(metrics: dict, task) -> Optional[str]:
    """``majority 0.622, TF-IDF 0.655 (dev accuracy)`` from a run's metrics, or None when it has no floors."""
    main = task.main_metric
    maj, tfidf = metrics.get(f"floor_majority_eval_{main}"), metrics.get(f"floor_tfidf_eval_{main}")
    if maj is None or tfidf is None:
        return None
    return f"majority class {maj:.4f}, TF-IDF + {'ridge' if task.is_regression else 'logistic regression'} " \
           f"{tfidf:.4f} (dev {main}, the same training split)"


def floor_warning(metrics: dict, task, who: str, advice: str) -> Optional[str]:
    """One line when the run's dev score does not beat the TF-IDF floor (None otherwise); also logged."""
    main = task.main_metric
    score, tfidf = metrics.get(f"eval_{main}"), metrics.get(f"floor_tfidf_eval_{main}")
    if score is None or tfidf is None or score > tfidf:
        return None
    line = (f"the {who}'s dev {main} {score:.4f} does not beat the TF-IDF floor {tfidf:.4f} (majority class "
            f"{metrics.get(f'floor_majority_eval_{main}', float('nan')):.4f}) fitted on the same training split: "
            f"{advice}")
    logger.warning(line)
    return line


def floor_card_row(metrics: dict, task) -> Optional[str]:
    """The model card's "floors" fact: :func:`floor_summary`, flagged when the model does not beat them."""
    text = floor_summary(metrics, task)
    if text and metrics.get("floor_warning"):
        text += " — **this model does not beat the TF-IDF floor**"
    return text


def floors_or_none(ds, task, seed: int = 0) -> dict:
    """:func:`compute_floors`, or ``{}`` with a one-line warning when they cannot be fitted: the floors are advice,
    and a run that has trained never fails because of them."""
    try:
        return compute_floors(ds, task, seed=seed)
    except Exception as exc:  # noqa: BLE001 - advisory output
        logger.warning("floors skipped: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return {}
