"""Training: learns, reports honest metrics, and every checkpoint reload restores every weight."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bps_vit.provenance import weights_fingerprint
from bps_vit.results import RunResults
from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments, run_training
from bps_vit.trainer import load_checkpoint_weights

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "model" / "vit_tiny.json")


def _args(data_dir: Path, output_dir: Path, **overrides):
    model_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in ModelArguments.__dataclass_fields__}
    data_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in DataArguments.__dataclass_fields__}
    training = dict(
        output_dir=str(output_dir), num_train_epochs=3, per_device_train_batch_size=32, per_device_eval_batch_size=64,
        learning_rate=1e-3, warmup_steps=0.1, lr_scheduler_type="cosine", logging_steps=5, seed=7,
        save_total_limit=None, disable_tqdm=True, use_cpu=True,
    )
    training.update(overrides)
    return (
        ModelArguments(config_name=model_kwargs.pop("config_name", TINY), **model_kwargs),
        DataArguments(data_dir=str(data_dir), **data_kwargs),
        BPSTrainingArguments(**training),
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Tensors as loaded by a user (from_pretrained), keyed by module name."""
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(folder).state_dict()


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def trained_run(prepared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = run_training(*_args(prepared_dir, out, num_train_epochs=4))
    return out, results


def test_training_learns_and_writes_every_artifact(trained_run):
    out, results = trained_run
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "all_results.json",
                 "train_results.json", "eval_results.json", "test_results.json", "bps_results.json",
                 "figures/confusion_matrix.png", "figures/training_curves.png"):
        assert (out / name).is_file(), name
    test_results = json.loads((out / "test_results.json").read_text())
    assert test_results["test_accuracy"] > 0.8, test_results
    test = results.splits["test"]
    assert test.accuracy == pytest.approx(test_results["test_accuracy"])
    assert test.loss == pytest.approx(test_results["test_loss"], rel=1e-4)  # the Trainer's loss, from probabilities
    assert sum(map(sum, test.confusion_matrix)) == test.n
    assert results.baseline.accuracy <= 0.65
    conditions = {row.condition for row in test.per_condition}
    assert conditions and all("Gy" in c for c in conditions)
    assert sum(row.n for row in test.per_condition) == test.n
    assert results.sham_control.n > 0 and results.sham_control.interpretation
    assert RunResults.from_json(out / "bps_results.json") == results  # the file round-trips through the schema
    assert results.model_fingerprint == weights_fingerprint(out) and len(results.model_fingerprint) == 64
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "Fe", "1": "X-ray"}
    preprocessing = json.loads((out / "preprocessor_config.json").read_text())["bps_preprocessing"]
    assert preprocessing == {"low_percentile": 1.0, "high_percentile": 99.8, "clip": None, "transfer": "linear",
                             "transfer_gain": 10.0}


def test_final_model_equals_best_checkpoint_tensor_by_tensor(trained_run):
    out, results = trained_run
    best = out / results.training.best_model_checkpoint
    assert best.is_dir()
    _assert_same_weights(_weights(out), _weights(best))


def test_saved_model_loads_with_eager_attention_and_returns_attentions(trained_run):
    from bps_vit.model import load_for_inference

    model = load_for_inference(trained_run[0]).model
    outputs = model(pixel_values=torch.zeros(1, 3, 64, 64), output_attentions=True)
    assert len(outputs.attentions) == model.config.num_hidden_layers


def test_strict_reload_restores_all_tensors_where_a_plain_state_dict_load_would_not(trained_run, tmp_path):
    """Load a checkpoint into a freshly initialised model: every tensor must come back."""
    from bps_vit.model import build_model_from_config

    out, results = trained_run
    checkpoint = out / results.training.best_model_checkpoint
    fresh = build_model_from_config(TINY)
    on_disk = load_file(checkpoint / "model.safetensors")
    naive = fresh.load_state_dict(on_disk, strict=False)
    load_checkpoint_weights(fresh, checkpoint)
    _assert_same_weights(fresh.state_dict(), _weights(checkpoint))
    # Record what the Trainer's own non-strict reload would have missed with this transformers version.
    print(f"non-strict load would miss {len(naive.missing_keys)} of {len(fresh.state_dict())} tensors")


