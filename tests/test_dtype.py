"""Inference in bf16: `--dtype` for predict and explain, checked against fp32 on a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.tiny_models import TINY_CONFIG

# bf16 keeps 8 bits of mantissa: logits of a tiny ViT move by ~1e-2, probabilities by less.
PROBABILITY_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def trained_model(prepared_dir, tmp_path_factory):
    from bps_vit.cli import parse_args
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments, run_training

    out = tmp_path_factory.mktemp("dtype") / "model"
    # run_training, not main(): main's logging setup would outlive this test and mute other tests' caplog
    run_training(*parse_args((ModelArguments, DataArguments, BPSTrainingArguments), [
        "--config_name", TINY_CONFIG, "--data_dir", str(prepared_dir),
        "--output_dir", str(out), "--num_train_epochs", "2", "--max_train_samples", "256",
        "--per_device_train_batch_size", "32", "--learning_rate", "0.001", "--eval_strategy", "no",
        "--save_strategy", "no", "--load_best_model_at_end", "false", "--disable_tqdm", "true", "--seed", "3",
    ]))
    return out


def _test_images(prepared_dir: Path, n: int = 48) -> list[Path]:
    return sorted((prepared_dir / "test").rglob("*.tif"))[:n]


def test_auto_is_fp32_on_cpu_and_unknown_names_are_refused():
    from bps_vit.model import resolve_inference_dtype

    assert resolve_inference_dtype("auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    assert resolve_inference_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="--dtype 'half'"):
        resolve_inference_dtype("half")


@pytest.mark.slow
def test_bf16_predictions_agree_with_fp32(trained_model, prepared_dir):
    from bps_vit.model import load_for_inference
    from bps_vit.predict import predict_paths

    paths = _test_images(prepared_dir)
    results = {}
    for dtype in ("float32", "bfloat16"):
        loaded = load_for_inference(str(trained_model), dtype=dtype)
        assert next(loaded.model.parameters()).dtype == getattr(torch, dtype)
        results[dtype] = predict_paths(loaded, paths, progress=False, num_workers=0)
    fp32 = np.array([p.probs for p in results["float32"]])
    bf16 = np.array([p.probs for p in results["bfloat16"]])
    assert fp32.std() > 0.05, "the model is too untrained for the comparison to mean anything"
    assert np.abs(fp32 - bf16).max() < PROBABILITY_TOLERANCE
    confident = np.abs(fp32[:, 0] - 0.5) > PROBABILITY_TOLERANCE
    assert (fp32.argmax(1) == bf16.argmax(1))[confident].all()


@pytest.mark.slow
def test_bf16_explanations_are_computed_in_fp32(trained_model, prepared_dir):
    from bps_vit.explain import GradientRollout
    from bps_vit.model import load_for_inference

    maps = {}
    for dtype in ("float32", "bfloat16"):
        loaded = load_for_inference(str(trained_model), dtype=dtype)
        pixels = loaded.preprocessor(_test_images(prepared_dir, 4))
        heatmaps = GradientRollout(loaded.model)(pixels)
        assert heatmaps.dtype in (np.float32, np.float64) and np.isfinite(heatmaps).all()
        maps[dtype] = torch.as_tensor(heatmaps, dtype=torch.float64)
    flat32, flat16 = maps["float32"].flatten(1), maps["bfloat16"].flatten(1)
    correlation = torch.nn.functional.cosine_similarity(flat32 - flat32.mean(1, keepdim=True),
                                                        flat16 - flat16.mean(1, keepdim=True))
    assert correlation.min() > 0.9
