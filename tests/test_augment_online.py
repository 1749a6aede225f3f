"""Augmented copies regenerated every N epochs and in-batch repeated augmentation (Distiller's num_reaug and
repeated_aug): which copies each epoch sees, which indices share a batch, and a distill run with both."""

import json
import os

import datasets
import numpy as np

from distiller_nlp.augment import augment_dataset
from distiller_nlp.augment.online import AugmentedTrainSet, round_seed
from distiller_nlp.cli import main
from distiller_nlp.core.engine import GroupedBatchSampler

STUDENT = "layers=1,hidden=16,heads=2,intermediate=32"
FAST = ["--precision", "no", "--report-to", "none", "--max-length", "16", "--batch-size", "8"]


def _originals(n=6):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    return datasets.Dataset.from_dict({"text": [" ".join(np.roll(words, i)) for i in range(n)], "label": [0, 1] * (n // 2)})


def test_copies_follow_the_epoch_and_rounds_are_deterministic():
    orig = _originals()
    made = []

    def make_round(r):
        made.append(r)
        return augment_dataset(orig, ["random"], aug_p=0.5, copies=1, seed=round_seed(3, r))

    ts = AugmentedTrainSet(orig, make_round, copies=1, reaug_every=2)
    assert len(ts) == 12 and ts[0] == orig[0]
    first = [ts[i]["text"] for i in range(6, 12)]
    ts.set_epoch(1)
    assert [ts[i]["text"] for i in range(6, 12)] == first  # same round
    ts.set_epoch(2)
    second = [ts[i]["text"] for i in range(6, 12)]
    assert second != first and made == [0, 1]
    ts.set_epoch(0)  # e.g. a resumed run: round 0 again, identical copies
    assert [ts[i]["text"] for i in range(6, 12)] == first
    assert round_seed(3, 0) == 3 and round_seed(3, 1) != round_seed(3, 2)


def test_repeated_augmentation_keeps_each_example_with_its_copies():
    orig = _originals(6)
    ts = AugmentedTrainSet(orig, lambda r: augment_dataset(orig, ["random"], aug_p=0.5, copies=2, seed=r),
                           copies=2, repeated_aug=3)
    groups = ts.index_groups
    assert groups[1] == [1, 7, 13]
    sampler = GroupedBatchSampler(groups, batch_size=6, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 and all(len(b) == 6 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(18))  # every row once per epoch
    for b in batches:
        for i in b:
            assert {i % 6, i % 6 + 6, i % 6 + 12} <= set(b)
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_distill_with_reaug_and_repeated_aug(tiny_teacher, sst2_dir, tmp_path, capsys):
    out = tmp_path / "s"
    code = main(["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
                 STUDENT, "--output-dir", str(out), *FAST, "--epochs", "2", "--pred-loss", "kd", "--augment", "random",
                 "--reaug-every", "1", "--repeated-aug", "2", "--teacher-cache", "auto", "--group-by-length"])
    assert code == 0
    m = json.load(open(out / "metrics.json"))
    assert m["train_examples"] == 2 * m["train_examples_original"] and not m["teacher_cached"]
    # bad input: repeated augmentation without a stage
    code = main(["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
                 STUDENT, "--output-dir", str(tmp_path / "bad"), *FAST, "--repeated-aug", "2"])
    assert code == 2 and "augment.stages" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")
