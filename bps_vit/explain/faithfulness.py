"""Is a heatmap faithful to the model, and does it point at the biology? Measured, not eyeballed.

- Deletion / insertion (Petsiuk, Das & Saenko 2018, RISE): remove (or insert) pixels in the
  order the heatmap ranks them and follow the target-class probability. A faithful map makes
  the probability fall fast on deletion (low AUC) and rise fast on insertion (high AUC), and
  must beat the same curves for a random pixel order.
- Model randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): re-initialise
  the weights and explain again. A map that still looks the same (high Spearman rank
  correlation) describes the image, not the model.
- Ground truth (synthetic data only): the share of heatmap mass inside the 53BP1 foci and the
  pointing game (does the hottest pixel land on a focus?), each against maps that know
  nothing: a centred Gaussian (the nucleus is centred in every crop) and a uniform map.
- Verdicts (`summarize`): each number next to its baseline, a paired bootstrap interval, and a
  yes/no that is only given when the perturbation it rests on removes the signal
  (`perturbation_check`). The thresholds are named below, with why they are what they are.

Every step is batched: the whole deletion/insertion path of an image is one stack of images.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from . import stats
from .base import model_device
from .perturbation import balanced_accuracy, probability_from_log_odds, step_masks, target_log_odds

FOCI_LABEL = 2
#: what a removed pixel becomes (`--faithfulness_baseline`); the Literal types give the flags their argparse choices
Baseline = Literal["opening", "blur", "mean"]
BASELINES: tuple[str, ...] = get_args(Baseline)
Randomization = Literal["all", "classifier", "cascade", "none"]
RANDOMIZATIONS: tuple[str, ...] = get_args(Randomization)

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


# --------------------------------------------------------------------------- deletion / insertion


def gaussian_blur(pixel_values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,C,H,W] (reflect padding), per channel."""
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, pixel_values.shape[-1] - 1, pixel_values.shape[-2] - 1)
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32, device=pixel_values.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = pixel_values.shape[1]
    x = pixel_values.float()
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
        groups=channels,
    )
    x = F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
        groups=channels,
    )
    return x


def baseline_images(pixel_values: torch.Tensor, kind: str = "blur", fill: torch.Tensor | None = None) -> torch.Tensor:
    """What a removed pixel becomes in model space: a strongly blurred copy (RISE's insertion start),
    the image mean, or `fill` (the model input of the raw image's foci-free `opening_fill`).

    Blur and mean work on normalised pixel values: they commute with the per-channel affine
    normalisation, so no round trip to raw pixels is needed.
    """
    if kind == "blur":
        return gaussian_blur(pixel_values, sigma=max(pixel_values.shape[-2:]) / 8.0)
    if kind == "mean":
        return pixel_values.float().mean(dim=(2, 3), keepdim=True).expand_as(pixel_values).clone()
    if kind == "opening":
        if fill is None:
            raise ValueError("the opening baseline needs the fill images (from the raw images)")
        return fill.float().to(pixel_values.device)
    raise ValueError(f"--faithfulness_baseline must be one of {BASELINES}; got {kind!r}")


def saliency_order(heatmap: np.ndarray) -> np.ndarray:
    """Pixel indices (flattened), most salient first; ties keep raster order (stable, deterministic)."""
    return np.argsort(-np.asarray(heatmap, dtype=np.float64).ravel(), kind="stable")


def random_order(num_pixels: int, seed: int, image_index: int) -> np.ndarray:
    """A random pixel order that depends on the image's global index, not on the process that runs it."""
    return np.random.default_rng([int(seed), int(image_index)]).permutation(num_pixels)


