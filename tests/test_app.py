"""The app's package side, without a browser: upload checks made from headers, one-image explanations equal to
the explain step's and probabilities equal to predict's, the request function on good and bad files, the
pictures, and scripts/app.py's exit codes."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.support.images import bps_like_tiff
from tests.support.paths import REPO
from tests.support.tiny_models import LABELS, save_tiny_model
from tests.support.uploads import bad_files, odd_but_readable


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("app") / "model")


@pytest.fixture(scope="module")
def app_model(tiny_model, tmp_path_factory, one_torch_thread):
    from bps_vit.app import load_app_model

    examples = tmp_path_factory.mktemp("examples")
    for i, label in enumerate(LABELS * 3):
        (examples / label).mkdir(exist_ok=True)
        bps_like_tiff(examples / label / f"crop{i}.tif", label, seed=i)
    return load_app_model(str(tiny_model), examples)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def good_tiffs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    return [str(bps_like_tiff(folder / f"P24{i}_73665006707-A1_003_01{i}_proj.tif", LABELS[i % 2], seed=10 + i))
            for i in range(3)]


@pytest.mark.parametrize(
    "kind, words",
    [
        ("corrupt", "corrupt or truncated TIFF"),
        ("text", "not an image"),
        ("empty", "empty (0 bytes)"),
        ("multipage", "multi-page TIFF (3 pages)"),
        ("huge", "10000 x 10000 pixels"),
        ("nan_float", "NaN"),
    ],
)
def test_check_upload_refuses_with_a_message_naming_the_file(bad, kind, words):
    from bps_vit.app_uploads import check_upload
    from bps_vit.imaging import ImageReadError

    path = bad[kind]
    with pytest.raises(ImageReadError) as err:
        check_upload(path)
    assert words in str(err.value) and path.name in str(err.value)


def test_large_images_are_refused_from_the_header_without_decoding(bad, tmp_path, monkeypatch):
    import tifffile

    from bps_vit.app_uploads import check_upload
    from bps_vit.imaging import ImageReadError

    def no_decode(*args, **kwargs):
        raise AssertionError("the pixels were decoded")

    huge = bad["huge"]
    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_decode)
    with pytest.raises(ImageReadError, match="far larger"):
        check_upload(huge)
    small = tmp_path / "big_bytes.tif"
    small.write_bytes(b"II*\x00" + b"\x00" * 2048)
    with pytest.raises(ImageReadError, match="MB is more than"):
        check_upload(small, max_bytes=1024)


def test_odd_but_readable_images_are_accepted_with_a_note(tmp_path):
    from bps_vit.app_uploads import check_upload

    files = odd_but_readable(tmp_path)
    assert "floating-point" in " ".join(check_upload(files["float"]))
    assert "colour image" in " ".join(check_upload(files["rgb"]))
    gray8 = " ".join(check_upload(files["gray8"]))  # the same rule as predict's warning column
    assert "8-bit image" in gray8 and "colour" not in gray8
    import tifffile

    crop = tmp_path / "crop.tif"
    tifffile.imwrite(crop, np.full((120, 110), 400, np.uint16))
    assert check_upload(crop) == []  # a BPS-shaped 16-bit crop: nothing to say


def test_explain_image_equals_the_explainers_and_predict(app_model, good_tiffs):
    """Same pixels as predict_paths (probabilities to 1e-5), same maps as the explain step's classes."""
    from bps_vit.explain import AttentionRollout, GradientRollout
    from bps_vit.explain.image import explain_image
    from bps_vit.predict import predict_paths

    path = good_tiffs[0]
    loaded = app_model.loaded
    result = explain_image(loaded, path)
    predicted = predict_paths(loaded, [path], progress=False)[0]
    np.testing.assert_allclose(result.probabilities, predicted.probs, atol=1e-5)
    assert result.predicted_label == predicted.label and result.name == Path(path).name
    pixels = loaded.preprocessor([path])
    target = [result.target]
    np.testing.assert_allclose(result.heatmaps["rollout"], AttentionRollout(loaded.model)(pixels, target)[0],
                               atol=1e-6)
    np.testing.assert_allclose(result.heatmaps["grad_rollout"], GradientRollout(loaded.model)(pixels, target)[0],
                               atol=1e-6)
    assert result.image.shape == (72, 66) and 0.0 <= result.image.min() and result.image.max() <= 1.0


