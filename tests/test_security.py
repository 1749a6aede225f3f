"""Security rules (issue #20 item 7), each checked: recipe names stay inside the shipped tree, credentials are
redacted wherever a run writes them, no pickle is read from a place the user did not create, remote code stays off."""

import ast
import os
import pathlib

import pytest

from distiller_nlp.core.card import redact
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.resources import RECIPES, resolve_recipe

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = [ROOT / "distiller_nlp", ROOT / "autodistil", ROOT / "vision_kd"]


def _calls(name_endings):
    """(file, line, call node) of every call whose dotted name ends with one of ``name_endings``."""
    for pkg in PACKAGES:
        for path in pkg.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = ast.unparse(node.func)
                    if any(name == e or name.endswith("." + e) for e in name_endings):
                        yield path.relative_to(ROOT), node.lineno, node


def test_a_recipe_name_cannot_escape_the_shipped_recipes(tmp_path, monkeypatch):
    outside = tmp_path / "evil.yaml"
    outside.write_text("task: sst2\n")
    monkeypatch.chdir(RECIPES)  # so that the name is not an existing file relative to the working directory
    rel = os.path.relpath(outside.with_suffix(""), RECIPES / "glue")
    with pytest.raises(DistillerError, match="outside the shipped recipes"):
        resolve_recipe(f"glue/{rel}")
    assert resolve_recipe("glue/sst2").endswith(os.path.join("recipes", "glue", "sst2.yaml"))
    assert resolve_recipe(str(outside)) == str(outside)  # a path the user gives is the user's file


def test_every_torch_load_is_weights_only():
    found = list(_calls(["torch.load"]))
    bad = [f"{f}:{line}" for f, line, node in found
           if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                      for k in node.keywords)]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_pickle_or_unsafe_yaml_is_read():
    bad = [f"{f}:{line}" for f, line, _ in _calls(["pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load",
                                                   "yaml.full_load", "joblib.load", "numpy.load", "np.load"])]
    for f, line, node in _calls(["np.load", "numpy.load"]):
        if any(k.arg == "allow_pickle" and getattr(k.value, "value", None) is False for k in node.keywords):
            bad.remove(f"{f}:{line}")
    assert not bad, f"pickle-capable loaders: {bad}"


def test_remote_code_is_never_switched_on_in_code():
    bad = [f"{f}:{line}" for f, line, node in _calls(["from_pretrained", "pipeline", "AutoConfig.from_pretrained"])
           if any(k.arg == "trust_remote_code" and getattr(k.value, "value", None) is True for k in node.keywords)]
    assert not bad, f"trust_remote_code=True hard-coded: {bad}"
    from distiller_nlp.config import DistillConfig, FinetuneConfig

    assert FinetuneConfig().trust_remote_code is False and DistillConfig().trust_remote_code is False


def test_storage_urls_are_redacted_in_hpo_messages_and_summaries():
    from distiller_nlp.autodistiller.hpo import _redact

    url = "postgresql+psycopg://alice:hunter2@db.example:5432/optuna"
    assert _redact(url) == redact(url) == "postgresql+psycopg://alice:***@db.example:5432/optuna"
    with pytest.raises(DistillerError) as info:
        from distiller_nlp.autodistiller.hpo import make_storage

        make_storage("postgresql://alice:hunter2@127.0.0.1:9/optuna")  # nothing listens on port 9
    assert "hunter2" not in str(info.value) and "alice:***@" in str(info.value)
