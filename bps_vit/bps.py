"""The BPS domain: labels, the filename grammar and `meta.csv` rows.

`meta.csv` comes from a remote bucket, so it is untrusted input: every filename is matched
against the BPS grammar before it is ever joined to a local path, and every row is checked
for a known label, dose and hour. This module is the one place those rules live, shared by
`fetch` (what may be downloaded), `synthetic` (what it must imitate) and `split` (how images
group into plates, wells and fields).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .results import Condition

#: Class names, in the model's label order (id 0 = Fe, id 1 = X-ray).
LABELS: tuple[str, ...] = ("Fe", "X-ray")
META_COLUMNS: tuple[str, ...] = ("filename", "dose_Gy", "particle_type", "hr_post_exposure")

#: Doses (Gy) and hours the BPS experiment used, per particle. 0 Gy is the sham (unirradiated) arm.
KNOWN_DOSES: dict[str, tuple[float, ...]] = {"Fe": (0.0, 0.3, 0.82), "X-ray": (0.0, 0.1, 1.0)}
KNOWN_HOURS: tuple[int, ...] = (4, 24, 48)

#: `P<plate>_<acquisition>-<well>_<field>_<object>_proj.tif`, e.g. P242_73665006707-A6_003_013_proj.tif
FILENAME_PATTERN = re.compile(
    r"^P(?P<plate>\d+)_(?P<acquisition>\d+)-(?P<well>[A-Z]\d{1,2})_(?P<field>\d+)_(?P<object>\d+)_proj\.tiff?$"
)


class MetadataError(ValueError):
    """Metadata that cannot be trusted; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class BPSName:
    """The parts of a BPS filename. Groups nest: plate > well > field > object (one nucleus)."""

    filename: str
    plate: str
    acquisition: str
    well: str
    field: str
    object: str

    @property
    def plate_id(self) -> str:
        return f"P{self.plate}"

    @property
    def well_id(self) -> str:
        return f"P{self.plate}_{self.acquisition}-{self.well}"

    @property
    def field_id(self) -> str:
        return f"{self.well_id}_{self.field}"

    def group(self, split_by: str) -> str:
        """The id of the group this image belongs to when splitting by `split_by`."""
        if split_by == "image":
            return self.filename
        if split_by == "field":
            return self.field_id
        if split_by == "well":
            return self.well_id
        if split_by == "plate":
            return self.plate_id
        raise ValueError(f"split_by must be one of image, field, well, plate; got {split_by!r}")


def parse_filename(filename: str) -> BPSName:
    """Parse and validate a BPS filename; anything else (paths, `..`, other names) is rejected."""
    match = FILENAME_PATTERN.fullmatch(filename) if isinstance(filename, str) else None
    if match is None:
        raise MetadataError(
            f"{filename!r} is not a BPS image filename (expected P<plate>_<acq>-<well>_<field>_<object>_proj.tif, "
            "no directories). Remove the row or fix the name."
        )
    return BPSName(filename=filename, **match.groupdict())


def is_bps_filename(filename: str) -> bool:
    return isinstance(filename, str) and FILENAME_PATTERN.fullmatch(filename) is not None


@dataclass(frozen=True)
class MetaRow:
    filename: str
    dose_Gy: float
    particle_type: str
    hr_post_exposure: int

    @property
    def is_sham(self) -> bool:
        return self.dose_Gy == 0.0

    @cached_property
    def condition(self) -> str:
        """`Fe 0.82Gy 4h` (one per plate in the real data); `Fe (dose/hour unknown)` without metadata (NaN, -1)."""
        return str(Condition.of(self.particle_type, self.dose_Gy, self.hr_post_exposure))


@dataclass
class MetaTable:
    """Validated rows plus the rows that were rejected, with the reason for each (never dropped silently)."""

    rows: list[MetaRow]
    rejected: list[tuple[int, str, str]]  # (line number, filename as given, reason)


def _number(record: dict, column: str) -> float:
    try:
        return float(record.get(column) or "")
    except ValueError:
        raise MetadataError(f"bad {column} {record.get(column)!r} (not a number)") from None


def parse_meta_csv(text: str, source: str = "meta.csv", *, strict_unknown_conditions: bool = False) -> MetaTable:
    """Parse `meta.csv` text. Missing columns stop with an error; bad rows are rejected with a reason.

    Unknown doses/hours are accepted (a newer release may add some) unless `strict_unknown_conditions`.
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in META_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MetadataError(
            f"{source}: missing column(s) {missing}; found {reader.fieldnames}. "
            f"A BPS meta.csv has the header {','.join(META_COLUMNS)}."
        )
    rows: list[MetaRow] = []
    rejected: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    for line_no, record in enumerate(reader, start=2):
        name = (record.get("filename") or "").strip()
        try:
            parse_filename(name)
            if name in seen:
                raise MetadataError(f"duplicate filename {name!r}")
            label = (record.get("particle_type") or "").strip()
            if label not in LABELS:
                raise MetadataError(f"unknown particle_type {label!r} (expected one of {list(LABELS)})")
            dose = _number(record, "dose_Gy")
            if not math.isfinite(dose) or dose < 0:
                raise MetadataError(f"bad dose_Gy {record.get('dose_Gy')!r} (expected a dose >= 0 in Gy)")
            hours_f = _number(record, "hr_post_exposure")
            if not math.isfinite(hours_f) or hours_f < 0 or hours_f != int(hours_f):
                raise MetadataError(f"bad hr_post_exposure {record.get('hr_post_exposure')!r} (expected whole hours)")
            hours = int(hours_f)
            if strict_unknown_conditions and (dose not in KNOWN_DOSES[label] or hours not in KNOWN_HOURS):
                raise MetadataError(f"condition {label} {dose} Gy {hours} h is not in the BPS design")
        except (MetadataError, ValueError, TypeError) as err:
            rejected.append((line_no, name, str(err).split(" (expected P<plate>")[0]))
            continue
        seen.add(name)
        rows.append(MetaRow(name, dose, label, hours))
    return MetaTable(rows=rows, rejected=rejected)


def read_meta_csv(path: str | Path, **kwargs) -> MetaTable:
    path = Path(path)
    if not path.is_file():
        raise MetadataError(
            f"{path}: no meta.csv there. Run scripts/prepare_data.py with a --source that provides one."
        )
    return parse_meta_csv(path.read_text(encoding="utf-8-sig"), source=str(path), **kwargs)


def write_meta_csv(path: str | Path, rows: list[MetaRow]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(META_COLUMNS)
        for row in rows:
            writer.writerow([row.filename, f"{row.dose_Gy:g}", row.particle_type, row.hr_post_exposure])
