"""Class labels read from the data: their order and what makes a usable label.

The model's label ids follow `ordered_labels`: numbers in numeric order (doses `0Gy` < `0.1Gy` < `1Gy`,
hours `4h` < `24h`), other names alphabetically (`Fe` < `X-ray`, as the BPS folders always were).
A label names a folder of the prepared data, so it must be a plain folder name.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable

_LEADING_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class LabelError(ValueError):
    """A label that cannot name a class folder; the message names it and the fix."""


def label_sort_key(label: str) -> tuple:
    match = _LEADING_NUMBER.match(label)
    if match is None:
        return (1, 0.0, label)
    return (0, float(match.group(0)), label)


def ordered_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The distinct labels in the model's id order."""
    return tuple(sorted(set(labels), key=label_sort_key))


def check_label_name(label: str, where: str) -> str:
    """`label`, stripped, when it can be a folder name; else `LabelError` naming `where` (file and line)."""
    text = (label or "").strip()
    if not text:
        raise LabelError(f"{where}: empty label. Every image needs a class label.")
    if text in (".", "..") or text.startswith(".") or any(c in text for c in '/\\') or not text.isprintable():
        raise LabelError(f"{where}: label {text!r} cannot name a class folder (no '/', '\\\\', leading '.' or "
                         "control characters). Rename the class.")
    return text


#: prepare_data's sources of a lab's own images (any file names; labels and groups from the data), not BPS data.
OWN_SOURCES: tuple[str, ...] = ("folder", "table")

#: What a run can learn: the particle type (BPS default), the dose, the time after exposure, the whole condition, or
#: a table's own `label` column.
LABEL_COLUMNS: tuple[str, ...] = ("particle_type", "dose_Gy", "hr_post_exposure", "condition", "label")


def task_label(particle_type: str, dose_Gy: float, hours: int, label_column: str) -> str | None:
    """The class of an image for the `label_column` task; None when its metadata does not say (dose unknown...)."""
    dose_known = dose_Gy == dose_Gy and dose_Gy >= 0  # NaN != NaN
    if label_column == "particle_type":
        return particle_type
    if label_column == "dose_Gy":
        return f"{dose_Gy:g}Gy" if dose_known else None
    if label_column == "hr_post_exposure":
        return f"{hours}h" if hours >= 0 else None
    if label_column == "condition":
        return f"{particle_type} {dose_Gy:g}Gy {hours}h" if dose_known and hours >= 0 else None
    raise LabelError(f"--label_column {label_column!r}: choose one of {list(LABEL_COLUMNS)}.")


def relabel(rows: list, label_column: str) -> tuple[list, list]:
    """(rows labelled for the task, rows whose metadata does not give their class)."""
    kept, dropped = [], []
    for row in rows:
        label = task_label(row.particle_type, row.dose_Gy, row.hr_post_exposure, label_column)
        if label is None:
            dropped.append(row)
        else:
            kept.append(replace(row, label=label))
    return kept, dropped
