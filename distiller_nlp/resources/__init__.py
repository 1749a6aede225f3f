"""Files shipped with ``distiller_nlp`` (package data): the GLUE and staged recipes (``recipes/``), the default
pipeline search space (``spaces/distiller.yaml``) and the AutoDistiller meta-dataset (``meta_dataset.parquet``)."""

from __future__ import annotations

from pathlib import Path

from distiller_nlp.core.resources import find_resource, list_resources

ROOT = Path(__file__).resolve().parent
RECIPES = ROOT / "recipes"
SPACES = ROOT / "spaces"
META_DATASET = ROOT / "meta_dataset.parquet"

__all__ = ["ROOT", "RECIPES", "SPACES", "META_DATASET", "resolve_recipe", "resolve_space", "shipped_recipes"]


def resolve_recipe(name_or_path: str) -> str:
    """A recipe path: the file itself, or a shipped recipe by name (``glue/sst2``, ``stages/tinybert_two_stage``)."""
    return find_resource(name_or_path, [RECIPES], what="recipe")


def resolve_space(name_or_path: str) -> str:
    """A search-space path: the file itself, or a shipped space by name (``distiller``)."""
    return find_resource(name_or_path, [SPACES], what="search space")


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return list_resources(RECIPES)
