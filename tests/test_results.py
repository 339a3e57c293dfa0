"""The results schema: the one condition format, versions, kinds, and files written before versioning."""

from __future__ import annotations

import json

import pytest

from bps_vit.provenance import weights_fingerprint
from bps_vit.results import (
    SCHEMA_VERSION,
    Condition,
    ExplanationResults,
    Interval,
    MethodRecord,
    PredictionResults,
    RunResults,
    SchemaError,
    fmt,
)


@pytest.mark.parametrize(
    "label, dose, hours, text",
    [("Fe", 0.82, 4, "Fe 0.82Gy 4h"), ("X-ray", 1.0, 24, "X-ray 1Gy 24h"), ("Fe", 0.0, 48, "Fe 0Gy 48h"),
     ("X-ray", "0.1", "24", "X-ray 0.1Gy 24h"), ("Fe", float("nan"), -1, "Fe (dose/hour unknown)"),
     ("Fe", "nan", "-1", "Fe (dose/hour unknown)"), ("X-ray", None, None, "X-ray (dose/hour unknown)")],
)
def test_condition_formats_and_parses_back(label, dose, hours, text):
    condition = Condition.of(label, dose, hours)
    assert str(condition) == text
    assert Condition.parse(text) == condition


def test_condition_parse_refuses_other_text_and_sorts_by_dose_then_hour():
    with pytest.raises(ValueError, match="not a condition"):
        Condition.parse("Fe 0.82 Gy, 4 hours")
    texts = ["Fe 0.82Gy 4h", "Fe 0.3Gy 24h", "Fe 0.3Gy 4h", "Fe (dose/hour unknown)"]
    ordered = sorted((Condition.parse(t) for t in texts), key=Condition.sort_key)
    assert [str(c) for c in ordered] == ["Fe (dose/hour unknown)", "Fe 0.3Gy 4h", "Fe 0.3Gy 24h", "Fe 0.82Gy 4h"]


def test_fmt_is_the_one_number_format():
    assert [fmt(None), fmt(float("nan")), fmt(0.123456), fmt(0.5, 2), fmt(7), fmt(True)] == [
        "n/a", "n/a", "0.1235", "0.50", "7", "True"]


def test_version_0_prediction_metrics_load_in_the_training_shape():
    old = {  # as predict.py wrote it before the schema
        "model": "outputs/demo", "data_dir": "data/bps", "split": "test",
        "test": {"n": 4, "accuracy": 0.75, "balanced_accuracy": 0.75, "f1_macro": 0.73, "roc_auc": 1.0,
                 "confusion_matrix": [[2, 0], [1, 1]]},
        "per_condition": [{"condition": "Fe 0.3Gy 4h", "label": "Fe", "dose_Gy": 0.3, "hr_post_exposure": 4, "n": 2,
                           "accuracy": 1.0}],
        "sham_control": None, "baseline": {"majority_class": "Fe", "accuracy": 0.5},
        "n_errors": 1, "errors": [{"path": "x.tif", "status": "error: truncated"}],
    }
    loaded = PredictionResults.from_dict(old)
    assert loaded.splits["test"].accuracy == 0.75 and loaded.splits["test"].per_condition[0].n == 2
    assert loaded.n_errors == 1 and loaded.schema_version == SCHEMA_VERSION
    assert json.loads(loaded.to_json())["splits"]["test"]["confusion_matrix"] == [[2, 0], [1, 1]]


def test_versions_and_kinds_are_checked_with_a_message_that_names_them(tmp_path):
    path = tmp_path / "bps_results.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "kind": "run"}))
    with pytest.raises(SchemaError, match=rf"bps_results.json: schema_version {SCHEMA_VERSION + 1} is newer"):
        RunResults.from_json(path)
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "kind": "prediction", "model": None,
                                "data_dir": "d", "split": "test"}))
    with pytest.raises(SchemaError, match="a 'prediction' results file, not 'run'"):
        RunResults.from_json(path)
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "kind": "run", "test_acc": 1.0}))
    with pytest.raises(SchemaError, match=r"unknown field\(s\) \['test_acc'\]"):
        RunResults.from_json(path)
    path.write_text("{truncated")
    with pytest.raises(SchemaError, match="unreadable JSON"):
        RunResults.from_json(path)