@pytest.mark.slow
def test_explain_image_with_shap_and_the_explain_figure(app_model, good_tiffs, tmp_path):
    from bps_vit import figures
    from bps_vit.explain.image import ShapSettings, explain_image

    seen = []
    result = explain_image(app_model.loaded, good_tiffs[1], methods=("rollout", "shap"),
                           shap=ShapSettings(max_evals=40, batch_size=40), on_method=seen.append)
    assert seen == ["rollout", "shap"]
    assert result.shap_values.shape == (2, 64, 64) and np.isfinite(result.shap_values).all()
    path = figures.plot_explanations([result.figure_row()], tmp_path / "row.png")
    assert path.stat().st_size > 10_000


def test_pictures_use_the_explain_colours():
    from bps_vit import figures

    image = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(30, 20)
    none = figures.overlay_rgb(image, np.zeros((8, 8)), min_side=0)
    full = figures.overlay_rgb(image, np.ones((8, 8)), min_side=0)
    assert none.shape == (30, 20, 3) and none.dtype == np.uint8
    colour = figures.heatmap_colours(np.ones((1, 1)))[0, 0]
    np.testing.assert_allclose(full[0, 0] / 255, colour[:3] * 0.6 + image[0, 0] * 0.4, atol=1 / 255)
    assert figures.image_rgb(image).shape == (390, 260, 3)  # enlarged by a whole factor (13) to >= 256 px
    signed = figures.shap_rgb(image, np.array([[-1.0, 1.0]]), min_side=0)
    assert signed[0, 0, 2] > signed[0, 0, 0] and signed[0, -1, 0] > signed[0, -1, 2]  # blue against, red for


def test_overlays_keep_the_crop_visible_and_carry_a_colour_scale(app_model, good_tiffs):
    """Issue 23 item 14: a map high everywhere (gradient rollout in docs/app.png) washed the crop in opaque yellow;
    SHAP drew no crop under its blocks; the app's overlays had no colour scale. A half-black, half-white crop under
    the strongest relevance, and under SHAP values of 0, must still show its two halves apart."""
    from bps_vit import figures
    from bps_vit.app import pictures
    from bps_vit.explain.image import ShapSettings, explain_image

    crop = np.zeros((8, 8))
    crop[:, 4:] = 1.0
    washed = figures.overlay_rgb(crop, np.ones((8, 8)), min_side=0).astype(int)
    assert (washed[:, 4:] - washed[:, :4]).mean() > 0.35 * 255  # the crop's contrast shows through the colour
    under_shap = figures.shap_rgb(crop, np.zeros((8, 8)), min_side=0).astype(int)
    assert (under_shap[:, 4:] - under_shap[:, :4]).mean() > 0.15 * 255  # faint, but there
    explanation = explain_image(app_model.loaded, good_tiffs[0], methods=("rollout", "shap"),
                                shap=ShapSettings(max_evals=40, batch_size=40))
    shown = pictures(explanation, app_model.pictures)
    plain = figures.overlay_rgb(explanation.image, explanation.heatmaps["rollout"])
    assert shown["rollout"].shape[0] > plain.shape[0] and np.array_equal(shown["rollout"][: plain.shape[0]], plain)
    scale = shown["rollout"][plain.shape[0] + 2].astype(int)  # one row of the colour bar: dark low end, bright high
    assert scale[-1].sum() > scale[0].sum() + 200
    shap_bar = shown["shap"][figures.shap_rgb(explanation.image, explanation.shap_values[0]).shape[0] + 2]
    assert shap_bar[0, 2] > shap_bar[0, 0] and shap_bar[-1, 0] > shap_bar[-1, 2]  # blue: against; red: for


