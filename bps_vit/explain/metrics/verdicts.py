"""The verdicts: each faithfulness number next to its baseline, a paired bootstrap interval, and a yes/no that is
only given when the perturbation it rests on removes the signal (`perturbation_check`). The thresholds are named
here, with why they are what they are.
"""

from __future__ import annotations

import numpy as np

from ...metrics import balanced_accuracy
from ...results import MethodSummary, PerturbationCheck, Verdicts, WholeImageCheck
from ..methods.registry import METHODS, method_title
from ..records import ExplainedImage
from . import stats
from .deletion import RandomOrderScores, curve_scores
from .ground_truth import ground_truth_summary
from .stats import mean_or_none

# --------------------------------------------------------------------------- the verdicts' thresholds

#: A whole-image perturbation "removes the signal" when the model's balanced accuracy on the perturbed
#: images is within this of chance. Fixed rather than a test: at the demo's 64 images a chance-level
#: balanced accuracy has a standard error of about 0.06, so 0.10 lets a true chance result through
#: about nine times in ten and refuses a model that still gets 0.65 right. With few images (the
#: default 8: standard error 0.18) the check is weak; the balanced accuracy is reported beside it.
CHANCE_TOLERANCE = 0.10

#: Adebayo et al.'s sanity check passes when the map of the randomised model has a Spearman rank
#: correlation below this with the trained model's map. The paper sets no cut-off; 0.5 is ours:
#: above it the two maps share most of their ordering, so the map describes the image more than
#: the weights. The correlation itself is always reported.
RANDOMIZATION_SPEARMAN_LIMIT = 0.5


def whole_image_check(probabilities: np.ndarray, labels: np.ndarray, targets: np.ndarray) -> WholeImageCheck:
    """What the model says about fully perturbed images: accuracy, balanced accuracy, mean p(target).

    `labels`: the true classes (or the model's own predictions when there are none). The
    perturbation removes the signal when the balanced accuracy is within CHANCE_TOLERANCE of chance,
    above or below: a model driven below chance still reads what the perturbation left.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    chance = 1.0 / len(np.unique(labels))
    predictions = probabilities.argmax(axis=1)
    balanced = balanced_accuracy(labels, predictions)
    return WholeImageCheck(
        accuracy=float((predictions == np.asarray(labels)).mean()),
        balanced_accuracy=balanced,
        mean_p_target=float(probabilities[np.arange(len(targets)), np.asarray(targets)].mean()),
        chance=chance,
        removes_signal=bool(abs(balanced - chance) <= CHANCE_TOLERANCE),
    )


def perturbation_check(images: list[ExplainedImage], perturbation_space: str, deletion_baseline: str,
                       shap_masker: str) -> PerturbationCheck:
    """What the model says when the whole image is perturbed, per perturbation, and which ones the numbers use."""
    labelled = all(image.true_id is not None for image in images)
    labels = np.array([image.true_id if labelled else image.target for image in images])
    targets = np.array([image.target for image in images])
    keys = list(images[0].whole_image) if images else []
    perturbations = {key: whole_image_check(np.array([image.whole_image[key] for image in images]), labels, targets)
                     for key in keys}
    untouched = whole_image_check(np.array([image.probabilities for image in images]), labels, targets)
    untouched.removes_signal = None  # nothing was perturbed
    deletion_key = f"{perturbation_space}:{deletion_baseline}"
    shap_key = "raw:opening" if perturbation_space == "raw" else f"model:shap_masker:{shap_masker}"
    # sham images have no truth (their folder is a branch): the check asks whether the perturbation moves the
    # model off its own prediction, which is what "removes the signal" means for the maps' numbers anyway
    sham = any(image.branch is not None for image in images)
    return PerturbationCheck(
        labels="true" if labelled else ("predicted (sham: the branch is not a truth)" if sham
                                        else "predicted (no labels)"),
        tolerance=CHANCE_TOLERANCE,
        untouched=untouched,
        perturbations=perturbations,
        deletion_insertion=deletion_key,
        deletion_insertion_removes_signal=perturbations[deletion_key].removes_signal
        if deletion_key in perturbations else None,
        shap_masker=shap_key,
        shap_masker_removes_signal=perturbations[shap_key].removes_signal if shap_key in perturbations else None,
    )


def summarize(images: list[ExplainedImage], methods: list[str], randomization: str,
              checks: PerturbationCheck | None = None, seed: int = 0) -> dict[str, MethodSummary]:
    """Per method: each score next to its baseline, paired per-image gains with bootstrap 95% intervals,
    and a verdict that reads "better" only when the interval lies above 0 and the perturbation it
    rests on removes the signal (`checks`, from `perturbation_check`)."""
    summary: dict[str, MethodSummary] = {}
    random = RandomOrderScores.of([image.random_deletion for image in images],
                                  [image.random_insertion for image in images])
    for name in methods:
        outputs = [image.methods[name] for image in images]
        stages = list(outputs[0].randomization) if outputs else []
        spearman_by_stage = {stage: mean_or_none([o.randomization[stage] for o in outputs]) for stage in stages}
        result = MethodSummary(
            title=method_title(name),
            **curve_scores([o.deletion for o in outputs], [o.insertion for o in outputs], random, seed),
            randomization_spearman=spearman_by_stage[stages[-1]] if stages else None,
            randomization_spearman_by_stage=spearman_by_stage if randomization in ("classifier", "cascade") else None,
            **ground_truth_summary([o.ground_truth for o in outputs if o.ground_truth is not None], seed),
        )
        result.beats_baseline, result.verdict_notes = verdicts(name, result, checks)
        summary[name] = result
    return summary


def verdicts(name: str, result: MethodSummary, checks: PerturbationCheck | None) -> tuple[Verdicts, list[str]]:
    """Plain yes/no per check: yes only when the paired interval is above 0 and the perturbation the
    number rests on removes the signal; None (with a note) when it cannot be decided. A method whose map is
    itself made by masking (SHAP) also rests on its masker for the foci scores."""
    notes = []
    deletion_ok = checks.deletion_insertion_removes_signal if checks is not None else True
    if not deletion_ok:
        notes.append(f"deletion/insertion baseline {checks.deletion_insertion} does not remove the signal")
    map_ok = True
    if name in METHODS and METHODS[name].uses_masker and checks is not None and not checks.shap_masker_removes_signal:
        map_ok = False
        notes.append(f"SHAP masker {checks.shap_masker} does not remove the signal")
    spearman = result.randomization_spearman

    def interval_verdict(gain, ok: bool) -> bool | None:
        return stats.excludes_zero_above(gain) if ok else None

    return Verdicts(
        deletion=interval_verdict(result.deletion_log_odds_gain, deletion_ok and map_ok),
        insertion=interval_verdict(result.insertion_log_odds_gain, deletion_ok and map_ok),
        randomization=None if spearman is None else bool(spearman < RANDOMIZATION_SPEARMAN_LIMIT),
        foci_mass=interval_verdict(result.foci_mass_gain, map_ok),
        pointing_game=interval_verdict(result.pointing_game_gain, map_ok),
    ), notes