def test_version_1_explain_metrics_upgrade_to_the_typed_file(tmp_path):
    """A file as explain wrote it before the typed hand-off: per-image numbers flat on the line, a sham split's
    `labels` a note with the classes beside it. It loads typed, and writes back in the version 2 layout."""
    old = {
        "schema_version": 1, "kind": "explanation", "split": "sham", "num_images": 1,
        "labels": "branch (sham: not a truth)", "classes": ["Fe", "X-ray"],
        "methods": {"grad_rollout": {"deletion_auc": 0.3, "deletion_log_odds_gain": {"mean": 2.0, "ci95": [1.0, 3.0],
                                                                                    "n": 1},
                                     "beats_baseline": {"deletion": None}, "verdict_notes": ["withheld"]}},
        "per_image": [{"filename": "a.tif", "label": None, "branch": "Fe", "predicted": "X-ray", "probability": 0.9,
                       "has_mask": True, "has_foci": True, "warning": "", "grad_rollout_deletion_auc": 0.25,
                       "grad_rollout_insertion_auc": 0.75, "grad_rollout_foci_mass": None,
                       "grad_rollout_pointing_game": None, "foci_note": "sham"}],
        "skipped": {"count": 0, "items": []},
    }
    (tmp_path / "explain_metrics.json").write_text(json.dumps(old))
    loaded = ExplanationResults.from_json(tmp_path / "explain_metrics.json")
    assert loaded.labels == ["Fe", "X-ray"] and loaded.labels_note == "branch (sham: not a truth)"
    line = loaded.per_image[0]
    assert line.methods["grad_rollout"] == MethodRecord(deletion_auc=0.25, insertion_auc=0.75)
    assert line.branch == "Fe" and line.foci_note == "sham"
    summary = loaded.methods["grad_rollout"]
    assert summary.deletion_log_odds_gain == Interval(mean=2.0, ci95=[1.0, 3.0], n=1)
    assert summary.beats_baseline.deletion is None and summary.verdict_notes == ["withheld"]
    again = json.loads(loaded.to_json())
    assert again["schema_version"] == SCHEMA_VERSION == 2 and "classes" not in again
    assert again["per_image"][0]["methods"]["grad_rollout"]["insertion_auc"] == 0.75
    assert ExplanationResults.from_dict(again) == loaded  # the new layout reads back to the same object


def test_version_1_run_results_name_the_hub_base_model(tmp_path):
    """Before training recorded `base_model`, it is read from the model id: a USER/NAME id is a Hub base model; a
    from-scratch config or a local folder is not."""
    hub = RunResults.from_dict({"schema_version": 1, "model": {"model_name_or_path": "google/vit-base-patch16-224"}})
    assert hub.model.base_model == "google/vit-base-patch16-224"
    scratch = RunResults.from_dict({"schema_version": 1, "model": {"model_name_or_path": None,
                                                                   "config_name": "configs/model/vit_tiny.json"}})
    assert scratch.model.base_model is None
    folder = RunResults.from_dict({"schema_version": 1, "model": {"model_name_or_path": str(tmp_path)}})
    assert folder.model.base_model is None  # an existing local folder
    relative = RunResults.from_dict({"schema_version": 1, "model": {"model_name_or_path": "./outputs/base"}})
    assert relative.model.base_model is None


def test_weights_fingerprint_is_the_sha256_of_the_weights(tmp_path):
    import hashlib

    assert weights_fingerprint(tmp_path) is None
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert weights_fingerprint(tmp_path) == hashlib.sha256(b"model.safetensors\0weights").hexdigest()


def test_sham_reports_what_the_model_calls_undamaged_nuclei():
    """The issue's sham matrix: balanced accuracy at chance, yet 1,056 of 1,059 nuclei are called X-ray."""
    from bps_vit.results import ShamControl, SplitMetrics

    sham = ShamControl.judge(SplitMetrics(n=1059, accuracy=527 / 1059, balanced_accuracy=0.4985,
                                          confusion_matrix=[[1, 530], [2, 526]]))
    assert sham.predicted_share["all"]["X-ray"] == pytest.approx(1056 / 1059)
    assert sham.predicted_share["Fe"]["X-ray"] == pytest.approx(530 / 531)
    assert sham.predicted_share["X-ray"]["Fe"] == pytest.approx(2 / 528)
    assert "calls 99.7% of undamaged nuclei X-ray" in sham.interpretation
    assert "carries no information" in sham.interpretation
    assert not sham.batch_signature_suspected
    balanced = ShamControl.judge(SplitMetrics(n=100, balanced_accuracy=0.5, confusion_matrix=[[25, 25], [25, 25]]))
    assert "calls 50.0%" in balanced.interpretation and "carries no information" not in balanced.interpretation
    one_branch = ShamControl.judge(SplitMetrics(n=10, balanced_accuracy=None, confusion_matrix=[[0, 0], [3, 7]]))
    assert one_branch.interpretation.startswith("not available") and one_branch.batch_signature_suspected is None
    assert one_branch.interpretation.endswith(" Predictions: the model calls 70.0% of undamaged nuclei X-ray "
                                              "(X-ray branch 70.0%).")  # every verdict says what the model calls