@torch.no_grad()
def deletion_insertion_curves(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    baseline: torch.Tensor,
    order: np.ndarray,
    target: int,
    steps: int = 32,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Target-class log-odds after removing / inserting the first k/steps of `order`, k = 0..steps, in model space.

    `pixel_values` and `baseline` are one image [3,H,W]. Returns (deletion, insertion), each
    `steps + 1` long; all 2 x (steps + 1) images go through the model in batches. The raw-space
    twin is `perturbation.raw_deletion_insertion`; both use the same step masks and log-odds.
    """
    masks = torch.from_numpy(step_masks(order, tuple(pixel_values.shape[-2:]), steps))[:, None]
    masks = masks.to(pixel_values.device)
    image, base = pixel_values.float()[None], baseline.float().to(pixel_values.device)[None]
    stack = torch.cat([torch.where(masks, base, image), torch.where(masks, image, base)])
    curve = target_log_odds(model, stack, target, batch_size)
    return curve[: steps + 1], curve[steps + 1:]


def curve_auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) < 2:
        return float("nan")
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


# --------------------------------------------------------------------------- model randomisation


def _reinit_module(module: torch.nn.Module, std: float, generator: torch.Generator) -> None:
    for child in module.modules():
        if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
            with torch.no_grad():
                child.weight.copy_(torch.randn(child.weight.shape, generator=generator) * std)
                if child.bias is not None:
                    child.bias.zero_()
        elif isinstance(child, torch.nn.LayerNorm):
            child.reset_parameters()
        for name in ("cls_token", "position_embeddings", "distillation_token"):
            param = getattr(child, name, None)
            if isinstance(param, torch.nn.Parameter):
                with torch.no_grad():
                    param.copy_(torch.randn(param.shape, generator=generator).clamp_(-2, 2) * std)


def _blocks_from_top(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Stages for cascading randomisation: the head (classifier + final norm + pooler), then the
    encoder blocks from the last to the first, then the embeddings."""
    backbone = getattr(model, getattr(model, "base_model_prefix", "vit"), None) or model
    layers = getattr(backbone, "layers", None)
    if layers is None:
        layers = getattr(getattr(backbone, "encoder", None), "layer", [])
    head = [getattr(model, "classifier", None), getattr(backbone, "layernorm", None), getattr(backbone, "pooler", None)]
    stages: list[torch.nn.Module] = [torch.nn.ModuleList([m for m in head if isinstance(m, torch.nn.Module)])]
    stages += list(reversed(list(layers)))
    if isinstance(getattr(backbone, "embeddings", None), torch.nn.Module):
        stages.append(backbone.embeddings)
    return stages


def randomized_copy(model: torch.nn.Module, seed: int = 0, num_stages: int | None = None) -> torch.nn.Module:
    """A copy of `model` with re-initialised weights, cascading from the top.

    num_stages: None = every weight; 1 = the classifier head (with the final norm); k = the head
    plus the top k-1 encoder blocks. Seeded, so every process builds the same random model.
    """
    clone = copy.deepcopy(model).eval()
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(int(seed))
    stages = _blocks_from_top(clone)
    if num_stages is None:
        _reinit_module(clone, std, generator)
    else:
        for stage in stages[:num_stages]:
            _reinit_module(stage, std, generator)
    return clone.to(model_device(model))


def num_cascade_stages(model: torch.nn.Module) -> int:
    return len(_blocks_from_top(model))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (NaN when either is constant)."""
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- ground truth (synthetic masks)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label mask to the model's input size (labels stay labels)."""
    import cv2

    mask = np.asarray(mask)
    if mask.shape[:2] == (height, width):
        return mask.copy()
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    mask = np.asarray(mask, dtype=np.uint8)
    if radius <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel).astype(bool)


def pointing_tolerance(height: int, width: int) -> int:
    """Slack for the pointing game: 3% of the image side (2 px at 64 px, 7 px at 224 px)."""
    return max(1, int(round(0.03 * max(height, width))))


