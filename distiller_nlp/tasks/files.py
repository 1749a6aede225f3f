"""Local task files: per split ``train.*``, ``dev.*`` | ``validation.*`` (MNLI: ``dev_matched.*``,
``dev_mismatched.*``), ``test.*`` with extension tsv / csv / json / jsonl / parquet.

TSV files are read with ``quoting=csv.QUOTE_NONE`` (GLUE sentences contain quote characters) and every CSV/TSV cell is
read as a string (no "NA"/"null" → missing conversion).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.tasks.spec import TEXT, TaskSpec

logger = logging.getLogger(__name__)


EXTENSIONS = ("tsv", "csv", "json", "jsonl", "parquet")
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

# --------------------------------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------------------------------
def find_split_files(data_dir: Path, spec: TaskSpec) -> dict[str, Path]:
    """``{split: path}`` of the task's split files in ``data_dir`` (first matching stem wins; two files for one
    split are an error)."""
    files: dict[str, Path] = {}
    used: set[Path] = set()
    for split in spec.splits:
        stems = SPLIT_FILE_STEMS.get(split, (split,))
        for stem in stems:
            matches = [data_dir / f"{stem}.{ext}" for ext in EXTENSIONS if (data_dir / f"{stem}.{ext}").is_file()]
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


def load_file(path: Path, spec: TaskSpec, split: str):
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
            raise DistillerError(f"unsupported file type {path.suffix!r} for {path}; use one of {EXTENSIONS}")
    except DistillerError:
        raise
    except Exception as exc:
        root = exc  # datasets wraps the reader's error ("An error occurred while generating the dataset")
        while (root.__cause__ or root.__context__) is not None and "generating the dataset" in str(root):
            root = root.__cause__ or root.__context__
        msg = str(root).splitlines()[0] if str(root) else type(root).__name__
        if isinstance(root, UnicodeDecodeError):
            msg = f"not UTF-8 text (byte {root.start}: {root.reason}); re-encode the file as UTF-8"
        if "corresponds to no data" in msg:
            raise empty from exc
        raise DistillerError(f"cannot read {path}: {msg}") from exc
    return ds


