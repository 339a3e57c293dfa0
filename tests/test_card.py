"""The model card reads right: title, no unshipped checkpoint names, alt texts, install line, pipeline warning,
synthetic first sentence, sham prediction shares, and the explain step's own verdicts under the faithfulness table
(never a "better" that explain withheld)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bps_vit.explain.metrics import verdicts
from bps_vit.explain.records import ExplainedImage, MethodOutput
from bps_vit.publish.card import build_model_card, figure_alt
from bps_vit.results import ExplanationResults, RunResults

#: The issue's demo run: 1,056 of 1,059 unirradiated nuclei called X-ray.
SHAM_MATRIX = [[1, 530], [2, 526]]


def results(source: str = "synthetic", **extra) -> dict:
    return {
        "splits": {"test": {"n": 16, "accuracy": 0.8125, "balanced_accuracy": 0.7983,
                            "confusion_matrix": [[7, 1], [2, 6]]}},
        "data": {"data_dir": "data/bps", "source": source, "split_by": "plate", "counts": {}},
        "model": {"config_name": "configs/model/vit_tiny.json"},
        "training": {"best_model_checkpoint": "checkpoint-43", "global_step": 86, "learning_rate": 5e-05},
        **extra,
    }


def run_folder(tmp_path: Path, name: str = "demo", explanation: dict | None = None, **kwargs) -> Path:
    """A run folder as train.py lays it out (configs, results, figures); weights are not needed to render the card."""
    from transformers import ViTConfig

    run = tmp_path / name
    run.mkdir()
    ViTConfig(image_size=32, patch_size=8, num_labels=2, id2label={0: "Fe", 1: "X-ray"},
              label2id={"Fe": 0, "X-ray": 1}).to_json_file(run / "config.json")
    (run / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}}))
    RunResults.from_dict(results(**kwargs)).to_json(run / RunResults.FILENAME)
    (run / "checkpoint-43").mkdir()
    if explanation is not None:
        ExplanationResults.from_dict(explanation).to_json(run / "explain" / ExplanationResults.FILENAME)
    return run


def first_sentence(card) -> str:
    body = card.text.split("\n# ", 1)[1].split("\n", 1)[1].strip()
    return re.split(r"(?<=\.)\s", body, maxsplit=1)[0]


def test_title_comes_from_model_name_or_repo_id_never_the_folder(tmp_path):
    run = run_folder(tmp_path)
    assert "\n# demo\n" not in build_model_card(run).text
    assert "\n# bps-vit-tiny\n" in build_model_card(run, repo_id="alice/bps-vit-tiny").text
    card = build_model_card(run, repo_id="alice/bps-vit-tiny", model_name="BPS ViT (synthetic demo)")
    assert "\n# BPS ViT (synthetic demo)\n" in card.text
    assert card.data.model_name == "BPS ViT (synthetic demo)"


def test_no_checkpoint_name_that_is_not_uploaded(tmp_path):
    text = build_model_card(run_folder(tmp_path)).text
    assert "checkpoint-43" not in text
    assert "best model from step: 43" in text


def test_synthetic_run_says_so_first_and_intended_use_is_not_biology(tmp_path):
    card = build_model_card(run_folder(tmp_path))
    first = first_sentence(card)
    assert "SYNTHETIC" in first and "not a biological classifier" in first, first
    intended = card.text.split("## Intended use", 1)[1].split("##", 1)[0]
    assert "Research on space-radiation biology" not in intended
    assert "never seen a real nucleus" in intended


def test_real_run_keeps_the_biology_wording(tmp_path):
    card = build_model_card(run_folder(tmp_path, source="s3"))
    assert "ynthetic" not in first_sentence(card)
    assert "Research on space-radiation biology" in card.text.split("## Intended use", 1)[1].split("##", 1)[0]


def test_sham_section_says_what_the_model_calls_undamaged_nuclei(tmp_path):
    sham = {"n": 1059, "accuracy": 527 / 1059, "balanced_accuracy": 0.499, "confusion_matrix": SHAM_MATRIX}
    text = build_model_card(run_folder(tmp_path, sham_control=sham)).text
    section = text.split("### Sham (0 Gy) negative control", 1)[1].split("##", 1)[0]
    assert "calls 99.7% of undamaged nuclei X-ray" in section
    assert "| predicted, all sham images | Fe 0.3%, X-ray 99.7% |" in section
    assert "| predicted, Fe branch | Fe 0.2%, X-ray 99.8% |" in section


def test_sham_without_a_verdict_still_says_what_the_model_predicts(tmp_path):
    sham = {"n": 10, "accuracy": 0.7, "balanced_accuracy": None, "confusion_matrix": [[0, 0], [3, 7]]}
    text = build_model_card(run_folder(tmp_path, sham_control=sham)).text
    section = text.split("### Sham (0 Gy) negative control", 1)[1].split("##", 1)[0]
    assert ("not available (the sham set needs images of both branches) Predictions: the model calls 70.0% of "
            "undamaged nuclei X-ray (X-ray branch 70.0%).") in section


def test_install_line_before_usage_and_raw_tiff_warning_beside_pipeline(tmp_path):
    text = build_model_card(run_folder(tmp_path), repo_id="alice/bps").text
    use = text.split("## How to use", 1)[1]
    install = use.index("pip install")
    assert install < use.index("from bps_vit")
    assert "not on PyPI" in use[:install]
    pipeline = use.index('pipeline("image-classification"')
    warning = use.rindex("Warning", 0, pipeline)
    assert "16-bit" in use[warning:pipeline] and pipeline - warning < 600
    # the first screen warns too, since pipeline_tag enables the Hub widget's 8-bit path
    assert "16-bit TIFFs need `bps_vit.predict`" in text.split("## Intended use", 1)[0]


def _interval(low: float, high: float) -> dict:
    return {"mean": (low + high) / 2, "ci95": [low, high], "n": 64}


def test_faithfulness_reading_puts_the_explain_verdicts_into_words(tmp_path):
    explanation = {"split": "test", "num_images": 64, "methods": {
        "grad_rollout": {"title": "Gradient rollout", "deletion_auc": 0.31, "random_deletion_auc": 0.43,
                         "deletion_log_odds_gain": _interval(1.67, 2.94), "pointing_game_gain": _interval(-0.03, 0.25),
                         "randomization_spearman": 0.347,
                         "beats_baseline": {"deletion": True, "pointing_game": False, "randomization": True}},
        "shap": {"deletion_auc": 0.45, "random_deletion_auc": 0.43, "randomization_spearman": 0.9,
                 "beats_baseline": {"randomization": False}},
    }}
    text = build_model_card(run_folder(tmp_path, explanation=explanation)).text
    reading = text.split("How to read it", 1)[1].split("##", 1)[0]
    assert "Gradient rollout: deletion vs random order, log-odds +2.305 [+1.670, +2.940]: better" in reading
    assert "pointing game vs centre map +0.110 [-0.030, +0.250]: not better" in reading
    assert "the model-randomisation check (Spearman 0.347): passes it" in reading
    assert "shap: the model-randomisation check (Spearman 0.900): fails it" in reading  # a file without a title
    table = text.split("| Method |", 1)[1].split("\n\n", 1)[0]
    assert "| Gradient rollout | 0.3100 | 0.4300 |" in table


def test_the_card_never_says_better_where_explain_withheld_the_verdict(tmp_path):
    """An interval wholly above 0, but the perturbation it rests on keeps the signal: explain withholds the verdict
    (None, with a note), and so must the card, in the very file explain writes."""
    images = [_explained_image(i, method_curve=np.linspace(2.0, -2.0, 5)) for i in range(8)]
    checks = verdicts.perturbation_check(images, "model", "blur", "blur")
    assert checks.deletion_insertion_removes_signal is False  # the whole-image blur leaves every image right
    results = ExplanationResults(split="test", num_images=8, perturbation_check=checks,
                                 methods=verdicts.summarize(images, ["grad_rollout"], "all", checks, seed=0))
    gain = results.methods["grad_rollout"].deletion_log_odds_gain
    assert gain.ci95[0] > 0  # the numbers alone would read "better"
    run = run_folder(tmp_path, explanation=results.to_dict())
    text = build_model_card(run).text
    reading = text.split("How to read it", 1)[1].split("##", 1)[0]
    line = next(line for line in reading.splitlines() if line.startswith("- Gradient rollout"))
    assert "deletion vs random order, log-odds" in line and ": no verdict" in line
    assert "better" not in line
    assert "does not remove the signal" in line  # the reason, from explain's note
    assert "| model:blur | 1.0000 | **no** |" in text


def _explained_image(index: int, method_curve: np.ndarray) -> ExplainedImage:
    """An image whose method curve falls from +2 to -2 log-odds while the random order's stays at +2, and whose
    whole-image blur leaves the model's right call untouched (p = 0.9 for the true class)."""
    label = index % 2
    right = [0.9, 0.1] if label == 0 else [0.1, 0.9]
    flat = np.full(len(method_curve), 2.0)
    output = MethodOutput(heatmap=np.zeros((2, 2)), deletion=method_curve, insertion=method_curve[::-1],
                          randomization={}, ground_truth=None)
    return ExplainedImage(index=index, path=f"{index}.tif", filename=f"{index}.tif", label=["Fe", "X-ray"][label],
                          branch=None, warning="", true_id=label, target=label, probabilities=right,
                          random_deletion=flat, random_insertion=flat, whole_image={"model:blur": right},
                          causal=None, has_mask=False, has_foci=False, mask_path=None,
                          methods={"grad_rollout": output})


