"""The model card reads right: title, no unshipped checkpoint names, alt texts, install line, pipeline warning,
synthetic first sentence, sham prediction shares and an interpretation under the faithfulness table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bps_vit.publish.card import build_model_card, figure_alt
from bps_vit.results import ExplanationResults, RunResults

REPO = Path(__file__).resolve().parents[1]

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


def test_faithfulness_table_has_an_interpretation(tmp_path):
    explanation = {"split": "test", "num_images": 8, "methods": {
        "rollout": {"deletion_auc": 0.31, "random_deletion_auc": 0.43, "insertion_auc": 0.50,
                    "random_insertion_auc": 0.54, "randomization_spearman": 0.9},
        "shap": {"deletion_auc": 0.45, "random_deletion_auc": 0.43, "foci_mass": 0.4, "foci_mass_baseline": 0.1,
                 "pointing_game": 0.2, "pointing_game_baseline": 0.3},
    }}
    text = build_model_card(run_folder(tmp_path, explanation=explanation)).text
    reading = text.split("How to read it", 1)[1].split("##", 1)[0]
    assert "Attention rollout beats random order on deletion (0.310 vs 0.430)" in reading
    assert "does not beat random order on insertion (0.500 vs 0.540)" in reading
    assert "barely change when the weights are randomized" in reading
    assert "SHAP (partition) does not beat random order on deletion" in reading
    assert "beats the centre-weighted map on attribution mass on foci (0.400 vs 0.100)" in reading
    assert "does not beat the centre-weighted map on the pointing game (0.200 vs 0.300)" in reading


@pytest.mark.parametrize("path, alt", [
    ("figures/confusion_matrix.png", "Confusion matrix of the test split"),
    ("explain/figures/P242_73665006707-A1_003_010_proj.png",
     "Explanation maps of one image (P242_73665006707-A1_003_010_proj)"),
    ("explain/figures/shap/shap_grid.png", "SHAP attribution maps"),
])
def test_alt_texts_are_readable(path, alt):
    assert figure_alt(Path(path)).startswith(alt)


def test_card_reads_intervals_perturbation_check_and_causal_test():
    from bps_vit.publish.card import causal_rows, faithfulness_reading, perturbation_rows
    from bps_vit.results import ExplanationResults

    explanation = ExplanationResults.from_dict({
        "split": "test", "num_images": 64,
        "methods": {"grad_rollout": {"deletion_log_odds_gain": {"mean": 2.29, "ci95": [1.67, 2.94], "n": 64},
                                     "pointing_game_gain": {"mean": 0.1, "ci95": [-0.03, 0.25], "n": 64}}},
        "perturbation_check": {"perturbations": {"model:blur": {"balanced_accuracy": 0.97, "removes_signal": False}}},
        "causal_foci_test": {"untouched": {"accuracy": 1.0, "balanced_accuracy": 1.0, "mean_p_true": 0.99},
                             "foci_ablated": {"accuracy": 0.5, "balanced_accuracy": 0.5, "mean_p_true": 0.5}},
    })
    reading = faithfulness_reading(explanation)[0]
    assert "deletion vs random order, log-odds +2.290 [+1.670, +2.940]: better" in reading
    assert "pointing game vs centre map +0.100 [-0.030, +0.250]: not distinguishable" in reading
    assert perturbation_rows(explanation) == [{"name": "model:blur", "balanced_accuracy": "0.9700",
                                               "removes_signal": "**no**"}]
    rows = causal_rows(explanation)
    assert [r["name"] for r in rows] == ["untouched", "true foci ablated (raw image)"]
    assert rows[1]["accuracy"] == "0.5000"
