"""Group-aware, stratified train/validation/test split of BPS images, with a manifest and a report.

Why group-aware: a field of view is cropped into several nuclei whose crops share pixels and
neighbours, and each plate in the real data holds exactly one condition. A random image split
would put near-copies of a test image in train and let a model learn plate signatures, so
images are assigned to splits by group (`--split_by field` by default; `well`, `plate`, or
`image` to see the leak), and no group ever spans two splits. Within that constraint each
condition (particle x dose x hour) is split 70/15/15, with a carry-over that keeps the total
proportions on target even when groups are large.

Sham (0 Gy) images are not radiation damage of either kind, so by default they are kept out of
the two classes and written to `sham/{Fe,X-ray}/` as a negative control.

Every image is read once before planning: a corrupt, empty or non-image file is skipped and
reported (count + list) in `split_report.json`, never dropped silently. Images are hard-linked
(or copied) byte for byte; nothing is converted.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from bps_vit.disk import check_free_space, same_device
from bps_vit.image_checks import ImageCheck, check_images
from bps_vit.manifest import (
    MANIFEST_NAME,
    REPORT_NAME,
    SHAM_SPLIT,
    SKIPPED,
    SPLITS,
    manifest_row,
    write_manifest,
    write_report,
)
from bps_vit.meta import LABELS, MetaRow, parse_filename

logger = logging.getLogger(__name__)

SPLIT_BY_CHOICES: tuple[str, ...] = ("image", "field", "well", "plate")


class SplitError(ValueError):
    """A split that cannot be made as asked; the message names the flag or file and the fix."""


def dose_known(row: MetaRow) -> bool:
    return not math.isnan(row.dose_Gy)


def hour_known(row: MetaRow) -> bool:
    return row.hr_post_exposure >= 0


# ----------------------------------------------------------------------------- selection


@dataclass
class Selection:
    rows: list[MetaRow]
    filtered_out: int
    available_per_condition: dict[str, int]
    selected_per_condition: dict[str, int]


def _flag_values(values: Iterable | None) -> list:
    return [] if values is None else list(values)


def select_rows(
    rows: Sequence[MetaRow],
    *,
    particles: Sequence[str] | None = None,
    doses: Sequence[float] | None = None,
    hours: Sequence[int] | None = None,
    max_per_condition: int | None = None,
    seed: int = 42,
) -> Selection:
    """Apply --particles/--doses/--hours, then a stratified subsample of at most N per condition.

    The subsample is drawn per condition with its own seeded generator, so the images chosen
    for one condition do not change when another condition is filtered in or out.
    """
    particles, doses, hours = _flag_values(particles), _flag_values(doses), _flag_values(hours)
    unknown = [p for p in particles if p not in LABELS]
    if unknown:
        raise SplitError(f"--particles {unknown}: not a BPS label; choose from {list(LABELS)}.")
    if (doses or hours) and any(not dose_known(r) or not hour_known(r) for r in rows):
        raise SplitError(
            "--doses/--hours need dose and hour metadata, which this source does not have (e.g. --source hf "
            "without --meta_csv). Drop the flags or supply --meta_csv."
        )
    available_doses = sorted({r.dose_Gy for r in rows if dose_known(r)})
    for dose in doses:
        if not any(math.isclose(dose, d, abs_tol=1e-9) for d in available_doses):
            raise SplitError(f"--doses {dose:g}: no image has that dose; available: {[f'{d:g}' for d in available_doses]}.")
    available_hours = sorted({r.hr_post_exposure for r in rows if hour_known(r)})
    for hour in hours:
        if hour not in available_hours:
            raise SplitError(f"--hours {hour}: no image has that time point; available: {available_hours}.")

    def keep(row: MetaRow) -> bool:
        return (
            (not particles or row.particle_type in particles)
            and (not doses or any(math.isclose(row.dose_Gy, d, abs_tol=1e-9) for d in doses))
            and (not hours or row.hr_post_exposure in hours)
        )

    kept = [row for row in rows if keep(row)]
    if not kept:
        raise SplitError(
            f"The filters --particles {particles or 'all'} --doses {doses or 'all'} --hours {hours or 'all'} "
            f"leave no images (of {len(rows)}). Widen them."
        )
    by_condition: dict[str, list[MetaRow]] = defaultdict(list)
    for row in kept:
        by_condition[row.condition].append(row)
    available = {cond: len(items) for cond, items in sorted(by_condition.items())}
    if max_per_condition is not None:
        if max_per_condition < 1:
            raise SplitError(f"--max_per_condition must be >= 1; got {max_per_condition}.")
        for cond, items in by_condition.items():
            if len(items) > max_per_condition:
                items.sort(key=lambda r: r.filename)
                rng = np.random.default_rng([seed, zlib.crc32(cond.encode())])
                chosen = np.sort(rng.choice(len(items), size=max_per_condition, replace=False))
                by_condition[cond] = [items[i] for i in chosen]
    selected = sorted((row for items in by_condition.values() for row in items), key=lambda r: r.filename)
    return Selection(
        rows=selected,
        filtered_out=len(rows) - len(selected),
        available_per_condition=available,
        selected_per_condition={cond: len(items) for cond, items in sorted(by_condition.items())},
    )


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class SplitConfig:
    split_by: str = "field"
    train_fraction: float = 0.7
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    test_hours: tuple[int, ...] = ()
    include_sham: bool = False

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_BY_CHOICES:
            raise SplitError(f"--split_by {self.split_by!r}: choose one of {list(SPLIT_BY_CHOICES)}.")
        object.__setattr__(self, "test_hours", tuple(sorted({int(h) for h in self.test_hours or ()})))
        fractions = self.fractions
        for name, value in fractions.items():
            if not (0.0 < value < 1.0) and not (name == "test" and self.test_hours):
                raise SplitError(f"--{name}_fraction must be in (0, 1); got {value}. Every split needs images.")
        if self.test_hours:
            if self.train_fraction <= 0 or self.validation_fraction <= 0:
                raise SplitError("--train_fraction and --validation_fraction must be > 0.")
        elif not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
            raise SplitError(
                f"--train_fraction + --validation_fraction + --test_fraction must be 1; got "
                f"{self.train_fraction} + {self.validation_fraction} + {self.test_fraction} = {sum(fractions.values()):g}."
            )

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train_fraction, "validation": self.validation_fraction, "test": self.test_fraction}


@dataclass
class SplitPlan:
    """Where each image goes (`split_of`: filename -> train/validation/test/sham) and why."""

    config: SplitConfig
    rows: list[MetaRow]
    split_of: dict[str, str]
    group_of: dict[str, str]
    stratum_of_condition: dict[str, str]
    target_fractions: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> condition -> images (plus `total`)."""
        table: dict[str, Counter] = {s: Counter() for s in (*SPLITS, SHAM_SPLIT)}
        for row in self.rows:
            table[self.split_of[row.filename]][row.condition] += 1
        return {s: {**dict(sorted(c.items())), "total": sum(c.values())} for s, c in table.items()}

    def counts_by_label(self) -> dict[str, dict[str, int]]:
        table = {s: {label: 0 for label in LABELS} for s in (*SPLITS, SHAM_SPLIT)}
        for row in self.rows:
            table[self.split_of[row.filename]][row.particle_type] += 1
        return table

    def achieved_fractions(self) -> dict[str, float]:
        counts = Counter(self.split_of[r.filename] for r in self.rows if self.split_of[r.filename] in SPLITS)
        total = sum(counts.values()) or 1
        return {s: round(counts[s] / total, 4) for s in SPLITS}

    def groups_per_split(self) -> dict[str, int]:
        groups: dict[str, set] = {s: set() for s in (*SPLITS, SHAM_SPLIT)}
        for row in self.rows:
            groups[self.split_of[row.filename]].add(self.group_of[row.filename])
        return {s: len(g) for s, g in groups.items()}

    def group_overlap(self, include_sham: bool = False) -> dict[str, int]:
        """Number of groups shared by each pair of splits; 0 everywhere is the invariant."""
        names = (*SPLITS, SHAM_SPLIT) if include_sham else SPLITS
        groups: dict[str, set] = {s: set() for s in names}
        for row in self.rows:
            split = self.split_of[row.filename]
            if split in groups:
                groups[split].add(self.group_of[row.filename])
        return {f"{a}/{b}": len(groups[a] & groups[b]) for i, a in enumerate(names) for b in names[i + 1:]}


