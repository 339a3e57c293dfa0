"""The prepared folder's index files, `manifest.csv` and `split_report.json`: their names, columns, writing and reading.

`prepare_data` writes them (through `split.write_split`); training, prediction and explanation
read them. Keeping both directions here means one list of columns, one list of split names and
one column check, so a reader can never accept a manifest the writer would not produce.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

from .bps import MetaRow, parse_filename
from .results import Condition

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SHAM_SPLIT = "sham"
SKIPPED = "skipped"
MANIFEST_NAME = "manifest.csv"
REPORT_NAME = "split_report.json"
MANIFEST_COLUMNS: tuple[str, ...] = (
    "filename", "split", "label", "dose_Gy", "hr_post_exposure", "plate", "well", "field", "sha256", "path",
)


class ManifestError(ValueError):
    """A manifest.csv that cannot be used; the message names the file and the fix."""


def manifest_row(row: MetaRow, split: str, sha256: str, path: str) -> dict[str, Any]:
    """One manifest line: the image's metadata, its groups, where it went and its content hash."""
    name = parse_filename(row.filename)
    return {
        "filename": row.filename,
        "split": split,
        "label": row.particle_type,
        "dose_Gy": f"{row.dose_Gy:g}",  # NaN (dose unknown) formats as "nan"
        "hr_post_exposure": row.hr_post_exposure,
        "plate": name.plate_id,
        "well": name.well_id,
        "field": name.field_id,
        "sha256": sha256,
        "path": path,
    }


def write_manifest(folder: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_report(folder: str | os.PathLike, report: dict[str, Any]) -> Path:
    path = Path(folder) / REPORT_NAME
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    return path


def read_report(data_dir: str | os.PathLike) -> dict[str, Any]:
    """split_report.json, or {} for a folder made by hand (it is informative, not required)."""
    path = Path(data_dir) / REPORT_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_manifest(data_dir: str | os.PathLike, *, missing_ok: bool = False) -> list[dict[str, str]]:
    """The manifest's rows, after checking its columns; [] for a folder without one when `missing_ok`."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME
    if not path.is_file():
        if missing_ok:
            return []
        raise ManifestError(
            f"{data_dir}: no {MANIFEST_NAME}. Point --data_dir at a folder written by scripts/prepare_data.py."
        )
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {missing}; re-run scripts/prepare_data.py to rewrite it.")
        return list(reader)


def condition_of(row: dict[str, str] | None, label: str | None = None) -> Condition:
    """The condition of a manifest row (unknown dose/hour for sources without them, or without a row)."""
    if not row:
        return Condition(label or "")
    return Condition.of(row.get("label") or label or "", row.get("dose_Gy"), row.get("hr_post_exposure"))
