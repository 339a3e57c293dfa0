"""The app in a real browser (headless Debian Chromium driven by Playwright): upload a 16-bit TIFF, read the call
and the CSV (probabilities equal to bps_vit.predict's to 1e-5), see the heatmaps, survive a corrupt file, answer
the next good one, and serve two pages at once with their own results. Uploads stay in the app's folder."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.app_browser import (
    clear_upload,
    find_chromium,
    images_rendered,
    launch_browser,
    open_app,
    read_results_csv,
    save_screenshot,
    serve_app,
    upload_and_wait,
)
from tests.support.images import bps_like_tiff
from tests.support.tiny_models import LABELS, save_tiny_model

pytestmark = pytest.mark.slow
CHROMIUM = find_chromium()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    root = tmp_path_factory.mktemp("browser")
    model = save_tiny_model(root / "model")
    tag = uuid.uuid4().hex[:8]  # unique names: the test looks for where the uploads landed
    images = {f"{label}{i}": bps_like_tiff(root / f"{tag}_{label}_{i}.tif", label, seed=40 + 2 * i + k)
              for k, label in enumerate(LABELS) for i in range(2)}
    for label in LABELS:  # an example per class, as publish --examples_from lays them out
        (root / "examples" / label).mkdir(parents=True)
        bps_like_tiff(root / "examples" / label / f"{tag}_example_{label}.tif", label, seed=99)
    corrupt = root / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x00" * 40)
    return root, model, images, {"corrupt": corrupt}


def expected_probs(model_dir: Path, paths: list[Path]) -> dict[str, list[float]]:
    """What scripts/predict.py computes for these files (sdpa attention, as it loads the model)."""
    from bps_vit.model import load_for_inference
    from bps_vit.predict import predict_paths

    loaded = load_for_inference(model_dir, attn_implementation="sdpa")
    return {Path(p.path).name: p.probs for p in predict_paths(loaded, paths, progress=False)}


def probs_of(rows: list[dict[str, str]]) -> dict[str, list[float]]:
    return {row["path"]: [float(row[f"prob_{label}"]) for label in LABELS] for row in rows if row["status"] == "ok"}


def test_app_in_a_browser(setup, tmp_path):
    from playwright.sync_api import sync_playwright

    root, model, images, bad = setup
    expected = expected_probs(model, list(images.values()))
    app_tmp = tmp_path / "app_tmp"
    with serve_app(model, examples=root / "examples", tmp_dir=app_tmp) as url, sync_playwright() as playwright:
        browser = launch_browser(playwright, CHROMIUM)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_app(page, url)

        first = images["Fe0"]
        upload_and_wait(page, [first], f"Explained: {first.name}")
        label = page.locator("#call").inner_text()
        assert any(name in label for name in LABELS) and "%" in label
        rows = read_results_csv(page)
        assert [r["path"] for r in rows] == [first.name]
        assert probs_of(rows)[first.name] == pytest.approx(expected[first.name], abs=1e-5)
        for elem_id in ("img-model_view", "img-rollout", "img-grad_rollout"):
            assert images_rendered(page, elem_id), elem_id

        clear_upload(page)
        status = upload_and_wait(page, [bad["corrupt"]], "could not be read")
        assert "corrupt.tif" in status and "corrupt or truncated TIFF" in status

        clear_upload(page)
        again = images["X-ray0"]
        upload_and_wait(page, [again], f"Explained: {again.name}")
        assert probs_of(read_results_csv(page))[again.name] == pytest.approx(expected[again.name], abs=1e-5)
        assert save_screenshot(page, tmp_path / "app.png").stat().st_size > 20_000

        clear_upload(page)  # several files: a table, one CSV; a click on a row explains that file
        both = [images["Fe1"], images["X-ray1"]]
        upload_and_wait(page, both, f"Explained: {both[0].name}")
        assert [r["path"] for r in read_results_csv(page)] == [p.name for p in both]
        page.locator("#table [data-testid='cell-1-0']").click()
        page.locator("#status").filter(has_text=f"Explained: {both[1].name}").wait_for(timeout=60_000)

        pages = [browser.new_context().new_page() for _ in range(2)]
        mine = [images["Fe1"], images["X-ray1"]]
        for other in pages:
            open_app(other, url)
        for other, path in zip(pages, mine):  # both uploads are sent before either answer is awaited
            other.locator("#files input[type=file]").set_input_files([str(path)])
        for other, path in zip(pages, mine):
            other.locator("#status").filter(has_text=f"Explained: {path.name}").wait_for(timeout=90_000)
        for other, path in zip(pages, mine):
            assert f"Explained: {path.name}" in other.locator("#status").inner_text()
            got = probs_of(read_results_csv(other))
            assert list(got) == [path.name] and got[path.name] == pytest.approx(expected[path.name], abs=1e-5)
        example = next((root / "examples" / "X-ray").glob("*.tif"))
        page.get_by_text(example.name, exact=True).first.click()  # an example crop: one click answers
        page.locator("#status").filter(has_text=f"Explained: {example.name}").wait_for()
        browser.close()

    # the server's TMPDIR is app_tmp: every uploaded file is in the app's own folder (bps-vit-app-*/uploads/),
    # none in Gradio's default cache (app_tmp/gradio) or anywhere else
    sent = [p for p in app_tmp.rglob("*") if p.is_file() and p.suffix == ".tif" and "example" not in p.name]
    assert any(p.name == first.name for p in sent)
    assert all(p.relative_to(app_tmp).parts[0].startswith("bps-vit-app-") and "uploads" in p.parts for p in sent), sent