def centre_gaussian(height: int, width: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """The 'knows nothing but the crop is centred' map."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    sy, sx = sigma_fraction * height, sigma_fraction * width
    return np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))


def foci_mass(heatmap: np.ndarray, foci: np.ndarray) -> float:
    """Share of the (non-negative) heatmap's total inside the foci; NaN for an all-zero map."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = heatmap.sum()
    return float(heatmap[np.asarray(foci, dtype=bool)].sum() / total) if total > 0 else float("nan")


def pointing_hit(heatmap: np.ndarray, foci_dilated: np.ndarray) -> float:
    """1.0 if the map's maximum (first in raster order on ties) lies on a (dilated) focus, else 0.0."""
    return float(np.asarray(foci_dilated, dtype=bool).ravel()[int(np.argmax(np.asarray(heatmap).ravel()))])


def ground_truth_scores(heatmap: np.ndarray, label_mask: np.ndarray) -> dict[str, float] | None:
    """Foci mass and pointing game for one map, with the centre-Gaussian and uniform baselines.

    `label_mask` is already at the heatmap's size. None when the image has no foci (nothing to hit).
    """
    foci = np.asarray(label_mask) == FOCI_LABEL
    if not foci.any():
        return None
    height, width = foci.shape
    dilated = dilate(foci, pointing_tolerance(height, width))
    centre = centre_gaussian(height, width)
    return {
        "foci_mass": foci_mass(heatmap, foci),
        "foci_mass_baseline": foci_mass(centre, foci),
        "foci_mass_uniform": float(foci.mean()),
        "pointing_game": pointing_hit(heatmap, dilated),
        "pointing_game_baseline": pointing_hit(centre, dilated),
        "pointing_game_uniform": float(dilated.mean()),
    }


def mean_or_none(values: Sequence[float]) -> float | None:
    """Mean of the finite values; None (JSON null) when there are none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


# --------------------------------------------------------------------------- verdicts


def whole_image_check(probabilities: np.ndarray, labels: np.ndarray, targets: np.ndarray) -> dict:
    """What the model says about fully perturbed images: accuracy, balanced accuracy, mean p(target).

    `labels`: the true classes (or the model's own predictions when there are none). The
    perturbation removes the signal when the balanced accuracy is within CHANCE_TOLERANCE of chance.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = probabilities.shape[1]
    chance = 1.0 / len(np.unique(labels))
    predictions = probabilities.argmax(axis=1)
    balanced = balanced_accuracy(labels, predictions, num_classes)
    return {
        "accuracy": float((predictions == np.asarray(labels)).mean()),
        "balanced_accuracy": balanced,
        "mean_p_target": float(probabilities[np.arange(len(targets)), np.asarray(targets)].mean()),
        "chance": chance,
        "removes_signal": bool(abs(balanced - chance) <= CHANCE_TOLERANCE),
    }


def perturbation_check(records: list[dict], perturbation_space: str, deletion_baseline: str,
                       shap_masker: str) -> dict:
    """What the model says when the whole image is perturbed, per perturbation, and which ones the numbers use."""
    labelled = all(r["true_id"] is not None for r in records)
    labels = np.array([r["true_id"] if labelled else r["target"] for r in records])
    targets = np.array([r["target"] for r in records])
    keys = list(records[0]["whole_image"]) if records else []
    perturbations = {key: whole_image_check(np.array([r["whole_image"][key] for r in records]), labels, targets)
                     for key in keys}
    untouched = whole_image_check(np.array([r["probabilities"] for r in records]), labels, targets)
    untouched.pop("removes_signal")
    deletion_key = f"{perturbation_space}:{deletion_baseline}"
    shap_key = "raw:opening" if perturbation_space == "raw" else f"model:shap_masker:{shap_masker}"
    # sham images have no truth (their folder is a branch): the check asks whether the perturbation moves the
    # model off its own prediction, which is what "removes the signal" means for the maps' numbers anyway
    sham = any(r.get("branch") is not None for r in records)
    return {
        "labels": "true" if labelled else ("predicted (sham: the branch is not a truth)" if sham
                                           else "predicted (no labels)"),
        "tolerance": CHANCE_TOLERANCE,
        "untouched": untouched,
        "perturbations": perturbations,
        "deletion_insertion": deletion_key,
        "deletion_insertion_removes_signal": perturbations.get(deletion_key, {}).get("removes_signal"),
        "shap_masker": shap_key,
        "shap_masker_removes_signal": perturbations.get(shap_key, {}).get("removes_signal"),
    }


def probability_auc(log_odds_curve) -> float:
    """AUC of a deletion/insertion curve on the probability scale (the number RISE reports)."""
    return stats.curve_auc(probability_from_log_odds(log_odds_curve))


@dataclass(frozen=True)
class RandomOrderScores:
    """The random pixel order's AUCs, per image (log-odds) and as means (probability): every method's baseline."""

    deletion: list[float]
    insertion: list[float]
    deletion_auc: float | None
    insertion_auc: float | None

    @classmethod
    def of(cls, records: list[dict]) -> "RandomOrderScores":
        return cls(
            deletion=[stats.curve_auc(r["random_deletion"]) for r in records],
            insertion=[stats.curve_auc(r["random_insertion"]) for r in records],
            deletion_auc=mean_or_none([probability_auc(r["random_deletion"]) for r in records]),
            insertion_auc=mean_or_none([probability_auc(r["random_insertion"]) for r in records]),
        )


def _curve_scores(per: list[dict], random: RandomOrderScores, seed: int) -> dict:
    """Deletion/insertion AUCs next to the random order's, and the paired log-odds gains over it."""
    deletion = [stats.curve_auc(m["deletion"]) for m in per]
    insertion = [stats.curve_auc(m["insertion"]) for m in per]
    return {
        "deletion_auc": mean_or_none([probability_auc(m["deletion"]) for m in per]),
        "insertion_auc": mean_or_none([probability_auc(m["insertion"]) for m in per]),
        "random_deletion_auc": random.deletion_auc,
        "random_insertion_auc": random.insertion_auc,
        # paired per image, in log-odds (a saturated probability does not move): > 0 means better than random
        "deletion_log_odds_gain": stats.bootstrap_mean_ci(np.subtract(random.deletion, deletion), seed),
        "insertion_log_odds_gain": stats.bootstrap_mean_ci(np.subtract(insertion, random.insertion), seed),
    }


def _ground_truth_summary(truths: list[dict], seed: int) -> dict:
    """Foci mass and pointing game next to the centre and uniform maps, with the paired gain over the centre."""
    out: dict = {}
    for score in ("foci_mass", "pointing_game"):
        out[score] = mean_or_none([t[score] for t in truths])
        for baseline in ("baseline", "uniform"):
            out[f"{score}_{baseline}"] = mean_or_none([t[f"{score}_{baseline}"] for t in truths])
        out[f"{score}_gain"] = stats.bootstrap_mean_ci([t[score] - t[f"{score}_baseline"] for t in truths], seed)
    out["num_images_with_foci"] = len(truths)
    out["foci_mass_ratio_to_centre"] = (
        out["foci_mass"] / out["foci_mass_baseline"] if out["foci_mass"] is not None and out["foci_mass_baseline"]
        else None
    )
    return out


def summarize(records: list[dict], methods: list[str], randomization: str,
              checks: dict | None = None, seed: int = 0) -> dict:
    """Per method: each score next to its baseline, paired per-image gains with bootstrap 95% intervals,
    and a verdict that reads "better" only when the interval lies above 0 and the perturbation it
    rests on removes the signal (`checks`, from `perturbation_check`)."""
    summary: dict = {}
    random = RandomOrderScores.of(records)
    for name in methods:
        per = [r["methods"][name] for r in records]
        stages = list(per[0]["randomization"]) if per else []
        spearman_by_stage = {s: mean_or_none([m["randomization"][s] for m in per]) for s in stages}
        result = {
            **_curve_scores(per, random, seed),
            "randomization_spearman": spearman_by_stage[stages[-1]] if stages else None,
            **_ground_truth_summary([m["ground_truth"] for m in per if m["ground_truth"] is not None], seed),
        }
        if randomization in ("classifier", "cascade"):
            result["randomization_spearman_by_stage"] = spearman_by_stage
        result["beats_baseline"], result["verdict_notes"] = verdicts(name, result, checks or {})
        summary[name] = result
    return summary


def verdicts(name: str, result: dict, checks: dict) -> tuple[dict[str, bool | None], list[str]]:
    """Plain yes/no per check: yes only when the paired interval is above 0 and the perturbation the
    number rests on removes the signal; None (with a note) when it cannot be decided."""
    notes = []
    deletion_ok = checks.get("deletion_insertion_removes_signal", True)
    if not deletion_ok:
        notes.append(f"deletion/insertion baseline {checks.get('deletion_insertion')} does not remove the signal")
    map_ok = True
    if name == "shap" and not checks.get("shap_masker_removes_signal", True):
        map_ok = False
        notes.append(f"SHAP masker {checks.get('shap_masker')} does not remove the signal")
    spearman = result["randomization_spearman"]

    def interval_verdict(gain_key: str, ok: bool) -> bool | None:
        return stats.excludes_zero_above(result[gain_key]) if ok else None

    return {
        "deletion": interval_verdict("deletion_log_odds_gain", deletion_ok and map_ok),
        "insertion": interval_verdict("insertion_log_odds_gain", deletion_ok and map_ok),
        "randomization": None if spearman is None else bool(spearman < RANDOMIZATION_SPEARMAN_LIMIT),
        "foci_mass": interval_verdict("foci_mass_gain", map_ok),
        "pointing_game": interval_verdict("pointing_game_gain", map_ok),
    }, notes