@pytest.mark.parametrize("path, alt", [
    ("figures/confusion_matrix.png", "Confusion matrix of the test split"),
    ("explain/figures/P242_73665006707-A1_003_010_proj.png",
     "Explanation maps of one image (P242_73665006707-A1_003_010_proj)"),
    ("explain/figures/shap/shap_grid.png", "SHAP attribution maps"),
])
def test_alt_texts_are_readable(path, alt):
    assert figure_alt(Path(path)).startswith(alt)


def test_card_reads_the_perturbation_check_and_the_causal_test():
    from bps_vit.publish.card import causal_rows, perturbation_rows

    condition = {"accuracy": 1.0, "balanced_accuracy": 1.0, "mean_p_true": 0.99}
    explanation = ExplanationResults.from_dict({
        "split": "test", "num_images": 64,
        "perturbation_check": {"labels": "true", "tolerance": 0.1, "untouched": None, "perturbations": {
            "model:blur": {"accuracy": 0.97, "balanced_accuracy": 0.97, "mean_p_target": 0.9, "chance": 0.5,
                           "removes_signal": False}}},
        "causal_foci_test": {"n": 64, "space": "raw", "fill": "nucleus median", "foci_dilation_px": 2, "chance": 0.5,
                             "tolerance": 0.1, "untouched": condition,
                             "foci_ablated": {"accuracy": 0.5, "balanced_accuracy": 0.5, "mean_p_true": 0.5},
                             "random_nucleus_ablated": condition, "foci_ablated_near_chance": True,
                             "random_ablation_near_untouched": True},
    })
    assert perturbation_rows(explanation) == [{"name": "model:blur", "balanced_accuracy": "0.9700",
                                               "removes_signal": "**no**"}]
    rows = causal_rows(explanation)
    assert [r["name"] for r in rows] == ["untouched", "true foci ablated (raw image)",
                                         "as many random nucleus pixels ablated"]
    assert rows[1]["accuracy"] == "0.5000"


