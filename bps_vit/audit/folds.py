"""The audit's plan: which images each fold trains, validates and scores on (pure: manifest rows in, folds out).

Three strategies answer three questions:

- `plate`: leave one irradiated plate out, for every plate. A model that never saw the plate: the accuracy to
  expect on a new experiment.
- `field`: K folds grouped by field of view, stratified by condition. Every plate is in training and in the
  held-out set: what `--split_by field` measures.
- `image`: K random folds, stratified by condition. Neighbouring nuclei of one field straddle the split: the leaky
  reference of the public BPS results.

Each fold carves its validation set (for picking the best epoch) out of its own training images, by the
strategy's group and stratified by label (plate) or condition (field, image), so the model is chosen the way the
strategy would choose it and never on held-out images. Bad input stops here, before anything is decoded or
written, with one `AuditInputError` that names the count and the fix.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

from ..bps import LABELS
from ..manifest import SHAM_SPLIT, condition_of

STRATEGIES: tuple[str, ...] = ("plate", "field", "image")
#: The group a strategy holds out whole (and carves its validation set by).
GROUP_OF_STRATEGY = {"plate": "plate", "field": "field", "image": "filename"}
#: Plates per label the checks need: 2 for a cluster bootstrap over plates; 3 to leave one out and validate on another.
MIN_PLATES, MIN_PLATES_PLATE_STRATEGY = 2, 3


class AuditInputError(ValueError):
    """Data or flags the audit cannot work with; the message names the count and the fix (a usage error, exit 2)."""


@dataclass(frozen=True)
class Image:
    """One image of the prepared folder, as the audit sees it."""
    filename: str
    path: str  # relative to the data folder
    label: int  # index into LABELS (for a sham image: its branch)
    condition: str
    plate: str
    well: str
    field: str
    sham: bool

    @property
    def label_name(self) -> str:
        return LABELS[self.label]


@dataclass(frozen=True)
class Fold:
    """One model to train: positions into the pool (`Pool.images`) of its training, validation and held-out images."""
    strategy: str
    index: int
    train: np.ndarray
    validation: np.ndarray
    held_out: np.ndarray
    held_out_groups: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.strategy}-{self.index}"


@dataclass
class Pool:
    """The irradiated images (the cross-validation's pool) and the sham images (each fold's negative control)."""
    images: list[Image]
    sham: list[Image]

    def column(self, name: str, positions: Sequence[int] | None = None) -> np.ndarray:
        chosen = self.images if positions is None else [self.images[i] for i in positions]
        return np.array([getattr(image, name) for image in chosen], dtype=object if name != "label" else np.int64)

    def plates_per_label(self) -> dict[str, list[str]]:
        plates: dict[str, set] = {label: set() for label in LABELS}
        for image in self.images:
            plates[image.label_name].add(image.plate)
        return {label: sorted(found) for label, found in plates.items()}


# ----------------------------------------------------------------------------- the pool


def _is_sham(row: dict[str, str]) -> bool:
    condition = condition_of(row)
    return row["split"] == SHAM_SPLIT or (condition.known and condition.dose_Gy == 0.0)


def pool_from_manifest(rows: list[dict[str, str]]) -> Pool:
    """The audit's images from `manifest.csv` rows (skipped images excluded). Stops when plates are unknown."""
    placed = [row for row in rows if row.get("split") and row.get("path") and row["split"] != "skipped"]
    unknown = [row["filename"] for row in placed if not (row.get("plate") and row.get("well") and row.get("field"))]
    if unknown:
        raise AuditInputError(
            f"{len(unknown)} of {len(placed)} images in manifest.csv have no plate, well or field (e.g. "
            f"{unknown[0]}), and the audit holds out whole plates. Prepare the data from a source with BPS "
            "filenames (P<plate>_<acq>-<well>_<field>_<object>_proj.tif): scripts/prepare_data.py --source s3|local."
        )
    images, sham = [], []
    for row in sorted(placed, key=lambda r: r["filename"]):
        if row["label"] not in LABELS:
            raise AuditInputError(f"manifest.csv: {row['filename']} has label {row['label']!r}, not one of "
                                  f"{list(LABELS)}; re-run scripts/prepare_data.py.")
        image = Image(row["filename"], row["path"], LABELS.index(row["label"]), str(condition_of(row)), row["plate"],
                      row["well"], row["field"], _is_sham(row))
        (sham if image.sham else images).append(image)
    return Pool(images, sham)


