"""The audit's numbers from its held-out predictions: accuracy with a cluster bootstrap over plates, per plate,
and the inflation of the leaky strategies over the plate-held-out one (pure numpy).

Images of one plate share its staining, exposure and focus, so they are not independent draws: an interval that
resamples images is far too narrow when a model's errors come plate by plate. The bootstrap here resamples whole
plates, with replacement, within each label (every plate holds one condition, so each label keeps its number of
plates and both classes stay present), and recomputes the metric on the images of the drawn plates. The inflation
is paired: every irradiated image has one held-out prediction per strategy, so each resample scores both
strategies on the same plates and the interval is that of their difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bps import LABELS
from ..results import PlateInterval, PlateScore

LEVEL = 0.95


@dataclass
class HeldOut:
    """One strategy's held-out predictions, one per irradiated image, in the pool's order."""

    labels: np.ndarray  # [n] int
    predictions: np.ndarray  # [n] int
    plates: np.ndarray  # [n] plate id of each image
    conditions: np.ndarray  # [n] condition of each image

    @property
    def correct(self) -> np.ndarray:
        return self.labels == self.predictions


@dataclass
class PlateCounts:
    """Per plate and class: images and correct predictions, the sufficient statistics of (balanced) accuracy."""

    plates: list[str]
    strata: np.ndarray  # [P] the label a plate is resampled within (its most common one)
    n: np.ndarray  # [P, C]
    correct: np.ndarray  # [P, C]

    @classmethod
    def of(cls, held_out: HeldOut, plates: list[str], num_classes: int = 2) -> PlateCounts:
        index = {plate: i for i, plate in enumerate(plates)}
        rows = np.array([index[p] for p in held_out.plates], dtype=np.int64)
        n = np.zeros((len(plates), num_classes))
        correct = np.zeros((len(plates), num_classes))
        np.add.at(n, (rows, held_out.labels), 1)
        np.add.at(correct, (rows, held_out.labels), held_out.correct.astype(float))
        return cls(plates, n.argmax(axis=1), n, correct)


def accuracy_of(weights: np.ndarray, counts: PlateCounts) -> np.ndarray:
    """Accuracy with each plate counted `weights` times; weights [B, P] -> [B]."""
    return (weights @ counts.correct.sum(axis=1)) / (weights @ counts.n.sum(axis=1))


def balanced_accuracy_of(weights: np.ndarray, counts: PlateCounts) -> np.ndarray:
    """Mean recall over the classes, with each plate counted `weights` times; weights [B, P] -> [B]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        recalls = (weights @ counts.correct) / (weights @ counts.n)
    return np.nanmean(recalls, axis=1)


METRICS = {"accuracy": accuracy_of, "balanced_accuracy": balanced_accuracy_of}


def plate_resamples(strata: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[resamples, P] counts: how often each plate is drawn when each stratum's plates are drawn with replacement,
    as many as it has."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, len(strata)))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=resamples)
    return weights


def interval(estimate: float, draws: np.ndarray) -> PlateInterval:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return PlateInterval(float(estimate), float(low), float(high))


def score_strategy(held_out: HeldOut, plates: list[str], weights: np.ndarray) -> dict[str, PlateInterval]:
    """Pooled accuracy and balanced accuracy with their cluster-bootstrap intervals (`weights` from
    `plate_resamples` over the same `plates`)."""
    counts = PlateCounts.of(held_out, plates)
    whole = np.ones((1, len(plates)))
    return {name: interval(metric(whole, counts)[0], metric(weights, counts)) for name, metric in METRICS.items()}


def paired_difference(leaky: HeldOut, honest: HeldOut, plates: list[str], weights: np.ndarray,
                      metric: str = "accuracy") -> PlateInterval:
    """`leaky` minus `honest` on the same images, with a paired cluster-bootstrap interval."""
    function = METRICS[metric]
    whole = np.ones((1, len(plates)))
    first, second = PlateCounts.of(leaky, plates), PlateCounts.of(honest, plates)
    estimate = function(whole, first)[0] - function(whole, second)[0]
    return interval(estimate, function(weights, first) - function(weights, second))


def per_plate(held_out: HeldOut) -> list[PlateScore]:
    """Accuracy on each plate's held-out images, with its condition(s), in plate order."""
    scores = []
    for plate in sorted(set(held_out.plates)):
        mask = held_out.plates == plate
        conditions = sorted(set(held_out.conditions[mask]))
        label = LABELS[int(np.bincount(held_out.labels[mask]).argmax())]
        scores.append(PlateScore(plate=str(plate), condition=", ".join(conditions), label=label, n=int(mask.sum()),
                                 accuracy=float(held_out.correct[mask].mean())))
    return scores


def inflation_verdict(strategy: str, difference: PlateInterval) -> str:
    """The inflation in plain words."""
    what = f"splitting by {strategy}"
    numbers = f"{difference.estimate:.3f} [{difference.low:.3f}, {difference.high:.3f}]"
    if difference.low > 0:
        return f"{what} overstates accuracy on new plates by {numbers}"
    if difference.high < 0:
        return f"{what} understates accuracy on new plates by {numbers} (the plate-held-out models did better)"
    return f"{what}: no inflation detected (the interval includes 0: {numbers})"
