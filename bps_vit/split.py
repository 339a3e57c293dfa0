"""Group-aware, stratified train/validation/test split of BPS images: the plan (pure, metadata in, plan out).

Why group-aware: a field of view is cropped into several nuclei whose crops share pixels and
neighbours, and each plate in the real data holds exactly one condition. A random image split
would put near-copies of a test image in train and let a model learn plate signatures, so
images are assigned to splits by group (`--split_by field` by default; `well`, `plate`, or
`image` to see the leak), and no group ever spans two splits. Within that constraint each
condition (particle x dose x hour) is split 70/15/15, with a carry-over that keeps the total
proportions on target even when groups are large.

Sham (0 Gy) images are not radiation damage of either kind, so by default they are kept out of
the two classes and written to `sham/{Fe,X-ray}/` as a negative control.

`prepared_folder.write_split` checks the images and writes the plan to disk.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .bps import LABELS, MetaRow, parse_filename
from .manifest import SHAM_SPLIT, SPLITS

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
    _check_filters(rows, particles, doses, hours)
    kept = [row for row in rows if _passes_filters(row, particles, doses, hours)]
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
        _subsample(by_condition, max_per_condition, seed)
    selected = sorted((row for items in by_condition.values() for row in items), key=lambda r: r.filename)
    return Selection(
        rows=selected,
        filtered_out=len(rows) - len(selected),
        available_per_condition=available,
        selected_per_condition={cond: len(items) for cond, items in sorted(by_condition.items())},
    )


def _check_filters(rows: Sequence[MetaRow], particles: list, doses: list, hours: list) -> None:
    """A filter value that no image has is a typo, not an empty selection: stop and list what there is."""
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
            available = [f"{d:g}" for d in available_doses]
            raise SplitError(f"--doses {dose:g}: no image has that dose; available: {available}.")
    available_hours = sorted({r.hr_post_exposure for r in rows if hour_known(r)})
    for hour in hours:
        if hour not in available_hours:
            raise SplitError(f"--hours {hour}: no image has that time point; available: {available_hours}.")


def _passes_filters(row: MetaRow, particles: list, doses: list, hours: list) -> bool:
    """An empty filter lets everything through; doses compare with a tolerance (they are floats from CSV)."""
    return (
        (not particles or row.particle_type in particles)
        and (not doses or any(math.isclose(row.dose_Gy, d, abs_tol=1e-9) for d in doses))
        and (not hours or row.hr_post_exposure in hours)
    )


def _subsample(by_condition: dict[str, list[MetaRow]], max_per_condition: int, seed: int) -> None:
    """Keep at most `max_per_condition` rows per condition, in place, each drawn by its own (seed, condition) stream."""
    if max_per_condition < 1:
        raise SplitError(f"--max_per_condition must be >= 1; got {max_per_condition}.")
    for cond, items in by_condition.items():
        if len(items) > max_per_condition:
            items.sort(key=lambda r: r.filename)
            rng = np.random.default_rng([seed, zlib.crc32(cond.encode())])
            chosen = np.sort(rng.choice(len(items), size=max_per_condition, replace=False))
            by_condition[cond] = [items[i] for i in chosen]


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
                f"{self.train_fraction} + {self.validation_fraction} + {self.test_fraction} = "
                f"{sum(fractions.values()):g}."
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
        condition = row.condition
        group_size[group] += 1
        group_conditions[group][condition] += 1
        condition_label[condition] = row.particle_type
    condition_groups: dict[str, list[str]] = defaultdict(list)
    for group, conds in group_conditions.items():
        condition_groups[min(conds, key=lambda c: (-conds[c], c))].append(group)
    spanning = sum(1 for conds in group_conditions.values() if len(conds) > 1)
    if spanning:
        notes.append(f"{spanning} {split_by} group(s) hold several conditions; "
                     "each went whole with its most common one.")
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


def plan_split(rows: Sequence[MetaRow], config: SplitConfig | None = None) -> SplitPlan:
    """Assign every row to train/validation/test (or sham). Pure: metadata in, plan out.

    Per stratum (a condition, or a label's pooled small conditions), groups are visited in a
    seeded random order and each goes to the split furthest below its target (`_assign_groups`),
    so every condition is split on its own while the total proportions stay on target.
    """
    config = config or SplitConfig()
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