def _at_chance_image(index: int) -> ExplainedImage:
    """A model that calls every image Fe with p 0.6 (at chance on balanced labels), and whose map orders pixels far
    better than random: the gains alone would read "better"."""
    image = _explained_image(index, method_curve=np.linspace(2.0, -2.0, 5))
    image.probabilities = [0.6, 0.4]
    image.whole_image = {"raw:opening": [0.6, 0.4]}
    return image


def test_no_verdict_on_too_few_images_or_for_a_model_at_chance(tmp_path):
    """Issue 23 item 8: 'better' from 2 images, 'removes the signal' for a model already at chance, 'does NOT remove
    the signal' from 6 images. Each now gets no verdict, with its reason, in explain's file and on the card."""
    two = [_explained_image(i, method_curve=np.linspace(2.0, -2.0, 5)) for i in range(2)]
    for image in two:
        image.whole_image = {"raw:opening": [0.5, 0.5]}
    checks = verdicts.perturbation_check(two, "raw", "opening", "opening")
    assert checks.no_verdict.startswith("2 images: too few for a verdict (at least 8")
    assert checks.perturbations["raw:opening"].removes_signal is None
    summary = verdicts.summarize(two, ["grad_rollout"], "all", checks, seed=0)["grad_rollout"]
    assert summary.deletion_log_odds_gain.ci95[0] > 0  # the interval alone would say "better"
    assert summary.beats_baseline.deletion is None and summary.verdict_notes == [checks.no_verdict]

    at_chance = [_at_chance_image(i) for i in range(8)]
    checks = verdicts.perturbation_check(at_chance, "raw", "opening", "opening")
    assert checks.untouched.balanced_accuracy == 0.5  # computed by hand: every image called Fe, half are Fe
    assert checks.no_verdict == "the model is at chance on these images (balanced accuracy 0.500, chance 0.500)"
    assert checks.perturbations["raw:opening"].removes_signal is None  # was True: "removes the signal"
    results = ExplanationResults(split="test", num_images=8, perturbation_check=checks,
                                 methods=verdicts.summarize(at_chance, ["grad_rollout"], "all", checks, seed=0))
    assert results.methods["grad_rollout"].beats_baseline.deletion is None
    text = build_model_card(run_folder(tmp_path, explanation=results.to_dict())).text
    assert "| raw:opening | 0.5000 | no verdict: the model is at chance on these images" in text
    line = next(line for line in text.split("How to read it", 1)[1].splitlines() if line.startswith("- Gradient"))
    assert "better" not in line and "the model is at chance on these images" in line


