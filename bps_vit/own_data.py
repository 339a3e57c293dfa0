"""A lab's own images: `--source table` (a `path,label` CSV) and `--source folder` (imagefolder: `ROOT/<label>/`).

Any file names. Labels come from the table's label column or the class folders; plates, wells and
fields from `plate`, `well`, `field` columns when the table (or the folder's `metadata.csv`) has
them, and dose and hours from `dose_Gy`, `hr_post_exposure`. Paths are untrusted input, like the
names in a BPS `meta.csv`: an absolute path, a `..`, or a link that leads outside the table's folder
refuses the whole table before anything is written.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .bps import GROUP_LEVELS, MetaRow
from .imaging import IMAGE_SUFFIXES
from .labels import LabelError, check_label_name
from .split import SplitError

TABLE_OPTIONAL_COLUMNS: tuple[str, ...] = ("plate", "well", "field", "dose_Gy", "hr_post_exposure", "particle_type")
FOLDER_METADATA = "metadata.csv"
UNKNOWN_DOSE = float("nan")
UNKNOWN_HOUR = -1


class TableError(SplitError):
    """A table or folder that cannot be used as it is; the message names the file, the line and the fix."""


@dataclass
class OwnData:
    """Rows to split, the file behind each row's name, and what the reader noticed."""

    rows: list[MetaRow]
    sources: dict[str, Path]
    unlisted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def safe_relative_path(root: Path, path: str, where: str) -> Path:
    """`root/path` for a relative path that stays inside `root`, links resolved; else `TableError` (hostile)."""
    text = (path or "").strip()
    if not text:
        raise TableError(f"{where}: empty path.")
    pure = PurePosixPath(text.replace("\\", "/"))
    if pure.is_absolute() or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        raise TableError(f"{where}: {text!r} is an absolute path; paths must be relative to {root}. "
                         "Nothing was written.")
    if ".." in pure.parts:
        raise TableError(f"{where}: {text!r} climbs out with '..'; paths must stay inside {root}. Nothing was written.")
    real_root = root.resolve()
    target = (root / pure).resolve()
    if target != real_root and real_root not in target.parents:
        raise TableError(f"{where}: {text!r} resolves to {target}, outside {real_root} (a link?). Copy the image "
                         "into the folder or fix the path. Nothing was written.")
    return root / pure


def _number(record: dict, column: str, where: str, whole: bool = False) -> float:
    text = (record.get(column) or "").strip()
    if not text:
        return UNKNOWN_DOSE if not whole else UNKNOWN_HOUR
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0 or (whole and value != int(value)):
        kind = "whole hours >= 0" if whole else "a dose >= 0 in Gy"
        raise TableError(f"{where}: bad {column} {text!r} (expected {kind}, or empty when unknown).")
    return int(value) if whole else value


def _groups(record: dict, present: list[str], where: str) -> tuple[str | None, str | None, str | None] | None:
    """Nested group ids (plate, plate/well, plate/well/field) from the columns the table has; None without any."""
    if not present:
        return None
    ids: list[str | None] = []
    parts: list[str] = []
    for level in GROUP_LEVELS:
        if level in present:
            value = (record.get(level) or "").strip()
            if not value:
                raise TableError(f"{where}: empty {level}; fill it in for every image or drop the column.")
            parts.append(value)
            ids.append("/".join(parts))
        else:
            ids.append(None)
    return (ids[0], ids[1], ids[2])


def _prepared_names(paths: list[PurePosixPath]) -> list[str]:
    """The file name each image gets in the prepared folder: its own, or its path joined by `__` where names repeat."""
    counts = Counter(p.name for p in paths)
    if all(n == 1 for n in counts.values()):
        return [p.name for p in paths]
    return ["__".join(p.parts) for p in paths]