def test_analyse_answers_good_files_and_names_bad_ones(app_model, good_tiffs, bad):
    from bps_vit.app import analyse, status_markdown, table_rows
    from bps_vit.predict import predict_paths

    paths = [good_tiffs[0], str(bad["corrupt"]), str(bad["truncated"]), good_tiffs[1], str(bad["text"])]
    result = analyse(app_model, paths)
    assert [p.ok for p in result.predictions] == [True, False, False, True, False]
    expected = predict_paths(app_model.loaded, [good_tiffs[0], good_tiffs[1]], progress=False)
    for got, want in zip([result.predictions[0], result.predictions[3]], expected):
        np.testing.assert_allclose(got.probs, want.probs, atol=1e-6)
    assert result.explanation.name == Path(good_tiffs[0]).name
    message = status_markdown(result)
    for name in ("corrupt.tif", "truncated.tif", "notes.tif"):
        assert name in message
    assert str(Path(bad["truncated"]).parent) not in message  # no server paths on the page
    assert result.csv_path.is_relative_to(app_model.work_dir)
    with result.csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "status", "predicted_label", "prob_Fe", "prob_X-ray", "warning"]
    assert rows[0]["prob_Fe"] == f"{expected[0].probs[0]:.6f}" and rows[1]["status"].startswith("error: corrupt.tif")
    assert len(table_rows(result, app_model.loaded.labels)) == 5
    assert analyse(app_model, [str(bad["empty"])]).explanation is None  # nothing readable: no pictures, a message


def test_handle_upload_gives_every_component_a_value(app_model, good_tiffs):
    from bps_vit.app import handle_upload

    keys = app_model.pictures
    assert keys == ("model_view", "rollout", "grad_rollout", "gradcam", "shap")  # a ViT: every method
    call, *rest = handle_upload(app_model, good_tiffs[:1], shap=False)
    pictures, (status, table, csv_path) = dict(zip(keys, rest[: len(keys)])), rest[len(keys):]
    assert set(call) == set(LABELS) and abs(sum(call.values()) - 1) < 1e-5
    assert all(pictures[k] is not None and pictures[k].dtype == np.uint8 for k in keys[:-1])
    assert pictures["shap"] is None  # SHAP only when asked for
    assert "Explained" in status and len(table) == 1 and Path(csv_path).is_file()


def test_a_table_row_click_explains_that_file(app_model, good_tiffs, bad):
    from bps_vit.app import handle_select

    paths = [good_tiffs[0], str(bad["corrupt"]), good_tiffs[2]]
    call, *rest = handle_select(app_model, paths, 2)
    assert len(rest) == len(app_model.pictures) + 1 and f"Explained: **{Path(good_tiffs[2]).name}**" in rest[-1]
    call, *rest = handle_select(app_model, paths, 1)
    assert call is None and "corrupt.tif" in rest[-1]
    assert "Upload images first" in handle_select(app_model, [], 0)[-1]


def test_examples_and_facts(app_model, tmp_path):
    from bps_vit.app import model_facts
    from bps_vit.imaging import find_examples

    assert [Path(p).parent.name for p in app_model.examples] == ["Fe", "Fe", "X-ray", "X-ray"]
    assert find_examples(tmp_path / "missing", list(LABELS)) == []
    from bps_vit.results import DataSummary, RunResults, ShamControl, SplitMetrics

    RunResults(
        splits={"test": SplitMetrics(n=80, accuracy=0.9, balanced_accuracy=0.875)},
        sham_control=ShamControl.judge(SplitMetrics(n=400, balanced_accuracy=0.51,
                                                    confusion_matrix=[[100, 100], [96, 104]]), LABELS),
        data=DataSummary(data_dir="data/bps", split_by="field"),
    ).to_json(tmp_path / "bps_results.json")
    facts = model_facts(tmp_path)
    assert "grouped by field" in facts and "0.8750" in facts and "Within chance" in facts


def _script():
    spec = importlib.util.spec_from_file_location("app_script", REPO / "scripts" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_script_exit_codes(tmp_path):
    script = _script()
    assert script.main(["--model", "x", "--no_such_flag", "1"]) == 2
    with pytest.raises(SystemExit) as usage:  # argparse's own usage errors exit with 2 too
        script.main(["--port", "not-a-number"])
    assert usage.value.code == 2
    assert script.main(["--model", str(tmp_path / "no_model_here")]) == 2