#: Strata with few groups (wells, plates) try several seeded orders and keep the closest to target.
_RETRIES = 64
_MAX_GROUPS_FOR_RETRIES = 2000


def _greedy_assign(order, sizes, active_splits, targets, nominal) -> tuple[list[str], dict[str, int]]:
    """Visit groups in `order`; each goes to the split furthest below its target (relative to its share)."""
    here = {s: 0 for s in active_splits}
    choice: list[str] = [""] * len(sizes)
    for index in order:
        best = max(active_splits, key=lambda s: (targets[s] - here[s]) / nominal[s])
        choice[index] = best
        here[best] += sizes[index]
    return choice, here


def _set_test_hours(active: list[MetaRow], config: SplitConfig, group_of: dict[str, str], split_of: dict[str, str],
                    notes: list[str]) -> tuple[list[MetaRow], dict[str, float]]:
    """--test_hours: every image at those hours goes to test (whole groups only); returns the rest and its fractions."""
    fractions = dict(config.fractions)
    if not config.test_hours:
        return active, fractions
    if any(not hour_known(r) for r in active):
        raise SplitError("--test_hours needs hr_post_exposure, which some images lack (source hf without --meta_csv).")
    test_hours = set(config.test_hours)
    fixed = [r for r in active if r.hr_post_exposure in test_hours]
    rest = [r for r in active if r.hr_post_exposure not in test_hours]
    if not fixed:
        raise SplitError(
            f"--test_hours {list(config.test_hours)}: no images at those hours among {len(active)} selected; "
            f"available: {sorted({r.hr_post_exposure for r in active})}."
        )
    if not rest:
        raise SplitError(f"--test_hours {list(config.test_hours)} takes every image; nothing left to train on.")
    mixed = {group_of[r.filename] for r in fixed} & {group_of[r.filename] for r in rest}
    if mixed:
        raise SplitError(
            f"--test_hours: {len(mixed)} {config.split_by} group(s) (e.g. {sorted(mixed)[0]}) hold images of several "
            "hours, so a whole time point cannot go to test without splitting them. Use a finer --split_by."
        )
    for row in fixed:
        split_of[row.filename] = "test"
    keep = fractions["train"] + fractions["validation"]
    fractions = {"train": fractions["train"] / keep, "validation": fractions["validation"] / keep, "test": 0.0}
    notes.append(
        f"--test_hours {list(config.test_hours)}: every image at those hours is in test and only there; "
        f"the other hours are split train/validation {fractions['train']:.3f}/{fractions['validation']:.3f} "
        "(--test_fraction is ignored)."
    )
    return rest, fractions


