"""A lab's own 3-class data from prepare to publish (issue 24): a folder without groups and a table with them go
through prepare, 1 epoch of training, predict, explain, publish --dry_run and an app upload, and the data's class
names reach every output (CSV columns, card, confusion-matrix axes, the app's call). Tiny: 36 crops of 48 px."""

from __future__ import annotations

import csv
import json

import pytest

from bps_vit.prepare import prepare_data
from bps_vit.results import RunResults
from tests.support.tiny_models import TINY_CONFIG as TINY
from tests.test_own_data import CLASSES, GROUPS_UNKNOWN_WORDS, args, make_folder, write_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["folder", "table"])
def own_run(request, tmp_path_factory, one_torch_thread):
    """(data dir, run dir, source): prepared and trained for 1 epoch."""
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments, run_training

    tmp = tmp_path_factory.mktemp(request.param)
    root = tmp / "crops"
    rows = make_folder(root)
    data, run = tmp / "data", tmp / "run"
    if request.param == "folder":
        prepare_data(args(source="folder", raw_dir=str(root), output_dir=str(data), split_by="image"))
    else:
        prepare_data(args(source="table", table=str(write_table(root / "labels.csv", rows)), output_dir=str(data),
                          split_by="plate"))
    run_training(ModelArguments(config_name=TINY), DataArguments(data_dir=str(data)), BPSTrainingArguments(
        output_dir=str(run), num_train_epochs=1, per_device_train_batch_size=16, learning_rate=1e-3, seed=0,
        disable_tqdm=True, use_cpu=True, save_total_limit=1))
    return data, run, request.param


def test_training_learns_the_data_classes(own_run, tmp_path):
    from bps_vit.figures import plot_confusion_matrix

    data, run, source = own_run
    config = json.loads((run / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == list(CLASSES)
    results = RunResults.from_json(run / "bps_results.json")
    # the confusion-matrix figure the run wrote is the one drawn with the data's class names on its axes (the PNG is
    # reproducible byte for byte: test_figures), and not the one drawn with class ids
    confusion = results.splits["test"].confusion_matrix
    written = (run / "figures" / "confusion_matrix.png").read_bytes()
    assert written == plot_confusion_matrix(confusion, list(CLASSES), tmp_path / "named.png").read_bytes()
    assert written != plot_confusion_matrix(confusion, ["0", "1", "2"], tmp_path / "ids.png").read_bytes()
    assert results.data.labels == list(CLASSES) and results.data.groups_known == (source == "table")
    assert len(results.splits["test"].confusion_matrix) == 3 and results.baseline.majority_class in CLASSES
    assert results.sham_control is None  # no dose column: nothing says which images are 0 Gy


def test_predict_writes_a_probability_column_per_class(own_run, tmp_path):
    from bps_vit.predict import PredictArguments, run_predict

    data, run, _ = own_run
    out = tmp_path / "test.csv"
    summary = run_predict(PredictArguments(model=str(run), data_dir=str(data), split="test", output=str(out),
                                           disable_tqdm=True))
    assert summary["n_ok"] > 0
    with open(out, newline="") as handle:
        header = next(csv.reader(handle))
    assert [c for c in header if c.startswith("prob_")] == [f"prob_{label}" for label in CLASSES]


def test_explain_and_publish_carry_the_classes(own_run, tmp_path):
    from bps_vit.explain.run import ExplainArguments, explain
    from bps_vit.publish import PublishArguments, run_publish

    data, run, source = own_run
    results = explain(ExplainArguments(model=str(run), data_dir=str(data), split="test", num_images=3,
                                       methods="rollout", max_figures=1, disable_tqdm=True,
                                       randomization="none", faithfulness_steps=4))
    assert results.labels == list(CLASSES) and results.num_images == 3
    export = tmp_path / "hub"
    run_publish(PublishArguments(model=str(run), dry_run=True, export_dir=str(export)))
    card = (export / "README.md").read_text()
    assert f"| true \\ predicted | {' | '.join(CLASSES)} |" in card
    assert "Labels: 2 Gy protons, Alpha, ctrl" in card and "NASA BPS data; the images and their labels" in card
    assert ("Groups unknown" in card) == (source == "folder")
    assert "Fe-ion" not in card.split("## How to use")[0]  # not the BPS particle wording for someone else's classes


def test_app_upload_calls_the_data_classes(own_run):
    from bps_vit.app import handle_upload, load_app_model, page_question

    data, run, _ = own_run
    app = load_app_model(str(run), data / "test")
    assert len(app.examples) == 6  # two per class folder
    call, *_ = handle_upload(app, app.examples[:1], shap=False)
    assert set(call) == set(CLASSES)
    assert page_question(app.loaded.labels) == "2 Gy protons, Alpha or ctrl?"


def test_the_groups_unknown_sentence_is_in_the_split_report(own_run):
    data, _, source = own_run
    notes = json.loads((data / "split_report.json").read_text())["notes"]
    assert (GROUPS_UNKNOWN_WORDS in notes) == (source == "folder")