def rows_from_records(records: list[tuple[str, dict]], root: Path, source: str) -> OwnData:
    """(where, record) pairs with `path` (and `label`, when the table has one) -> checked rows and their files.

    Without a `label`, the particle type stands in until the task (`--label_column`) relabels the rows."""
    if not records:
        raise TableError(f"{source}: no images listed. Add rows (path,label) or images in class folders.")
    columns = set(records[0][1])
    present = [level for level in GROUP_LEVELS if level in columns]
    paths, seen = [], {}
    for where, record in records:
        path = safe_relative_path(root, record.get("path") or "", where)
        key = PurePosixPath(path.relative_to(root).as_posix())
        if key in seen:
            raise TableError(f"{where}: {key} is listed twice (first at {seen[key]}); each image must appear once.")
        seen[key] = where
        paths.append(key)
    rows, sources = [], {}
    for name, key, (where, record) in zip(_prepared_names(paths), paths, records, strict=True):
        try:
            label = check_label_name(record["label"], where) if "label" in record else None
        except LabelError as err:
            raise TableError(str(err)) from None
        dose = _number(record, "dose_Gy", where)
        hours = int(_number(record, "hr_post_exposure", where, whole=True))
        particle = (record.get("particle_type") or "").strip() or label or ""
        rows.append(MetaRow(name, dose, particle, hours, groups=_groups(record, present, where), label=label))
        sources[name] = root / key
    return OwnData(rows, sources)


def read_csv_records(path: Path, required: tuple[str, ...], what: str) -> list[tuple[str, dict]]:
    """(`file:line`, record) for each row of a CSV that has the `required` columns (else the error lists the found)."""
    if not path.is_file():
        raise TableError(f"--table {path}: no such file. Give a CSV with the columns {','.join(required)}.")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        found = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in found]
        if missing:
            raise TableError(
                f"{path}: missing column(s) {missing}; found {found}. {what} needs {', '.join(required)} "
                f"(optional: {', '.join(TABLE_OPTIONAL_COLUMNS)})."
            )
        return [(f"{path}:{line}", {(k or "").strip(): v for k, v in record.items()})
                for line, record in enumerate(reader, start=2)]


#: The columns a table needs besides `path`, per `--label_column` task.
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "label": ("label",), "particle_type": ("particle_type",), "dose_Gy": ("dose_Gy",),
    "hr_post_exposure": ("hr_post_exposure",), "condition": ("particle_type", "dose_Gy", "hr_post_exposure"),
}


def read_table(table: str | Path, label_column: str = "label") -> OwnData:
    """`--source table`: a CSV of `path,label` (+ optional columns), paths relative to the CSV's folder; another
    `label_column` task needs its own columns instead of `label`."""
    table = Path(table)
    records = read_csv_records(table, ("path", *TASK_COLUMNS[label_column]), "A table")
    return rows_from_records(records, table.parent, str(table))


def _walk_images(root: Path) -> list[PurePosixPath]:
    """Every image under `root` (hidden files and folders skipped); a link leading outside refuses the folder."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [*dirs, *files]:
            if os.path.islink(os.path.join(folder, name)):
                relative = os.path.relpath(os.path.join(folder, name), root)
                safe_relative_path(root, relative, f"{root}")
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(PurePosixPath(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")))
    return found


def scan_folder(root: str | Path) -> OwnData:
    """`--source folder`: `ROOT/<label>/**/image` plus an optional `ROOT/metadata.csv` (file_name + columns)."""
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"--raw_dir {root} does not exist; point it at a folder with one subfolder per class.")
    images = _walk_images(root)
    in_class = [p for p in images if len(p.parts) > 1]
    loose = sorted(str(p) for p in images if len(p.parts) == 1)
    metadata = root / FOLDER_METADATA
    if metadata.is_file():
        records = [(where, {**record, "path": record.get("file_name") or ""})
                   for where, record in read_csv_records(metadata, ("file_name",), FOLDER_METADATA)]
    else:
        records = [(f"{root}/{p}", {"path": str(p)}) for p in in_class]
    for _where, record in records:  # imagefolder: the class is the first folder of the path
        parts = PurePosixPath((record.get("path") or "").replace("\\", "/")).parts
        record["label"] = parts[0] if len(parts) > 1 else ""
    data = rows_from_records(records, root, str(root))
    listed = {PurePosixPath(src.relative_to(root).as_posix()) for src in data.sources.values()}
    data.unlisted = sorted({*loose, *(str(p) for p in in_class if p not in listed)})
    if data.unlisted:
        data.notes.append(f"{len(data.unlisted)} image(s) under {root} are not in a class folder or not in "
                          f"{FOLDER_METADATA}; they were not used (listed in unlisted_files).")
    return data