def _strata(rows: list[MetaRow], group_of: dict[str, str], split_by: str, n_splits: int, notes: list[str]):
    """(groups per stratum, images per group, stratum of each condition).

    A group that spans conditions goes with its most common one; conditions with fewer groups
    than splits are pooled per label (as with `--split_by plate`, where each condition is one plate).
    """
    group_size: Counter = Counter()
    group_conditions: dict[str, Counter] = defaultdict(Counter)
    condition_label: dict[str, str] = {}
    for row in rows:
        group = group_of[row.filename]
        group_size[group] += 1
        group_conditions[group][row.condition] += 1
        condition_label[row.condition] = row.particle_type
    condition_groups: dict[str, list[str]] = defaultdict(list)
    for group, conds in group_conditions.items():
        condition_groups[min(conds, key=lambda c: (-conds[c], c))].append(group)
    spanning = sum(1 for conds in group_conditions.values() if len(conds) > 1)
    if spanning:
        notes.append(f"{spanning} {split_by} group(s) hold several conditions; each went whole with its most common one.")
    stratum_of_condition = {
        cond: f"{condition_label[cond]} (pooled)" if len(groups) < n_splits else cond
        for cond, groups in condition_groups.items()
    }
    pooled = sorted(c for c, s in stratum_of_condition.items() if s != c)
    if pooled:
        notes.append(
            f"{len(pooled)} condition(s) have fewer {split_by} groups than splits and were pooled per label "
            f"(stratified by label only): {pooled}."
        )
    strata: dict[str, list[str]] = defaultdict(list)
    for cond, groups in condition_groups.items():
        strata[stratum_of_condition[cond]].extend(groups)
    return strata, group_size, stratum_of_condition


