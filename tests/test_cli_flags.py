"""Flags come from config fields: every flagged field of a config class is a flag with the field's help in each CLI
that uses the class, one override mechanism sets its dotted key, and a new field is a new flag everywhere."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from distiller_nlp.core.cli import add_config_flags, config_overrides, flag_name, load_from_args
from distiller_nlp.core.config import iter_fields, option
from distiller_nlp.core.train_args import TrainArgs


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _options(p: argparse.ArgumentParser) -> dict:
    return {s: a for a in p._actions for s in a.option_strings}


def _parsers():
    import autodistil.cli
    import distiller_nlp.cli
    import vision_kd.cli
    from autodistil.config import TrainSuperLMConfig
    from distiller_nlp.augment.mlm import MLMConfig
    from distiller_nlp.config import DistillConfig, FinetuneConfig
    from vision_kd.config import VisionConfig

    nlp, ad, vk = distiller_nlp.cli.build_parser(), autodistil.cli.build_parser(), vision_kd.cli.build_parser()
    return [("distiller-nlp distill", _subparser(nlp, "distill"), DistillConfig),
            ("distiller-nlp finetune-teacher", _subparser(nlp, "finetune-teacher"), FinetuneConfig),
            ("distiller-nlp train-mlm", _subparser(nlp, "train-mlm"), MLMConfig),
            ("autodistil train-superlm", _subparser(ad, "train-superlm"), TrainSuperLMConfig),
            ("vision-kd train", _subparser(vk, "train"), VisionConfig)]


@pytest.mark.parametrize("index", range(5))
def test_every_flagged_train_field_is_a_flag_with_its_help(index):
    name, parser, cls = _parsers()[index]
    options = _options(parser)
    train_cls = typing.get_type_hints(cls)["train"]
    assert issubclass(train_cls, TrainArgs)
    flagged = [(f, flag_name(f)) for _, f, _ in iter_fields(train_cls) if flag_name(f)]
    assert len(flagged) >= 15
    for f, flag in flagged:
        action = options.get(f"--{flag}")
        assert action is not None, f"{name} has no --{flag}"
        assert f.metadata["help"].split("{")[0].strip() in action.help, (name, flag, action.help)
    # the shared ones exist in all five CLIs
    for flag in ("--epochs", "--lr", "--seed", "--precision", "--batch-size", "--cpu"):
        assert flag in options, (name, flag)


@dataclasses.dataclass
class MoreTrainArgs(TrainArgs):
    """TrainArgs with one new field."""

    lr_floor: float = option(0.0, help="lowest learning rate the schedule reaches", min=0, flag=True)


@dataclasses.dataclass
class Recipe:
    """A config using it."""

    name: str = option("x", help="a name", flag=True)
    train: MoreTrainArgs = option(default_factory=MoreTrainArgs, help="training")


@dataclasses.dataclass
class Twice:
    """A config whose two sections declare the same flags."""

    a: TrainArgs = option(default_factory=TrainArgs, help="one")
    b: TrainArgs = option(default_factory=TrainArgs, help="two")


def test_a_new_field_is_a_flag_with_its_help_and_sets_its_key():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=None)
    p.add_argument("--set", action="append", default=[])
    added = add_config_flags(p, Recipe)
    assert "lr-floor" in added and "epochs" in added and "name" in added
    action = _options(p)["--lr-floor"]
    assert action.help.startswith("lowest learning rate the schedule reaches")
    args = p.parse_args(["--lr-floor", "1e-6", "--epochs", "2", "--set", "name=y"])
    assert config_overrides(args) == {"train.lr_floor": 1e-6, "train.epochs": 2.0}
    cfg = load_from_args(Recipe, args)
    assert cfg.train.lr_floor == 1e-6 and cfg.train.epochs == 2.0 and cfg.name == "y"
    with pytest.raises(Exception, match="train.lr_floor"):
        load_from_args(Recipe, p.parse_args(["--lr-floor", "-1"]))


def test_a_flag_declared_twice_is_refused():
    with pytest.raises(Exception, match="declared twice"):
        add_config_flags(argparse.ArgumentParser(), Twice)
