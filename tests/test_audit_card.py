"""The model card shows the plate-held-out accuracy of an audit of the run's own data and settings, and only then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bps_vit.provenance import RunIdentity
from bps_vit.publish.card import build_model_card
from bps_vit.results import AuditResults, RunResults

IDENTITY = RunIdentity(data_fingerprint="a" * 64, model="configs/model/vit_tiny.json", image_size=None,
                       preprocessing={"stretch_mode": "dataset"})


def _audit() -> dict:
    interval = {"estimate": 0.6123, "low": 0.4011, "high": 0.8034}
    strategy = {"group": "plate", "num_folds": 11, "n": 1941, "accuracy": interval,
                "balanced_accuracy": {"estimate": 0.605, "low": 0.39, "high": 0.79}}
    return {
        "schema_version": 1,
        "strategies": {"plate": {"strategy": "plate", **strategy},
                       "field": {**strategy, "strategy": "field", "group": "field", "num_folds": 5,
                                 "accuracy": {"estimate": 0.97, "low": 0.95, "high": 0.99}}},
        "inflation": [{"strategy": "field", "metric": "accuracy", "detected": True,
                       "difference": {"estimate": 0.3577, "low": 0.17, "high": 0.56},
                       "verdict": "splitting by field overstates accuracy on new plates by 0.358 [0.170, 0.560]"}],
    }


def _run(tmp_path: Path, audit_identity: RunIdentity | None = IDENTITY, audit_dir: str = "audit") -> Path:
    from transformers import ViTConfig

    run = tmp_path / "demo"
    run.mkdir()
    ViTConfig(image_size=32, patch_size=8, num_labels=2, id2label={0: "Fe", 1: "X-ray"},
              label2id={"Fe": 0, "X-ray": 1}).to_json_file(run / "config.json")
    (run / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}}))
    RunResults.from_dict({"schema_version": 1,
                          "splits": {"test": {"n": 292, "accuracy": 0.9932, "balanced_accuracy": 0.9925}},
                          "data": {"data_dir": "data/bps", "source": "synthetic", "split_by": "field"}}
                         ).to_json(run / RunResults.FILENAME)
    IDENTITY.write(run)
    folder = run / "audit" if audit_dir == "audit" else Path(audit_dir)
    AuditResults.from_dict(_audit()).to_json(folder / AuditResults.FILENAME)
    if audit_identity is not None:
        audit_identity.write(folder)
    return run


def _results_section(card) -> str:
    return card.text.split("## Results", 1)[1].split("### Per condition", 1)[0]


def test_card_puts_the_plate_held_out_accuracy_first_next_to_the_test_accuracy(tmp_path):
    card = build_model_card(_run(tmp_path))
    first = _results_section(card).strip().split("\n\n", 1)[0]
    assert first.startswith("**Accuracy on new plates: 0.612 [0.401, 0.803]**"), first
    assert "(11 plates)" in first and "split by field) gives **0.993**" in first
    assert "splitting by field overstates accuracy on new plates by 0.358 [0.170, 0.560]" in first
    results = {entry["dataset"].get("split"): entry for entry in card.data.to_dict()["model-index"][0]["results"]}
    assert set(results) == {"test", "plate-held-out cross-validation"}
    held_out = {m["type"]: m["value"] for m in results["plate-held-out cross-validation"]["metrics"]}
    assert held_out == {"accuracy": pytest.approx(0.6123), "balanced_accuracy": pytest.approx(0.605)}


def test_an_audit_of_other_data_or_settings_is_left_out(tmp_path, caplog):
    other = RunIdentity(data_fingerprint="b" * 64, model=IDENTITY.model, image_size=None,
                        preprocessing=IDENTITY.preprocessing)
    card = build_model_card(_run(tmp_path, audit_identity=other))
    assert "Accuracy on new plates" not in card.text
    assert len(card.data.to_dict()["model-index"][0]["results"]) == 1


def test_publish_audit_flag_takes_an_audit_folder_elsewhere_and_refuses_one_of_another_run(tmp_path):
    from bps_vit.publish import PublishError
    from bps_vit.publish.export import read_run_for_export

    run = _run(tmp_path, audit_dir=str(tmp_path / "elsewhere"))
    assert read_run_for_export(run, None, tmp_path / "elsewhere").audit.strategies["plate"].num_folds == 11
    RunIdentity(data_fingerprint="c" * 64, model=IDENTITY.model, image_size=None,
                preprocessing=IDENTITY.preprocessing).write(tmp_path / "elsewhere")
    with pytest.raises(PublishError, match=r"--audit .*elsewhere: .*audits another run \(data_fingerprint differ"):
        read_run_for_export(run, None, tmp_path / "elsewhere")