def _assign_groups(strata: dict[str, list[str]], group_size: Counter, fractions: dict[str, float],
                   seed: int) -> dict[str, str]:
    """Per stratum, groups in a seeded order go to the split furthest below its target; targets carry the
    surplus/deficit of earlier strata, so the overall proportions stay within about one group of the goal."""
    active_splits = [s for s in SPLITS if fractions[s] > 0]
    assigned_total = {s: 0 for s in SPLITS}
    grand_total = 0
    split_of_group: dict[str, str] = {}
    for key in sorted(strata):
        groups = sorted(strata[key])
        sizes = [group_size[g] for g in groups]
        n = sum(sizes)
        targets = {s: fractions[s] * (grand_total + n) - assigned_total[s] for s in active_splits}
        nominal = {s: fractions[s] * n for s in active_splits}
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        trials = 1 if len(groups) > _MAX_GROUPS_FOR_RETRIES else _RETRIES
        best_score, choice, here = None, None, None
        for _ in range(trials):
            candidate, filled = _greedy_assign(rng.permutation(len(groups)), sizes, active_splits, targets, nominal)
            empty = sum(1 for s in active_splits if filled[s] == 0)
            error = sum(((targets[s] - filled[s]) / n) ** 2 for s in active_splits)
            if best_score is None or (empty, error) < best_score:
                best_score, choice, here = (empty, error), candidate, filled
        split_of_group.update(zip(groups, choice, strict=True))
        for s in active_splits:
            assigned_total[s] += here[s]
        grand_total += n
    return split_of_group


def plan_split(rows: Sequence[MetaRow], config: SplitConfig = SplitConfig()) -> SplitPlan:
    """Assign every row to train/validation/test (or sham). Pure: metadata in, plan out.

    Per stratum (a condition, or a label's pooled small conditions), groups are visited in a
    seeded random order and each goes to the split furthest below its target (`_assign_groups`),
    so every condition is split on its own while the total proportions stay on target.
    """
    rows = sorted(rows, key=lambda r: r.filename)
    if len({r.filename for r in rows}) != len(rows):
        dupes = sorted(n for n, c in Counter(r.filename for r in rows).items() if c > 1)
        raise SplitError(f"duplicated filenames in the rows to split: {dupes[:5]}; each image must appear once.")
    group_of = {r.filename: parse_filename(r.filename).group(config.split_by) for r in rows}
    split_of: dict[str, str] = {}
    notes: list[str] = []
    active = [row for row in rows if config.include_sham or not row.is_sham]
    split_of.update({row.filename: SHAM_SPLIT for row in rows if row.is_sham and not config.include_sham})
    rest, fractions = _set_test_hours(active, config, group_of, split_of, notes)
    n_splits = sum(1 for s in SPLITS if fractions[s] > 0)
    strata, group_size, stratum_of_condition = _strata(rest, group_of, config.split_by, n_splits, notes)
    split_of_group = _assign_groups(strata, group_size, fractions, config.seed)
    for row in rest:
        split_of[row.filename] = split_of_group[group_of[row.filename]]
    return SplitPlan(config, rows, split_of, group_of, stratum_of_condition, fractions, notes)


