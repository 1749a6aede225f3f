"""Model cards: every exported model directory gets a ``README.md`` that says how the model was made.

A card is Hugging Face card metadata (YAML front matter: ``base_model`` = the teacher, ``datasets``, ``license``,
``tags: [distillation, ...]``, a ``model-index`` with the measured metrics, read back by
``huggingface_hub.ModelCard.load(dir)``) and a body: the teacher, the model's shape, parameters and FLOPs against the
teacher's, the pipeline (losses, temperature, matches, mapping, augmentation, schedules), the data sizes, the
measured metrics and the exact command that made it. Commands describe their run with a :class:`CardInfo`;
:func:`write_model_card` renders and writes it atomically (main process only — callers ensure it), and
:func:`push_to_hub` uploads a directory.

The command line is recorded once per process by the CLIs (:func:`set_invocation`); credentials in it (``--storage
postgresql://user:password@...``, ``--set ...token=...``) are redacted by :func:`redact`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Optional

from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

__all__ = ["CardInfo", "write_model_card", "render_model_card", "push_to_hub", "set_invocation", "invocation",
           "redact", "teacher_card_facts", "check_push_target", "CARD_FILE"]

CARD_FILE = "README.md"
_INVOCATION: Optional[str] = None
_SECRET_KEY = re.compile(r"(?i)((?:token|password|passwd|secret|api[_-]?key)[^=\s]*=)\S+")
_URL_PASSWORD = re.compile(r"//([^:/@\s]+):[^@\s]*@")


def redact(text: str) -> str:
    """Hide credentials: the password of ``scheme://user:password@host`` and the value of ``*token=``,
    ``*password=``, ``*secret=``, ``*api_key=`` assignments."""
    return _SECRET_KEY.sub(r"\1***", _URL_PASSWORD.sub(r"//\1:***@", text))


def set_invocation(prog: Optional[str], argv: list) -> None:
    """Record the command line of this process (``distiller-nlp distill --teacher ...``), redacted; ``prog=None``
    forgets it (the CLIs do when their command returns)."""
    global _INVOCATION
    _INVOCATION = redact(shlex.join([prog, *[str(a) for a in argv]])) if prog else None


def invocation() -> Optional[str]:
    """The command line recorded by :func:`set_invocation` (None when the run came from the Python API)."""
    return _INVOCATION


@dataclass
class CardInfo:
    """What a command knows about the model it exported (rendered by :func:`render_model_card`).

    ``model_rows``: (quantity, this model, teacher) rows, e.g. ``("layers", "3", "6")``; ``pipeline`` / ``data``:
    ordered ``{label: value}`` facts; ``api``: the Python call that reproduces the run when it did not come from a
    CLI (the command line is used otherwise); ``metrics``: ``metrics.json`` (its ``eval_*`` / ``test_*`` values
    become the model-index)."""

    title: str
    summary: str
    base_model: Optional[str] = None
    license: Optional[str] = None
    datasets: list = field(default_factory=list)
    dataset_name: str = ""
    dataset_config: Optional[str] = None
    task_type: str = "text-classification"
    tags: list = field(default_factory=list)
    model_rows: list = field(default_factory=list)
    pipeline: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    api: str = ""
    load_snippet: str = ""
    library_name: str = "transformers"


_NOT_METRICS = ("_examples", "_loss", "_s", "_per_s", "world_size", "ranks_in_sync")


def _metric_items(metrics: dict) -> list:
    out = []
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or key.endswith(_NOT_METRICS):
            continue
        for prefix, split in (("eval_", "validation"), ("test_", "test")):
            if key.startswith(prefix):
                out.append((split, key[len(prefix):], float(value)))
    return out


def render_model_card(info: CardInfo) -> str:
    """The card's text (front matter + body)."""
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import EvalResult

    results = [EvalResult(task_type=info.task_type, dataset_type=(info.datasets or ["custom"])[0],
                          dataset_name=info.dataset_name or "custom", dataset_config=info.dataset_config,
                          dataset_split=split, metric_type=name,
                          metric_name=f"{name} ({split})", metric_value=round(value, 6))
               for split, name, value in _metric_items(info.metrics)]
    tags = list(dict.fromkeys(["distillation", "knowledge-distillation", "distiller-toolkit", *info.tags]))
    data = ModelCardData(
        base_model=info.base_model or None,
        license=info.license or None,
        datasets=list(info.datasets) or None,
        library_name=info.library_name,
        tags=tags,
        pipeline_tag=info.task_type,
        metrics=sorted({name for _, name, _ in _metric_items(info.metrics)}) or None,
        model_name=info.title,
        eval_results=results or None,
    )
    lines = [f"# {info.title}", "", info.summary, ""]
    if info.model_rows:
        lines += ["## Model", "", "| | this model | teacher |", "|---|---|---|"]
        lines += [f"| {q} | {s} | {t} |" for q, s, t in info.model_rows]
        lines.append("")
    if info.pipeline:
        lines += ["## How it was made", ""] + [f"- **{k}**: {v}" for k, v in info.pipeline.items()] + [""]
    if info.data:
        lines += ["## Data", ""] + [f"- **{k}**: {v}" for k, v in info.data.items()] + [""]
    items = _metric_items(info.metrics)
    if items:
        lines += ["## Results (measured by this run)", "", "| split | metric | value |", "|---|---|---|"]
        lines += [f"| {split} | {name} | {value:.4f} |" for split, name, value in items]
        for key in ("train_runtime_s", "examples_per_s"):
            if isinstance(info.metrics.get(key), (int, float)):
                lines.append(f"| train | {key} | {info.metrics[key]:.1f} |")
        lines.append("")
    command = invocation()
    lines += ["## Reproduce", ""]
    if command:
        lines += ["```bash", command, "```"]
    elif info.api:
        lines += ["```python", info.api, "```"]
    lines += ["", "The resolved configuration is `config.yaml` in this directory.", ""]
    if info.load_snippet:
        lines += ["## Use", "", "```python", info.load_snippet, "```", ""]
    lines += ["Made with [distiller-toolkit](https://pypi.org/project/distiller-toolkit/)."]
    return f"---\n{data.to_yaml()}\n---\n\n" + redact("\n".join(lines)) + "\n"


