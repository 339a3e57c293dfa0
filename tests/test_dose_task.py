"""The other BPS tasks (issue 24): `--label_column dose_Gy` on synthetic BPS data trains a 5-class model whose
card lists per-dose accuracy, and predict, explain (`--target_class`) and the app work with it. (The particle task's
dose-matched pairs on a trained run: tests/test_train.py.) Tiny: 160 synthetic crops, 1 epoch."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bps_vit.metrics import confound_check, dose_matched_pairs, per_condition_accuracy
from bps_vit.prepare import PrepareDataArguments, prepare_data
from tests.support.tiny_models import TINY_CONFIG as TINY

DOSES = ["0Gy", "0.1Gy", "0.3Gy", "0.82Gy", "1Gy"]


def test_dose_matched_pairs_by_hand():
    # Fe 0.82 Gy: 4 images at 4 h (3 right) and 6 at 24 h (3 right); X-ray 1 Gy: 5 images (4 right);
    # Fe 0.3 Gy has no X-ray 0.1 Gy partner here, so that pair is left out
    labels = [0] * 10 + [1] * 5 + [0] * 5
    preds = [0, 0, 0, 1] + [0, 0, 0, 1, 1, 1] + [1, 1, 1, 1, 0] + [0] * 5
    conditions = ["Fe 0.82Gy 4h"] * 4 + ["Fe 0.82Gy 24h"] * 6 + ["X-ray 1Gy 4h"] * 5 + ["Fe 0.3Gy 4h"] * 5
    pairs = dose_matched_pairs(per_condition_accuracy(labels, preds, conditions))
    assert [p.pair for p in pairs] == ["Fe 0.82 Gy vs X-ray 1 Gy"]
    assert pairs[0].n == 15 and pairs[0].accuracy == pytest.approx(10 / 15)
    assert pairs[0].balanced_accuracy == pytest.approx((6 / 10 + 4 / 5) / 2)  # 0.70, not the pooled 0.667
    check = confound_check("particle_type", per_condition_accuracy(labels, preds, conditions))
    assert "confounded with dose" in check.note and check.dose_matched_pairs == pairs
    assert confound_check("hr_post_exposure", per_condition_accuracy(labels, preds, conditions)) is None


@pytest.fixture(scope="module")
def dose_run(tmp_path_factory, one_torch_thread):
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments, run_training

    tmp = tmp_path_factory.mktemp("dose")
    data, run = tmp / "data", tmp / "run"
    report = prepare_data(PrepareDataArguments(
        source="synthetic", raw_dir=str(tmp / "raw"), output_dir=str(data), num_images=160, difficulty=0.0,
        label_column="dose_Gy", seed=3, disable_tqdm=True, num_workers=2))
    results = run_training(ModelArguments(config_name=TINY), DataArguments(data_dir=str(data)), BPSTrainingArguments(
        output_dir=str(run), num_train_epochs=1, per_device_train_batch_size=32, learning_rate=1e-3, seed=0,
        disable_tqdm=True, use_cpu=True, save_total_limit=1))
    return data, run, report, results


@pytest.mark.slow
def test_the_dose_task_is_five_classes_with_zero_gy_a_class(dose_run):
    data, run, report, results = dose_run
    assert report["labels"] == DOSES and report["label_column"] == "dose_Gy"
    assert report["counts"]["sham"]["total"] == 0  # 0 Gy is a class here, not the negative control
    assert results.data.labels == DOSES and results.sham_control is None
    test = results.splits["test"]
    assert np.array(test.confusion_matrix).shape == (5, 5)
    assert "confounded" not in results.confound.note and "0.82 vs 1.0 Gy" in results.confound.note
    # the per-condition rows keep the particle: the condition of a 0.82 Gy image is Fe 0.82Gy <h>h
    assert {c.label for c in test.per_condition} == {"Fe", "X-ray"}


@pytest.mark.slow
def test_the_card_lists_accuracy_per_dose(dose_run, tmp_path):
    from bps_vit.publish import PublishArguments, run_publish

    _, run, _, results = dose_run
    run_publish(PublishArguments(model=str(run), dry_run=True, export_dir=str(tmp_path / "hub")))
    card = (tmp_path / "hub" / "README.md").read_text()
    section = card.split("### Per class (test)", 1)[1].split("###", 1)[0]
    matrix = results.splits["test"].confusion_matrix
    for i, dose in enumerate(DOSES):  # each row's recall, computed here from the confusion matrix
        expected = f"{matrix[i][i] / sum(matrix[i]):.4f}"
        assert f"| {dose} | {sum(matrix[i])} | {expected} |" in section
    assert "classifies 16-bit fluorescence crops of single nuclei by **dose (Gy)**" in card


@pytest.mark.slow
def test_predict_explain_and_app_on_the_dose_model(dose_run, tmp_path):
    from bps_vit.app import handle_upload, load_app_model
    from bps_vit.explain.run import ExplainArguments, explain
    from bps_vit.predict import PredictArguments, run_predict

    data, run, _, _ = dose_run
    out = tmp_path / "test.csv"
    run_predict(PredictArguments(model=str(run), data_dir=str(data), split="test", output=str(out),
                                 disable_tqdm=True))
    with open(out, newline="") as handle:
        header = next(csv.reader(handle))
    assert [c for c in header if c.startswith("prob_")] == [f"prob_{dose}" for dose in DOSES]

    def explained(target_class):
        return explain(ExplainArguments(model=str(run), data_dir=str(data), split="test", num_images=3,
                                        methods="grad_rollout", max_figures=0, disable_tqdm=True,
                                        randomization="none", faithfulness_steps=4, target_class=target_class,
                                        output_dir=str(tmp_path / f"explain-{target_class}")))

    own, one_gy = explained(None), explained("1Gy")
    assert one_gy.labels == DOSES and one_gy.num_images == 3 and one_gy.settings["target_class"] == "1Gy"
    assert "target_class" not in own.settings
    for a, b in zip(own.per_image, one_gy.per_image, strict=True):  # the record keeps the real call
        assert a.filename == b.filename and a.predicted == b.predicted
        # gradient rollout is class-specific: explaining 1 Gy instead of the call changes the map, so its
        # deletion curve (of the explained class's log-odds) changes, exactly where the call was not 1 Gy
        changed = a.methods["grad_rollout"].deletion_auc != b.methods["grad_rollout"].deletion_auc
        assert changed == (a.predicted != "1Gy")
    with pytest.raises(ValueError, match=r"--target_class '2Gy': not a class of this model; choose from"):
        explain(ExplainArguments(model=str(run), data_dir=str(data), target_class="2Gy", disable_tqdm=True))

    app = load_app_model(str(run), data / "test")
    call, *_ = handle_upload(app, app.examples[:1], shap=False)
    assert set(call) == set(DOSES)