def check_plan(plan: SplitPlan) -> None:
    """Stop with the fix when the split cannot train a two-class model: an empty split or a missing class."""
    by_label = plan.counts_by_label()
    labels_present = [label for label in LABELS if any(by_label[s][label] for s in SPLITS)]
    if len(labels_present) < len(LABELS):
        missing = [label for label in LABELS if label not in labels_present]
        raise SplitError(
            f"No {missing} images to split (sham excluded: {sum(by_label[SHAM_SPLIT].values())}); a classifier needs "
            f"both {list(LABELS)}. Widen --particles/--doses/--hours, or pass --include_sham."
        )
    for split in SPLITS:
        for label in LABELS:
            if by_label[split][label] == 0:
                groups = plan.groups_per_split()
                raise SplitError(
                    f"The {split} split has no {label} images ({plan.config.split_by} groups per split: "
                    f"{ {s: groups[s] for s in SPLITS} }). Select more images, use a finer --split_by "
                    f"(e.g. field instead of {plan.config.split_by}), or change the split fractions."
                )
    overlap = plan.group_overlap()
    if any(overlap.values()):  # an invariant of plan_split; checked because a leak would be silent otherwise
        raise AssertionError(f"group overlap between splits: {overlap}")


# ----------------------------------------------------------------------------- writing


def _is_prepared_folder(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).is_file() or (folder / REPORT_NAME).is_file()


def check_output_dir(output_dir: str | Path, protected: Iterable[str | Path] = ()) -> Path:
    """The output folder may be new, empty or a previous prepared folder (replaced); nothing else is touched."""
    output_dir = Path(output_dir).absolute()
    real_output = output_dir.resolve()
    for other in protected:
        other = Path(other).resolve()
        if other == real_output or real_output in other.parents or other in real_output.parents:
            raise SplitError(
                f"--output_dir {output_dir} and the raw folder {other} overlap; a re-run replaces the output folder, "
                "so they must be separate (e.g. data/bps and data/raw/<source>)."
            )
    if output_dir.exists():
        if not output_dir.is_dir():
            raise SplitError(f"--output_dir {output_dir} exists and is not a folder; choose another --output_dir.")
        if any(output_dir.iterdir()) and not _is_prepared_folder(output_dir):
            raise SplitError(
                f"--output_dir {output_dir} is not empty and is not a prepared BPS folder (no {MANIFEST_NAME}); "
                "refusing to replace it. Choose an empty or new --output_dir."
            )
    return output_dir


def _place(source: Path, dest: Path, link_mode: str) -> str:
    """Hard-link (no extra space, same bytes) or copy; returns what was done."""
    if link_mode == "hardlink":
        try:
            os.link(source, dest)
            return "hardlink"
        except OSError:
            pass
    shutil.copyfile(source, dest)
    return "copy"


def _usable_rows(rows: list[MetaRow], sources: Mapping[str, Path], known_failures: Mapping[str, tuple[str, str]],
                 verify_images: bool, num_workers: int, disable_tqdm: bool):
    """(checks by filename, usable rows, skipped checks): every image read once; unusable ones logged."""
    to_check = [r.filename for r in rows if r.filename not in known_failures]
    checks = check_images(to_check, sources, decode=verify_images, num_workers=num_workers, disable_tqdm=disable_tqdm)
    for name, (category, reason) in known_failures.items():
        checks[name] = ImageCheck(name, category, reason)
    good_rows = [r for r in rows if checks[r.filename].ok]
    skipped = [checks[r.filename] for r in rows if not checks[r.filename].ok]
    if not good_rows:
        raise SplitError(
            f"None of the {len(rows)} selected images is usable ({dict(Counter(c.category for c in skipped))}); "
            "see the reasons above, fix the raw folder or re-fetch."
        )
    for check in skipped[:20]:
        logger.warning("Skipping %s: %s", check.filename, check.reason)
    if len(skipped) > 20:
        logger.warning("... and %d more skipped files (all listed in %s)", len(skipped) - 20, REPORT_NAME)
    return checks, good_rows, skipped


