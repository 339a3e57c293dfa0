"""explain on the sham split (branch, not truth; no foci scores without foci) and on the image types predict takes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from bps_vit.explain import run as explain_run
from bps_vit.results import ExplanationResults
from tests.support.folders import make_prepared_folder
from tests.support.tiny_models import train_tiny_model

FAST = dict(methods="rollout,grad_rollout", num_images=4, batch_size=2, faithfulness_steps=4, max_figures=4,
            randomization="classifier", disable_tqdm=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_sham")
    data_dir = make_prepared_folder(root / "data", {"train": 16})
    return train_tiny_model(data_dir, root / "model", steps=10)


@pytest.mark.slow
def test_sham_split_is_a_branch_not_a_truth(tiny_model, prepared_dir, tmp_path):
    assert (prepared_dir / "sham").is_dir(), "the synthetic prepared folder should hold a sham split"
    args = explain_run.ExplainArguments(model=str(tiny_model), data_dir=str(prepared_dir), split="sham",
                                        output_dir=str(tmp_path), **FAST)
    results = explain_run.explain(args)
    written = ExplanationResults.from_json(tmp_path / "explain_metrics.json")
    assert written == results  # what explain returns is what it wrote
    assert written.split == "sham" and "branch" in written.labels_note
    assert written.labels == ["Fe", "X-ray"]
    assert written.perturbation_check.labels.startswith("predicted")
    assert written.causal_foci_test is None and "sham" in written.causal_foci_test_note
    assert written.num_images == 4
    for line in written.per_image:
        assert line.label is None and line.branch in ("Fe", "X-ray")
        assert "sham" in line.foci_note  # synthetic sham nuclei carry endogenous foci: still no damage
        assert line.methods["rollout"].foci_mass is None and line.methods["grad_rollout"].pointing_game is None
    for name in ("rollout", "grad_rollout"):
        assert written.methods[name].foci_mass is None
        assert written.methods[name].num_images_with_foci == 0
    stems = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert {line.filename.rsplit(".", 1)[0] for line in written.per_image} | {"explanations"} <= stems
    # what a sham image's figure says is checked on the figure itself below


def test_a_sham_figure_names_the_branch_and_claims_no_truth(tmp_path):
    """The title a reader sees over a sham crop, written out: its branch, no true class, no tick or cross."""
    import matplotlib.pyplot as plt
    import tifffile

    from bps_vit import figures
    from bps_vit.explain.records import ExplainedImage, MethodOutput
    from bps_vit.explain.report import figure_rows
    from bps_vit.imaging import Stretch

    crop = tmp_path / "P1_73665006707-A1_001_001_proj.tif"
    tifffile.imwrite(crop, np.random.default_rng(0).integers(300, 900, (40, 40), dtype=np.uint16))
    curve = np.zeros(5)
    output = MethodOutput(heatmap=np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), deletion=curve,
                          insertion=curve, randomization={}, ground_truth=None)
    image = ExplainedImage(index=0, path=str(crop), filename=crop.name, label=None, branch="X-ray", warning="",
                           true_id=None, target=0, probabilities=[0.7, 0.3], random_deletion=curve,
                           random_insertion=curve, whole_image={}, causal=None, has_mask=False, has_foci=False,
                           mask_path=None, methods={"rollout": output})
    args = explain_run.ExplainArguments(model="unused", **FAST)
    fig = figures.explanations_figure(figure_rows([image], ["rollout"], ["Fe", "X-ray"], Stretch(), args))
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert (f"{crop.name}\nbranch: X-ray (0 Gy sham, not a truth)\ntrue: unknown | predicted: Fe (p = 0.70)"
            in titles), titles


@pytest.mark.slow
def test_labelled_split_keeps_truth_and_foci_scores(tiny_model, tmp_path):
    import tifffile

    data_dir = make_prepared_folder(tmp_path / "data", {"test": 2})
    no_foci = sorted((data_dir / "test" / "Fe").glob("*.tif"))[0].name
    mask = tifffile.imread(data_dir / "masks" / no_foci)
    tifffile.imwrite(data_dir / "masks" / no_foci, np.where(mask == 2, 1, mask).astype(mask.dtype))
    args = explain_run.ExplainArguments(model=str(tiny_model), data_dir=str(data_dir), split="test",
                                        output_dir=str(tmp_path / "out"), **FAST)
    results = explain_run.explain(args)
    assert results.labels == ["Fe", "X-ray"] and results.labels_note is None and results.causal_foci_test_note is None
    lines = {line.filename: line for line in results.per_image}
    assert not lines[no_foci].has_foci and lines[no_foci].methods["rollout"].foci_mass is None
    assert "no foci" in lines[no_foci].foci_note
    others = [line for name, line in lines.items() if name != no_foci]
    assert others and all(line.has_foci and line.methods["rollout"].foci_mass is not None for line in others)
    assert results.methods["rollout"].num_images_with_foci == len(others)
    assert results.perturbation_check.labels == "true"


@pytest.mark.slow
def test_png_is_explained_with_predicts_warning(tiny_model, tmp_path, caplog):
    rng = np.random.default_rng(0)
    png = tmp_path / "colour.png"
    Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(png)
    args = explain_run.ExplainArguments(model=str(tiny_model), images=[str(tmp_path)],
                                        output_dir=str(tmp_path / "out"), **FAST)
    with caplog.at_level(logging.WARNING, logger="bps_vit.explain.scoring"):
        results = explain_run.explain(args)
    assert results.num_images == 1 and results.skipped.count == 0
    warning = results.per_image[0].warning
    assert "colour image" in warning and "8-bit" in warning
    logged = [r for r in caplog.records if "colour.png" in r.getMessage() and "colour image" in r.getMessage()]
    assert len(logged) == 1
