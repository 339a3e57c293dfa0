"""Runs cannot mix: a folder or checkpoint of another run is refused, --overwrite_output_dir clears it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bps_vit.provenance import (
    RunIdentity,
    RunMismatchError,
    check_output_dir,
    check_same_run,
    clear_run,
    data_fingerprint,
    weights_fingerprint,
)
from tests.support.tiny_models import TINY_CONFIG

IDENTITY = RunIdentity(data_fingerprint="a" * 64, model="configs/model/vit_tiny.json", image_size=None,
                       preprocessing={"low_percentile": 1.0})


def _old_run(folder: Path) -> None:
    (folder / "checkpoint-86").mkdir(parents=True)
    (folder / "explain" / "figures").mkdir(parents=True)
    (folder / "explain" / "explain_metrics.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"old weights")
    (folder / "notes.txt").write_text("mine")


def test_an_empty_or_missing_folder_is_fine(tmp_path):
    assert check_output_dir(tmp_path / "new", IDENTITY, overwrite=False, resume=False) is False
    assert check_output_dir(tmp_path, IDENTITY, overwrite=False, resume=False) is False


def test_a_folder_of_another_run_is_refused_with_the_three_ways_out(tmp_path):
    _old_run(tmp_path)
    with pytest.raises(RunMismatchError) as error:
        check_output_dir(tmp_path, IDENTITY, overwrite=False, resume=False)
    message = str(error.value)
    assert str(tmp_path) in message and "checkpoint-86" in message and "explain" in message
    assert "--overwrite_output_dir" in message and "--resume_from_checkpoint last" in message


def test_overwrite_clears_only_the_runs_files(tmp_path):
    _old_run(tmp_path)
    assert check_output_dir(tmp_path, IDENTITY, overwrite=True, resume=False) is True
    removed = clear_run(tmp_path)
    assert sorted(removed) == ["checkpoint-86", "explain", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    RunIdentity(data_fingerprint="b" * 64, model=IDENTITY.model, image_size=None,
                preprocessing=IDENTITY.preprocessing).write(checkpoint)
    with pytest.raises(RunMismatchError, match="data_fingerprint"):
        check_same_run(checkpoint, IDENTITY)
    IDENTITY.write(checkpoint)
    check_same_run(checkpoint, IDENTITY)
    with pytest.raises(RunMismatchError, match="no bps_run.json"):
        check_same_run(tmp_path / "elsewhere" / "checkpoint-2", IDENTITY)


def test_fingerprints_are_sha256_of_the_files(tmp_path):
    import hashlib

    (tmp_path / "model.safetensors").write_bytes(b"\x00weights" * 1000)
    (tmp_path / "manifest.csv").write_text("filename,split\na.tif,train\n")
    expected = hashlib.sha256(b"model.safetensors\x00" + b"\x00weights" * 1000).hexdigest()  # name, then bytes
    assert weights_fingerprint(tmp_path) == expected
    assert data_fingerprint(tmp_path) == hashlib.sha256(b"filename,split\na.tif,train\n").hexdigest()
    assert weights_fingerprint(tmp_path / "none") is None


def test_model_fingerprint_of_a_folder_and_of_a_hub_id_in_the_local_cache(tmp_path, monkeypatch):
    """The one fingerprint that predict and explain record: a folder's weights, or a cached Hub id's (no download)."""
    from huggingface_hub import constants

    from bps_vit.provenance import model_fingerprint

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"run weights")
    assert model_fingerprint(str(tmp_path / "run")) == weights_fingerprint(tmp_path / "run")
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--bps-vit" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"hub weights")
    (cache / "models--someone--bps-vit" / "refs").mkdir()
    (cache / "models--someone--bps-vit" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert model_fingerprint("someone/bps-vit") == weights_fingerprint(snapshot)
    assert model_fingerprint("someone/never-downloaded") is None


@pytest.mark.slow
def test_retrain_into_an_old_folder_refuses_then_overwrites_and_a_stale_resume_is_refused(prepared_dir, tmp_path):
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments, run_training

    tiny = TINY_CONFIG

    def args(**training):
        low = training.pop("low_percentile", 1.0)
        training = {"num_train_epochs": 1, **training}
        return (ModelArguments(config_name=tiny),
                DataArguments(data_dir=str(prepared_dir), max_train_samples=64, max_eval_samples=32,
                              low_percentile=low),
                BPSTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=32,
                                     eval_strategy="no", save_strategy="epoch", load_best_model_at_end=False,
                                     disable_tqdm=True, use_cpu=True, seed=1, **training))

    run_training(*args())
    assert json.loads((tmp_path / "bps_run.json").read_text())["data_fingerprint"] == data_fingerprint(prepared_dir)
    assert (tmp_path / "checkpoint-2" / "bps_run.json").is_file()
    first = weights_fingerprint(tmp_path)
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "explain_metrics.json").write_text("{}")

    with pytest.raises(RunMismatchError, match="holds an earlier run"):
        run_training(*args())
    assert weights_fingerprint(tmp_path) == first  # nothing was touched

    # A resume with other preprocessing is another run: refused before any training.
    with pytest.raises(RunMismatchError, match="preprocessing"):
        run_training(*args(resume_from_checkpoint="last", low_percentile=2.0))

    run_training(*args(overwrite_output_dir=True, num_train_epochs=2))
    assert not (tmp_path / "explain").exists()
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 4