def _place_images(staging: Path, plan: SplitPlan, good_rows: list[MetaRow], sources: Mapping[str, Path],
                  checks: Mapping[str, ImageCheck], masks_dir: Path | None, link_mode: str, disable_tqdm: bool):
    """Link or copy each image (and its mask) into `staging`; returns (manifest rows, placed modes, masks missing)."""
    from tqdm.auto import tqdm

    has_sham = any(plan.split_of[r.filename] == SHAM_SPLIT for r in good_rows)
    for split in (*SPLITS, SHAM_SPLIT) if has_sham else SPLITS:
        for label in LABELS:
            (staging / split / label).mkdir(parents=True, exist_ok=True)
    if masks_dir is not None:
        (staging / "masks").mkdir(parents=True, exist_ok=True)
    manifest, placed_modes, masks_missing = [], Counter(), []
    for row in tqdm(good_rows, unit="img", desc="Writing split", disable=disable_tqdm):
        split = plan.split_of[row.filename]
        relative = f"{split}/{row.particle_type}/{row.filename}"
        placed_modes[_place(sources[row.filename], staging / relative, link_mode)] += 1
        if masks_dir is not None:
            mask = masks_dir / row.filename
            if mask.is_file() and not mask.is_symlink():
                _place(mask, staging / "masks" / row.filename, link_mode)
            else:
                masks_missing.append(row.filename)
        manifest.append(manifest_row(row, split, checks[row.filename].sha256, relative))
    return manifest, placed_modes, masks_missing


def write_split(
    rows: Sequence[MetaRow],
    sources: Mapping[str, Path],
    output_dir: str | Path,
    config: SplitConfig = SplitConfig(),
    *,
    masks_dir: str | Path | None = None,
    rejected_rows: Sequence[tuple[int | None, str, str]] = (),
    known_failures: Mapping[str, tuple[str, str]] | None = None,
    unlisted_files: Sequence[str] = (),
    protected_dirs: Sequence[str | Path] = (),
    link_mode: str = "hardlink",
    verify_images: bool = True,
    num_workers: int = 8,
    disable_tqdm: bool = False,
    provenance: Mapping | None = None,
    notes: Sequence[str] = (),
) -> dict:
    """Check, plan and write the prepared folder; return the split report (also saved as split_report.json).

    `rows` are validated metadata rows and `sources` maps each filename to its file. Files that
    cannot be used are skipped and listed (`known_failures` adds ones already known, e.g. failed
    downloads: filename -> (category, reason)). The folder is built under a hidden staging name
    and swapped in at the end, so an interrupted run never leaves a half-written dataset.
    """
    if link_mode not in ("hardlink", "copy"):
        raise SplitError(f"--link_mode must be hardlink or copy; got {link_mode!r}.")
    output_dir = check_output_dir(output_dir, protected_dirs)
    rows = sorted(rows, key=lambda r: r.filename)
    checks, good_rows, skipped = _usable_rows(rows, sources, dict(known_failures or {}), verify_images, num_workers,
                                              disable_tqdm)
    plan = plan_split(good_rows, config)
    check_plan(plan)
    # Space: hard links cost nothing; copies (other disk, or --link_mode copy) need the bytes.
    if link_mode == "copy" or not same_device({sources[r.filename].parent for r in good_rows}, output_dir.parent):
        needed = sum(checks[r.filename].nbytes for r in good_rows)
        check_free_space(output_dir, int(needed * 1.05), what=f"copying {len(good_rows)} images")

    staging = output_dir.parent / f".{output_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    masks_dir = Path(masks_dir) if masks_dir is not None and Path(masks_dir).is_dir() else None
    try:
        manifest, placed_modes, masks_missing = _place_images(
            staging, plan, good_rows, sources, checks, masks_dir, link_mode, disable_tqdm
        )
        row_by_name = {r.filename: r for r in rows}
        manifest += [manifest_row(row_by_name[c.filename], SKIPPED, c.sha256, "") for c in skipped]
        order = {s: i for i, s in enumerate((*SPLITS, SHAM_SPLIT, SKIPPED))}
        write_manifest(staging, sorted(manifest, key=lambda m: (order[m["split"]], m["label"], m["filename"])))
        masks_copied = len(good_rows) - len(masks_missing) if masks_dir is not None else 0
        report = _build_report(
            plan, checks, good_rows, skipped, rejected_rows, unlisted_files, placed_modes, masks_dir,
            masks_copied, masks_missing, provenance, [*notes, *plan.notes], output_dir,
        )
        write_report(staging, report)
        _swap_in(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "Wrote %s: %s; sham %d; skipped %d; group overlap %d",
        output_dir,
        ", ".join(f"{s} {report['counts'][s]['total']}" for s in SPLITS),
        report["counts"][SHAM_SPLIT]["total"], len(skipped), report["group_overlap_total"],
    )
    return report