def write_model_card(directory: str, info: CardInfo) -> str:
    """Write ``directory/README.md`` atomically (a temp file, then rename); returns its path."""
    path = os.path.join(directory, CARD_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(render_model_card(info))
    os.replace(tmp, path)
    return path


def teacher_card_facts(path: Optional[str]) -> dict:
    """``license`` and ``base_model`` from the card (``README.md``) of a local teacher directory, when it has one."""
    if not path or not os.path.isfile(os.path.join(str(path), CARD_FILE)):
        return {}
    try:
        from huggingface_hub import ModelCard

        data = ModelCard.load(os.path.join(str(path), CARD_FILE)).data
    except Exception as exc:  # a malformed third-party card must not stop an export
        logger.info("cannot read the card of %s: %s", path, exc)
        return {}
    out = {}
    for key in ("license", "base_model"):
        value = getattr(data, key, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            out[key] = str(value)
    return out


def check_push_target(repo_id: str, hint: str = "") -> None:
    """A ``--push-to-hub`` target must be ``owner/name`` and the Hub reachable in principle (``HF_HUB_OFFLINE``
    unset): checked before a run starts, so an offline run does not train for hours and then fail."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id or ""):
        raise DistillerError(f"--push-to-hub '{repo_id}' is not a Hub repository id (owner/name)")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise DistillerError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set{hint}")


def push_to_hub(directory: str, repo_id: str, private: bool = True, commit_message: Optional[str] = None) -> str:
    """Upload ``directory`` (weights, tokenizer, card) to the Hub repository ``repo_id`` (created private unless
    ``private=False``); returns the repository URL. Offline or without credentials: one-line DistillerError."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    check_push_target(repo_id, f" (the model is saved in {directory}; push it later with `hf upload {repo_id} "
                               f"{directory}`)")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=directory, ignore_patterns=["checkpoints/*", "*.tmp", "runs/*"],
                          commit_message=commit_message or "Upload distilled model (distiller-toolkit)")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistillerError(f"cannot push {directory} to {repo_id}: {redact(first)}") from None
    url = f"https://huggingface.co/{repo_id}"
    logger.info("pushed %s to %s", directory, url)
    return url
