"""The prepared folder as a DatasetDict, and the transform the Trainer sees."""

from __future__ import annotations

import numpy as np
import pytest

from bps_vit.bps import LABELS
from bps_vit.data import (
    Augmenter,
    BPSTransform,
    cache_gray_pixels,
    collate_pixel_batch,
    load_bps_dataset,
    load_sham_dataset,
    prepare_for_model,
)
from bps_vit.imaging import Preprocessor, Stretch

PRE = Preprocessor(stretch=Stretch(), height=64, width=64)


@pytest.fixture(scope="module")
def dataset(prepared_dir):
    return load_bps_dataset(prepared_dir)


@pytest.mark.slow
def test_datasetdict_has_three_splits_classlabel_and_conditions(dataset, prepared_dir):
    assert set(dataset) == {"train", "validation", "test"}
    assert dataset["train"].features["label"].names == list(LABELS)
    for split in dataset:
        on_disk = sum(1 for _ in (prepared_dir / split).glob("*/*.tif"))
        assert len(dataset[split]) == on_disk
        example = dataset[split][0]
        assert example["filename"].endswith("_proj.tif")
        assert example["condition"].split()[0] == LABELS[example["label"]]
        assert "Gy" in example["condition"] and not example["condition"].endswith("(dose/hour unknown)")
        assert " 0Gy " not in example["condition"]  # sham stays out of the classes by default


@pytest.mark.slow
def test_sham_split_loads_separately(prepared_dir):
    sham = load_sham_dataset(prepared_dir)
    assert sham is not None and len(sham) > 0
    assert set(sham["label"]) == {0, 1}
    assert all(" 0Gy " in condition for condition in sham["condition"])


@pytest.mark.slow
def test_cached_and_on_the_fly_pixels_agree(dataset):
    subset = dataset["validation"].select(range(8))
    on_the_fly = BPSTransform(PRE)(subset[:8])
    cached = BPSTransform(PRE)(cache_gray_pixels(subset, PRE)[:8])
    assert on_the_fly["labels"] == cached["labels"]
    a, b = np.stack(on_the_fly["pixel_values"]), np.stack(cached["pixel_values"])
    assert a.shape == (8, 3, 64, 64)
    assert np.abs(a - b).max() < 2e-3  # float16 storage of values in [0, 1]


@pytest.mark.slow
def test_trainer_view_batches_through_the_collator(dataset):
    ready = prepare_for_model(dataset["train"].select(range(6)), PRE, Augmenter(seed=1), cache=True)
    batch = collate_pixel_batch([ready[i] for i in range(6)])
    assert tuple(batch["pixel_values"].shape) == (6, 3, 64, 64)
    assert batch["labels"].dtype.is_floating_point is False


def test_augmentation_depends_only_on_seed_epoch_and_example():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    a, b = Augmenter(seed=3, epoch=2), Augmenter(seed=3, epoch=2)
    assert all(np.array_equal(a(image, i), b(image, i)) for i in range(20))
    choices = {Augmenter(seed=3, epoch=e).choice(5) for e in range(40)}
    assert len(choices) == 8  # all dihedral transforms get used
    outputs = {Augmenter(seed=0, epoch=0)(image, i).tobytes() for i in range(64)}
    assert len(outputs) == 8  # and they are the 8 distinct flips/rotations


@pytest.mark.slow
def test_augmentation_preserves_pixels(dataset):
    ready = prepare_for_model(dataset["train"].select(range(4)), PRE, Augmenter(seed=0), cache=True)
    plain = prepare_for_model(dataset["train"].select(range(4)), PRE, None, cache=True)
    for i in range(4):
        x, y = ready[i]["pixel_values"], plain[i]["pixel_values"]
        assert np.allclose(np.sort(x.numpy().ravel()), np.sort(y.numpy().ravel()))


@pytest.mark.slow
def test_on_the_fly_decoding_in_threads_matches_one_thread(dataset, monkeypatch):
    """The uncached path decodes a batch with as many threads as torch uses; the pixels must not change."""
    import threading

    import torch

    subset = dataset["validation"].select(range(8))[:8]
    decoded_on = set()
    original_gray = Preprocessor.gray

    def recording_gray(self, source, name=None):
        decoded_on.add(threading.current_thread().name)
        return original_gray(self, source, name=name)

    monkeypatch.setattr(Preprocessor, "gray", recording_gray)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = np.stack(BPSTransform(PRE)(subset)["pixel_values"])
        assert not any(name.startswith("bps-decode") for name in decoded_on)
        torch.set_num_threads(2)
        threaded = np.stack(BPSTransform(PRE)(subset)["pixel_values"])
        assert torch.get_num_threads() == 2  # the transform gives the threads back
    finally:
        torch.set_num_threads(before)
    assert any(name.startswith("bps-decode") for name in decoded_on), decoded_on
    np.testing.assert_array_equal(serial, threaded)