def _swap_in(staging: Path, output_dir: Path) -> None:
    """Replace the previous prepared folder by the new one with renames (no half-old, half-new state)."""
    old = None
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(output_dir, old)
    os.replace(staging, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_report(
    plan: SplitPlan, checks, good_rows, skipped, rejected_rows, unlisted_files, placed_modes, masks_dir,
    masks_copied, masks_missing, provenance, notes, output_dir,
) -> dict:
    by_hash: dict[str, list[str]] = defaultdict(list)
    for row in good_rows:
        by_hash[checks[row.filename].sha256].append(row.filename)
    duplicate_content = []
    for digest, names in sorted(by_hash.items()):
        if len(names) > 1:
            splits = sorted({plan.split_of[n] for n in names})
            duplicate_content.append({"sha256": digest, "filenames": sorted(names), "splits": splits})
    across = [d for d in duplicate_content if len(d["splits"]) > 1]
    if across:
        notes = [*notes, f"{len(across)} set(s) of byte-identical images sit in different splits (a leak): "
                         "see duplicate_content; remove the copies from the raw folder."]
    kinds = Counter(checks[r.filename].kind for r in good_rows)
    non_standard = [
        {"filename": r.filename, "format": checks[r.filename].kind}
        for r in good_rows
        if checks[r.filename].kind and not checks[r.filename].kind.startswith("TIFF uint16 gray")
    ]
    overlap = plan.group_overlap()
    config = plan.config
    return {
        "output_dir": str(output_dir),
        "provenance": dict(provenance or {}),
        "config": {**asdict(config), "test_hours": list(config.test_hours)},
        "source": (provenance or {}).get("source"),
        "split_by": config.split_by,
        "seed": config.seed,
        "test_hours": list(config.test_hours),
        "include_sham": config.include_sham,
        "target_fractions": {s: round(v, 4) for s, v in plan.target_fractions.items()},
        "achieved_fractions": plan.achieved_fractions(),
        "counts": plan.counts(),
        "counts_by_label": plan.counts_by_label(),
        "groups_per_split": plan.groups_per_split(),
        "group_overlap": overlap,
        "group_overlap_total": sum(overlap.values()),
        "sham_group_overlap": {k: v for k, v in plan.group_overlap(include_sham=True).items() if SHAM_SPLIT in k},
        "strata": dict(sorted(plan.stratum_of_condition.items())),
        "num_images_written": len(good_rows),
        "placed_as": dict(placed_modes),
        "masks": None if masks_dir is None else {"copied": masks_copied, "missing": len(masks_missing),
                                                 "missing_files": masks_missing},
        "image_formats": dict(sorted(kinds.items())),
        "non_standard_images": non_standard,
        "num_rejected_rows": len(rejected_rows),
        "rejected_rows": [{"line": line, "filename": name, "reason": reason} for line, name, reason in rejected_rows],
        "num_skipped_files": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(c.category for c in skipped).items())),
        "skipped_files": [{"filename": c.filename, "category": c.category, "reason": c.reason} for c in skipped],
        "num_unlisted_files": len(unlisted_files),
        "unlisted_files": list(unlisted_files),
        "duplicate_content": duplicate_content,
        "notes": list(notes),
    }
