"""One config schema: strict YAML recipes, flags override keys, one-line errors naming key and file."""

import os

import pytest

from distiller_nlp.config import DistillConfig, FinetuneConfig
from distiller_nlp.core.config import load_config, parse_set_option
from distiller_nlp.core.errors import DistillerError


def write(tmp_path, text, name="recipe.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_recipe_loads_with_nested_sections(tmp_path):
    path = write(tmp_path, """
teacher: runs/teacher
student_shape: layers=2,hidden=64,heads=2,intermediate=128
data: {task: sst2, data_dir: /data/sst2}
kd:
  pred_loss: kd
  temperature: 4
  intermediate:
    - {layer_T: 4, layer_S: 1, feature: hidden, loss: hidden_mse, weight: 0.5, proj: linear}
  mapping: {strategy: skip, loss: mi_alpha, params: {alpha: 0.9}}
train: {epochs: 2, lr: 3.0e-5}
""")
    cfg = load_config(DistillConfig, path)
    assert cfg.kd.temperature == 4.0 and isinstance(cfg.kd.temperature, float)
    assert cfg.kd.intermediate[0].layer_T == 4 and cfg.kd.intermediate[0].weight == 0.5
    assert cfg.kd.mapping.params == {"alpha": 0.9}
    assert cfg.train.epochs == 2 and cfg.train.lr == 3e-5
    assert cfg.data.task == "sst2"


def test_flags_and_set_override_file(tmp_path):
    path = write(tmp_path, "train: {epochs: 2}\nkd: {temperature: 1}\n")
    cfg = load_config(DistillConfig, path, {"train.epochs": 5, "train.seed": None}, ["kd.temperature=3.5"])
    assert cfg.train.epochs == 5 and cfg.kd.temperature == 3.5 and cfg.train.seed == 42


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "kd: {tempreature: 2}\n")
    with pytest.raises(DistillerError) as exc:
        load_config(DistillConfig, path)
    msg = str(exc.value)
    assert "kd.tempreature" in msg and path in msg and "\n" not in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(DistillerError, match="unknown key 'studnet'"):
        load_config(DistillConfig, write(tmp_path, "studnet: x\n"))


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "kd:\n  pred_loss: kd\n   temperature: [1,\n")
    with pytest.raises(DistillerError, match=r"malformed YAML in .*recipe.yaml at line \d+"):
        load_config(DistillConfig, path)


def test_wrong_type_and_missing_file(tmp_path):
    with pytest.raises(DistillerError, match=r"train.epochs.*cannot read .many."):
        load_config(FinetuneConfig, write(tmp_path, "train: {epochs: many}\n"))
    with pytest.raises(DistillerError, match="config file not found"):
        load_config(FinetuneConfig, str(tmp_path / "nope.yaml"))
    with pytest.raises(DistillerError, match="must hold a mapping"):
        load_config(FinetuneConfig, write(tmp_path, "- a\n- b\n"))


def test_invalid_values(tmp_path):
    with pytest.raises(DistillerError, match="precision"):
        load_config(FinetuneConfig, None, {"train.precision": "fp8"})
    with pytest.raises(DistillerError, match="batch_size"):
        load_config(FinetuneConfig, None, {"train.batch_size": 0})


def test_set_option_parsing():
    assert parse_set_option("kd.temperature=4") == ("kd.temperature", 4)
    assert parse_set_option("train.cpu=true") == ("train.cpu", True)
    with pytest.raises(DistillerError):
        parse_set_option("novalue")


def test_readme_recipe_parses(tmp_path):
    """The recipe shown in README.md is valid under the schema (keeps the docs honest)."""
    import re

    from distiller_nlp.config import DistillConfig
    from distiller_nlp.core.config import load_config

    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md"), encoding="utf-8").read()
    block = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    cfg = load_config(DistillConfig, write(tmp_path, block))
    assert cfg.kd.mapping.loss == "mi_alpha" and cfg.kd.intermediate[1].feature == "attention_scores"
    assert cfg.train.group_by_length is True
