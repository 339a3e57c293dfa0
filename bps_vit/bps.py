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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .results import Condition

#: Class names, in the model's label order (id 0 = Fe, id 1 = X-ray).
LABELS: tuple[str, ...] = ("Fe", "X-ray")
META_COLUMNS: tuple[str, ...] = ("filename", "dose_Gy", "particle_type", "hr_post_exposure")

#: Doses (Gy) and hours the BPS experiment used, per particle. 0 Gy is the sham (unirradiated) arm.
KNOWN_DOSES: dict[str, tuple[float, ...]] = {"Fe": (0.0, 0.3, 0.82), "X-ray": (0.0, 0.1, 1.0)}
KNOWN_HOURS: tuple[int, ...] = (4, 24, 48)

#: The two nearly dose-matched (particle, dose) pairs of the design: where particle type is not also a dose gap.
DOSE_MATCHED_PAIRS: tuple[tuple[tuple[str, float], tuple[str, float]], ...] = (
    (("Fe", 0.82), ("X-ray", 1.0)),
    (("Fe", 0.3), ("X-ray", 0.1)),
)
#: What each task can learn besides its own label, in the BPS design (said in the summary and the card).
CONFOUND_NOTES: dict[str, str] = {
    "particle_type": (
        "Particle type is confounded with dose in BPS (Fe 0.3/0.82 Gy, X-ray 0.1/1.0 Gy), so a model that only "
        "counts damage can look like a particle classifier; the accuracy on the two nearly dose-matched pairs "
        "(Fe 0.82 vs X-ray 1.0 Gy, Fe 0.3 vs X-ray 0.1 Gy) is the fairer test."
    ),
    "dose_Gy": (
        "Each non-zero dose belongs to one particle in BPS (Fe 0.3/0.82 Gy, X-ray 0.1/1.0 Gy), so a dose classifier "
        "can score by recognising the particle; compare the per-dose accuracy of 0.82 vs 1.0 Gy and 0.3 vs 0.1 Gy."
    ),
    "condition": (
        "A condition is particle x dose x hours and each BPS plate holds one condition, so a condition classifier "
        "can score by recognising plates; read the sham control and split by plate."
    ),
}

#: `P<plate>_<acquisition>-<well>_<field>_<object>_proj.tif`, e.g. P242_73665006707-A6_003_013_proj.tif
FILENAME_PATTERN = re.compile(
    r"^P(?P<plate>\d+)_(?P<acquisition>\d+)-(?P<well>[A-Z]\d{1,2})_(?P<field>\d+)_(?P<object>\d+)_proj\.tiff?$"
)


BPS_NAME_PATTERN = "P<plate>_<acq>-<well>_<field>_<object>_proj.tif"
BPS_EXAMPLE_NAME = "P242_73665006707-A6_003_013_proj.tif"
#: What to do with images named otherwise (said wherever a BPS filename is refused).
OTHER_NAMES_HINT = ("Images with other names: list them in a table (path,label[,plate,well,field,dose_Gy,"
                    "hr_post_exposure]) and use --source table --table FILE.csv, or --source folder (README: "
                    "\"Your own images\").")


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
            f"{filename!r} is not a BPS image filename (expected {BPS_NAME_PATTERN}, "
            f"e.g. {BPS_EXAMPLE_NAME}, no directories). Remove the row or fix the name."
        )
    return BPSName(filename=filename, **match.groupdict())


def is_bps_filename(filename: str) -> bool:
    return isinstance(filename, str) and FILENAME_PATTERN.fullmatch(filename) is not None


#: The group levels, coarsest first; `image` (each image its own group) is always known.
GROUP_LEVELS: tuple[str, ...] = ("plate", "well", "field")


@dataclass(frozen=True)
class MetaRow:
    """One image's metadata. BPS rows get their groups from the filename grammar; rows from a user's table or
    folder carry them (`groups`: plate, well and field ids, None where unknown) and may carry a class `label`
    other than the particle type (the `--label_column` task)."""

    filename: str
    dose_Gy: float
    particle_type: str
    hr_post_exposure: int
    groups: tuple[str | None, str | None, str | None] | None = None
    label: str | None = None

    @property
    def is_sham(self) -> bool:
        return self.dose_Gy == 0.0

    @property
    def class_label(self) -> str:
        """The class the model learns for this image (the particle type unless the task says otherwise)."""
        return self.particle_type if self.label is None else self.label

    def group(self, split_by: str) -> str | None:
        """The image's group id at `split_by` level, or None when the metadata does not say."""
        if split_by == "image":
            return self.filename
        if split_by not in GROUP_LEVELS:
            raise ValueError(f"split_by must be one of image, field, well, plate; got {split_by!r}")
        if self.groups is None:
            return parse_filename(self.filename).group(split_by) if is_bps_filename(self.filename) else None
        return self.groups[GROUP_LEVELS.index(split_by)]

    @cached_property
    def condition(self) -> str:
        """`Fe 0.82Gy 4h` (one per plate in the real data); `Fe (dose/hour unknown)` without metadata (NaN, -1)."""
        return str(Condition.of(self.particle_type, self.dose_Gy, self.hr_post_exposure))


@dataclass
class MetaTable:
    """Validated rows plus the rows that were rejected, with the reason for each (never dropped silently)."""

    rows: list[MetaRow]
    rejected: list[tuple[int, str, str]]  # (line number, filename as given, reason)
    respelled: dict[str, int] = field(default_factory=dict)  # particle_type as written -> rows read as a BPS label

    @property
    def spelling_note(self) -> str | None:
        """The note that says which spellings were read as which label, or None when all were canonical."""
        if not self.respelled:
            return None
        read_as = ", ".join(f"{spelled!r} as {canonical_particle(spelled)} ({n} rows)"
                            for spelled, n in sorted(self.respelled.items()))
        return f"particle_type spellings read as the BPS labels {list(LABELS)}: {read_as}."


def canonical_particle(text: str) -> str | None:
    """The BPS label for an obvious spelling of it (`X-Ray`, `xray`, `x_ray`, `FE`), else None."""
    key = "".join(ch for ch in str(text).lower() if ch.isalnum())
    return {label.lower().replace("-", ""): label for label in LABELS}.get(key)


#: Why a row with an unknown particle_type was rejected (matched by prepare to name the cause of an empty class).
UNKNOWN_PARTICLE = "unknown particle_type"


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
    respelled: dict[str, int] = {}
    seen: set[str] = set()
    for line_no, record in enumerate(reader, start=2):
        name = (record.get("filename") or "").strip()
        try:
            parse_filename(name)
            if name in seen:
                raise MetadataError(f"duplicate filename {name!r}")
            written = (record.get("particle_type") or "").strip()
            label = written if written in LABELS else canonical_particle(written)
            if label is None:
                raise MetadataError(f"{UNKNOWN_PARTICLE} {written!r} (expected one of {list(LABELS)})")
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
        if written != label:
            respelled[written] = respelled.get(written, 0) + 1
        rows.append(MetaRow(name, dose, label, hours))
    return MetaTable(rows=rows, rejected=rejected, respelled=respelled)


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