def test_training_summary_and_card_say_no_better_than_the_majority_baseline(tmp_path):
    """Issue 23 item 8: the binomial tail is computed here by hand (math.comb), independently of scipy."""
    from math import comb

    from bps_vit.metrics import judge_baseline
    from bps_vit.results import Baseline, SplitMetrics

    def tail(k, n, p):
        return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    at_baseline = judge_baseline(SplitMetrics(n=10, accuracy=0.5), Baseline("Fe", 0.5))
    assert at_baseline.beaten is False and tail(5, 10, 0.5) == pytest.approx(0.623, abs=1e-3)
    assert at_baseline.interpretation == ("no better than the majority baseline: test accuracy 0.500 vs 0.500 from "
                                          "always predicting Fe (n=10, one-sided binomial p=0.62)")
    assert judge_baseline(SplitMetrics(n=10, accuracy=0.9), Baseline("Fe", 0.5)).beaten is (tail(9, 10, 0.5) < 0.05)
    assert judge_baseline(SplitMetrics(n=10, accuracy=0.7), Baseline("Fe", 0.5)).beaten is (tail(7, 10, 0.5) < 0.05)
    run = run_folder(tmp_path, baseline={"majority_class": "Fe", "accuracy": 0.5,
                                         "beaten": False, "interpretation": at_baseline.interpretation})
    assert "The model is no better than the majority baseline: test accuracy 0.500" in build_model_card(run).text