# ----------------------------------------------------------------------------- folds


def _k_folds(pool: Pool, strategy: str, num_folds: int, seed: int) -> list[tuple[np.ndarray, tuple[str, ...]]]:
    """(held-out positions, held-out groups) per fold."""
    positions = np.arange(len(pool.images))
    groups = pool.column(GROUP_OF_STRATEGY[strategy])
    conditions = pool.column("condition")
    if strategy == "plate":
        splits = LeaveOneGroupOut().split(positions, groups=groups)
    elif strategy == "field":
        splits = StratifiedGroupKFold(num_folds, shuffle=True, random_state=seed).split(positions, conditions, groups)
    else:
        splits = StratifiedKFold(num_folds, shuffle=True, random_state=seed).split(positions, conditions)
    folds = [(np.sort(held_out), tuple(sorted(set(groups[held_out])))) for _, held_out in splits]
    return sorted(folds, key=lambda fold: fold[1]) if strategy == "plate" else folds


def carve_validation(positions: np.ndarray, groups: np.ndarray, strata: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions: per stratum, whole groups in a seeded order go to validation until it holds
    `fraction` of the stratum's images; at least one group, and never the stratum's last."""
    validation: list[int] = []
    for stratum in sorted(set(strata[positions])):
        in_stratum = positions[strata[positions] == stratum]
        names = sorted(set(groups[in_stratum]))
        order = np.random.default_rng([seed, zlib.crc32(str(stratum).encode())]).permutation(len(names))
        taken, target = 0, fraction * len(in_stratum)
        for name in [names[i] for i in order][: max(len(names) - 1, 0)]:
            if taken and taken >= target:
                break
            members = in_stratum[groups[in_stratum] == name]
            validation.extend(members.tolist())
            taken += len(members)
    validation_set = set(validation)
    train = np.array([p for p in positions if p not in validation_set], dtype=np.int64)
    return train, np.sort(np.array(validation, dtype=np.int64))


def carve_strata(pool: Pool, positions: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The stratum of every image for the validation carve: its condition, or its label when its condition has
    fewer than 2 groups among `positions` (as `split.py` pools small conditions; a plate is one condition)."""
    conditions, labels = pool.column("condition"), pool.column("label")
    groups_of = {c: len(set(groups[positions][conditions[positions] == c])) for c in set(conditions[positions])}
    return np.array([c if groups_of.get(c, 0) >= 2 else f"{LABELS[k]} (pooled)" for c, k in zip(conditions, labels)],
                    dtype=object)


def balance_labels(train: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """`train` with the larger label subsampled (seeded) to the smaller one's count.

    Leaving a plate out leaves its label short in training; a model that learns the prior (or a class-weighted
    loss that over-corrects it) then calls the held-out plate by the training imbalance, not by what it sees, and
    the plate-held-out accuracy is biased below (or above) chance in a world without any signal.
    """
    counts = np.bincount(labels[train], minlength=len(LABELS))
    keep = [train[labels[train] == k] for k in range(len(LABELS))]
    rng = np.random.default_rng([seed, 1])
    keep = [part if len(part) == counts.min() else rng.choice(part, size=counts.min(), replace=False) for part in keep]
    return np.sort(np.concatenate(keep))


def plan_folds(pool: Pool, strategies: Sequence[str], num_folds: int, validation_fraction: float,
               seed: int, balance: bool = True) -> list[Fold]:
    """Every fold of every strategy, checked: both labels in each fold's training and validation images.

    With `balance`, each fold trains on as many images of each label (`balance_labels`)."""
    check_pool(pool, strategies, num_folds)
    labels = pool.column("label")
    folds = []
    for strategy in strategies:
        groups = pool.column(GROUP_OF_STRATEGY[strategy])
        for index, (held_out, held_groups) in enumerate(_k_folds(pool, strategy, num_folds, seed)):
            rest = np.setdiff1d(np.arange(len(pool.images)), held_out)
            strata = carve_strata(pool, rest, groups)
            train, validation = carve_validation(rest, groups, strata, validation_fraction, seed + index)
            if balance:
                train = balance_labels(train, labels, seed + index)
            fold = Fold(strategy, index, train, validation, held_out, held_groups)
            _check_fold(pool, fold)
            folds.append(fold)
    return folds


# ----------------------------------------------------------------------------- bad input


def check_pool(pool: Pool, strategies: Sequence[str], num_folds: int) -> None:
    """The counts every strategy needs, each failure one message with the count and the fix."""
    plates = pool.plates_per_label()
    counts = {label: len(found) for label, found in plates.items()}
    if min(counts.values()) == 0:
        raise AuditInputError(f"the data folder has irradiated images of one label only (plates per label: {counts}); "
                              "the audit needs Fe and X-ray plates. Prepare both (scripts/prepare_data.py).")
    if max(counts.values()) < MIN_PLATES:
        raise AuditInputError(
            f"one irradiated plate per label ({counts}): nothing can be held out and no interval drawn over plates. "
            f"The audit needs at least {MIN_PLATES} plates per label ({MIN_PLATES_PLATE_STRATEGY} for --strategies "
            "plate); prepare data from more plates (--plates_per_condition for synthetic data)."
        )
    single = [label for label, n in counts.items() if n < MIN_PLATES]
    if single:
        raise AuditInputError(
            f"{single[0]} has a single irradiated plate ({counts}): holding it out leaves no {single[0]} image to "
            f"train on, and no interval can be drawn over its plates. Prepare data from at least {MIN_PLATES} plates "
            "per label (--plates_per_condition for synthetic data)."
        )
    few = {label: n for label, n in counts.items() if n < MIN_PLATES_PLATE_STRATEGY}
    if "plate" in strategies and few:
        raise AuditInputError(
            f"--strategies plate: {', '.join(f'{label} has {n} irradiated plate(s)' for label, n in few.items())}; "
            f"leaving one out and validating on another needs at least {MIN_PLATES_PLATE_STRATEGY} per label. "
            "Prepare data from more plates, or drop plate from --strategies (field and image need 2)."
        )
    for strategy in (s for s in strategies if s != "plate"):
        groups = len(set(pool.column(GROUP_OF_STRATEGY[strategy])))
        if num_folds > groups:
            raise AuditInputError(f"--num_folds {num_folds} is more than the {groups} {strategy} groups of the "
                                  f"irradiated images; use --num_folds {groups} or fewer.")


def _check_fold(pool: Pool, fold: Fold) -> None:
    labels = pool.column("label")
    for part in ("train", "validation"):
        found = Counter(LABELS[label] for label in labels[getattr(fold, part)])
        missing = [label for label in LABELS if not found[label]]
        if missing:
            held = ", ".join(fold.held_out_groups[:3]) + (" ..." if len(fold.held_out_groups) > 3 else "")
            conditions = sorted(set(pool.column("condition", fold.held_out)))
            raise AuditInputError(
                f"fold {fold.name} (holding out {held}: {', '.join(conditions[:3])}) leaves no {missing[0]} image in "
                f"its {part} set ({dict(found)} images). Every label needs groups left to {part} on: prepare data "
                "with more plates or fields of that label, or use fewer --num_folds."
            )