def test_from_pretrained_with_a_different_head(prepared_dir, tmp_path):
    """A local 'pretrained' checkpoint with 5 classes gets a fresh 2-class head; the body is kept."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(**{k: v for k, v in json.loads(Path(TINY).read_text()).items() if k != "model_type"},
                       num_labels=5)
    pretrained = ViTForImageClassification(config)
    pretrained.save_pretrained(tmp_path / "pretrained")
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "pretrained")
    results = run_training(*_args(prepared_dir, tmp_path / "out", config_name=None,
                                  model_name_or_path=str(tmp_path / "pretrained"), num_train_epochs=1,
                                  max_train_samples=64, max_eval_samples=32))
    model = ViTForImageClassification.from_pretrained(tmp_path / "out")
    assert model.config.id2label == {0: "Fe", 1: "X-ray"} and model.classifier.out_features == 2
    assert results.model.model_name_or_path == str(tmp_path / "pretrained")
    assert results.model.base_model is None  # a local folder is no Hub base model: the card names none

    from bps_vit.model import load_classifier

    fresh = load_classifier(tmp_path / "pretrained")
    assert torch.equal(fresh.vit.embeddings.cls_token, pretrained.vit.embeddings.cls_token)


def test_the_dataset_clip_is_pooled_from_the_training_images(tmp_path):
    """--stretch_mode dataset: the clip saved with the model is the pooled p1 and p99.8 of the training images'
    pixels, computed here by numpy over all of them (linear interpolation). Validation and test images are made
    three times brighter, so a clip pooled from them, or from every split, would differ."""
    import numpy as np
    import tifffile
    from explain_fixtures import make_prepared_folder

    data = make_prepared_folder(tmp_path / "bps", {"train": 4, "validation": 3, "test": 3}, seed=5)
    for split in ("validation", "test"):
        for path in (data / split).glob("*/*.tif"):
            tifffile.imwrite(path, np.clip(tifffile.imread(path).astype(np.int64) * 3, 0, 65535).astype(np.uint16))
    run_training(*_args(data, tmp_path / "out", num_train_epochs=1, stretch_mode="dataset", low_percentile=1.0,
                        high_percentile=99.8, eval_strategy="no", save_strategy="no", load_best_model_at_end=False))
    saved = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())["bps_preprocessing"]["clip"]
    train_pixels = np.concatenate([tifffile.imread(p).ravel() for p in (data / "train").glob("*/*.tif")])
    expected = np.percentile(train_pixels.astype(np.float64), [1.0, 99.8])
    np.testing.assert_allclose(saved, expected, rtol=1e-9)
    everything = np.concatenate([tifffile.imread(p).ravel() for p in data.glob("*/*/*.tif")])
    assert abs(np.percentile(everything, 99.8) - expected[1]) > 100  # the check can tell the splits apart


def test_the_base_model_is_the_hub_id_a_checkpoint_was_loaded_by(tmp_path):
    from bps_vit.model import hub_id_of

    assert hub_id_of("google/vit-base-patch16-224-in21k") == "google/vit-base-patch16-224-in21k"
    assert hub_id_of(tmp_path) is None  # from_pretrained reads a local folder first


def test_missing_data_folder_says_which_command_creates_it(tmp_path):
    from bps_vit.data import DataError

    with pytest.raises(DataError, match="prepare_data.py"):
        run_training(*_args(tmp_path / "nowhere", tmp_path / "out"))


def test_split_without_a_class_is_refused(prepared_dir, tmp_path):
    import shutil

    from bps_vit.data import DataError

    broken = tmp_path / "bps"
    shutil.copytree(prepared_dir, broken)
    shutil.rmtree(broken / "validation" / "X-ray")
    with pytest.raises(DataError, match=r"validation.*X-ray|X-ray.*validation"):
        run_training(*_args(broken, tmp_path / "out"))


def test_unknown_label_folder_is_refused(prepared_dir, tmp_path):
    import shutil

    from bps_vit.data import DataError

    broken = tmp_path / "bps"
    shutil.copytree(prepared_dir, broken)
    (broken / "test" / "Xray").mkdir()
    with pytest.raises(DataError, match="unknown label folder"):
        run_training(*_args(broken, tmp_path / "out"))


def test_unreachable_model_fails_fast_offline(prepared_dir, tmp_path, monkeypatch):
    from bps_vit.model import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="local folder"):
        run_training(*_args(prepared_dir, tmp_path, config_name=None,
                            model_name_or_path="google/vit-base-patch16-224-in21k"))
    assert time.monotonic() - start < 10


def test_push_to_hub_without_token_fails_before_training(prepared_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(SystemExit, match="token"):
        run_training(*_args(prepared_dir, tmp_path / "out", push_to_hub=True, hub_model_id="me/bps"))
    assert not (tmp_path / "out").exists()


def test_pickle_only_model_folder_is_refused(tmp_path):
    from bps_vit.model import ModelLoadError, ensure_resolvable

    (tmp_path / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        ensure_resolvable(str(tmp_path))


def test_config_file_plus_cli_override(tmp_path):
    from bps_vit.cli import parse_args

    config = tmp_path / "c.yaml"
    config.write_text("data_dir: somewhere\nnum_train_epochs: 5\nconfig_name: x.json\n")
    model_args, data_args, training_args = parse_args(
        (ModelArguments, DataArguments, BPSTrainingArguments), [str(config), "--num_train_epochs", "2"]
    )
    assert (data_args.data_dir, training_args.num_train_epochs, model_args.config_name) == ("somewhere", 2, "x.json")
    assert training_args.remove_unused_columns is False
