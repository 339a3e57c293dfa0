"""Every supported backbone, end to end: a tiny ViT, DeiT (distilled), BEiT (mean pooling), DINOv2, DINOv2 with
registers and Swin, each written with transformers' own config class and passed as `--config_name`, trains one
epoch, keeps its architecture, reloads strictly, predicts, explains with every method it supports (the others
refused by name) and publishes a card that names it. Unsupported architectures are refused with one error line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments, run_training
from tests.support.paths import REPO
from tests.support.tiny_models import ARCHITECTURE_IDS, EXPECTED_CLASS, tiny_configs, write_config
from tests.support.tiny_models import BACKBONE_SIZE as SIZE

ALL_METHODS = ("rollout", "grad_rollout", "gradcam", "shap")
#: what each architecture can be explained with, by hand from its layout (Swin: windowed attention, no CLS)
SUPPORTED = {name: ALL_METHODS for name in ARCHITECTURE_IDS} | {"swin": ("gradcam", "shap")}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(data_dir: Path, out: Path, **model) -> object:
    return run_training(
        ModelArguments(**model),
        DataArguments(data_dir=str(data_dir)),  # every image: a truncated split would hold one class
        BPSTrainingArguments(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=32,
                             per_device_eval_batch_size=64, learning_rate=1e-3, seed=3, disable_tqdm=True,
                             use_cpu=True, report_to="none"),
    )


@pytest.fixture(scope="module", params=ARCHITECTURE_IDS)
def trained(request, prepared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    config = write_config(request.param, root)
    results = _train(prepared_dir, root / "run", config_name=str(config))
    return request.param, root / "run", results


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tensor_digests(tensors: dict[str, torch.Tensor]) -> list[tuple]:
    """Every tensor by shape and bytes, names left out (modules are renamed between disk and memory)."""
    return sorted((tuple(t.shape), hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest())
                  for t in tensors.values())


@pytest.mark.slow
def test_training_keeps_the_architecture_and_every_weight_reloads(trained):
    from bps_vit.model import build_model_from_config
    from bps_vit.trainer import load_checkpoint_weights

    name, out, results = trained
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == tiny_configs()[name].model_type
    assert config["architectures"] == [EXPECTED_CLASS[name]]
    assert results.model.architecture == config["model_type"] and results.model.model_class == EXPECTED_CLASS[name]
    written = json.loads((out / "bps_results.json").read_text())["model"]
    assert (written["architecture"], written["model_class"]) == (config["model_type"], EXPECTED_CLASS[name])
    # the final weights are the best checkpoint's, tensor by tensor, as saved
    best = out / results.training.best_model_checkpoint
    final, kept = load_file(out / "model.safetensors"), load_file(best / "model.safetensors")
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in final)
    # the strict reload the Trainer uses restores every tensor on disk into a fresh model of this architecture
    fresh = build_model_from_config(config)
    assert type(fresh).__name__ == EXPECTED_CLASS[name]
    assert _tensor_digests(fresh.state_dict()) != _tensor_digests(kept)
    load_checkpoint_weights(fresh, best)
    assert _tensor_digests(fresh.state_dict()) == _tensor_digests(kept)


@pytest.mark.slow
def test_predict_gives_the_models_own_probabilities(trained, prepared_dir):
    from bps_vit.model import load_for_inference
    from bps_vit.predict import predict_paths

    _, out, _ = trained
    loaded = load_for_inference(out)
    paths = sorted((prepared_dir / "test" / "Fe").glob("*.tif"))[:2] + sorted((prepared_dir / "test" / "X-ray").glob(
        "*.tif"))[:2]
    predictions = predict_paths(loaded, paths, progress=False)
    assert [p.ok for p in predictions] == [True] * 4
    with torch.no_grad():  # the same pixels straight through the model, without predict's batching and CSV path
        direct = loaded.model(pixel_values=loaded.preprocessor(paths)).logits.softmax(-1).numpy()
    np.testing.assert_allclose(np.array([p.probs for p in predictions]), direct, atol=1e-5)


@pytest.mark.slow
def test_every_supported_method_makes_finite_maps_at_the_input_size(trained, prepared_dir):
    from bps_vit.explain.image import explain_image
    from bps_vit.explain.methods.registry import supported_methods
    from bps_vit.explain.methods.shap import ShapSettings
    from bps_vit.model import load_for_inference

    name, out, _ = trained
    loaded = load_for_inference(out)
    assert tuple(supported_methods(loaded.model)) == SUPPORTED[name]
    image = sorted((prepared_dir / "test" / "Fe").glob("*.tif"))[0]
    explained = explain_image(loaded, image, methods=SUPPORTED[name], shap=ShapSettings(max_evals=20))
    maps = dict(explained.heatmaps)
    if "shap" in SUPPORTED[name]:
        maps["shap"] = explained.shap_values[explained.target]
    assert sorted(maps) == sorted(SUPPORTED[name])
    for method, heatmap in maps.items():
        assert heatmap.shape == (SIZE, SIZE) and np.isfinite(heatmap).all(), method
        # Grad-CAM keeps only positive evidence (its ReLU), so an image without any at the last block is all zero
        assert np.ptp(heatmap) > 0 or (method == "gradcam" and not heatmap.any()), f"{method} gave a flat map"


@pytest.mark.slow
def test_the_explain_step_runs_what_it_can_and_refuses_the_rest_by_name(trained, prepared_dir, tmp_path, caplog,
                                                                         capsys):
    from bps_vit.explain.run import ExplainArguments, explain
    from bps_vit.results import ExplanationResults

    name, out, _ = trained
    args = ExplainArguments(model=str(out), data_dir=str(prepared_dir), num_images=2, batch_size=2,
                            methods=",".join(ALL_METHODS), shap_max_evals=20, faithfulness_steps=2,
                            randomization="none", max_figures=1, output_dir=str(tmp_path / "explain"))
    results = explain(args)
    assert tuple(results.methods) == SUPPORTED[name]
    refused = sorted(set(ALL_METHODS) - set(SUPPORTED[name]))
    assert sorted(results.refused_methods) == refused
    for method in refused:
        reason = results.refused_methods[method]
        assert reason.startswith(f"{method} (") and "windows" in reason and "methods that can: gradcam, shap" in reason
        assert any(record.getMessage() == f"refused: {reason}" for record in caplog.records)
    for method, summary in results.methods.items():
        assert np.isfinite(summary.deletion_auc) and np.isfinite(summary.insertion_auc), method
    assert ExplanationResults.from_json(tmp_path / "explain" / "explain_metrics.json") == results
    assert (tmp_path / "explain" / "figures" / "explanations.png").is_file()
    if refused:  # asked for nothing it can run: a usage error naming the reasons, nothing written
        code = _script("explain").main(["--model", str(out), "--data_dir", str(prepared_dir), "--methods",
                                        ",".join(refused), "--output_dir", str(tmp_path / "refused")])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and error.startswith(f"error: --methods '{','.join(refused)}': {refused[0]} (")
        assert error.endswith("methods that can: gradcam, shap") and not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_the_app_offers_and_draws_only_the_methods_the_model_supports(trained, prepared_dir):
    from bps_vit.app import build_blocks, handle_upload, load_app_model

    name, out, _ = trained
    app = load_app_model(str(out))
    assert app.pictures == ("model_view", *SUPPORTED[name])
    image = sorted((prepared_dir / "test" / "X-ray").glob("*.tif"))[0]
    call, *rest = handle_upload(app, [str(image)], shap=False)
    pictures = dict(zip(app.pictures, rest))
    assert abs(sum(call.values()) - 1) < 1e-5 and "Explained" in rest[len(app.pictures)]
    for key in ("model_view", *(m for m in SUPPORTED[name] if m != "shap")):  # SHAP waits for its checkbox
        assert pictures[key] is not None and pictures[key].dtype == np.uint8, key
    # the page itself: one picture per supported method, none for a refused one
    blocks = build_blocks(app)
    shown = [block.elem_id for block in blocks.blocks.values() if (block.elem_id or "").startswith("img-")]
    assert shown == [f"img-{key}" for key in ("model_view", *SUPPORTED[name])]


@pytest.mark.slow
def test_a_dry_run_publish_card_names_the_architecture(trained, tmp_path):
    from bps_vit.backbones import ARCHITECTURES
    from bps_vit.publish import PublishArguments, run_publish

    name, out, _ = trained
    model_type = tiny_configs()[name].model_type
    run_publish(PublishArguments(model=str(out), dry_run=True, export_dir=str(tmp_path / "export")))
    card = (tmp_path / "export" / "README.md").read_text()
    assert f"Architecture: **{ARCHITECTURES[model_type].name}** (`{EXPECTED_CLASS[name]}`" in card
    assert f"- {model_type}\n" in card.split("---")[1]  # the architecture's tag in the card's metadata
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported["model_type"] == model_type


# --------------------------------------------------------------------------- loading by architecture


@pytest.mark.slow
def test_a_local_checkpoint_of_another_architecture_is_fine_tuned_with_its_processor_made_square(
        prepared_dir, tmp_path):
    """A DINOv2 folder with its Bit processor (resize the short side, then centre-crop) trains at the crop's size,
    and the saved processor says what the model was fed: a square resize, no crop."""
    from transformers import BitImageProcessor, Dinov2ForImageClassification

    config = tiny_configs()["dinov2"]
    config.num_labels = 5
    Dinov2ForImageClassification(config).save_pretrained(tmp_path / "pretrained")
    BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": SIZE, "width": SIZE}).save_pretrained(
        tmp_path / "pretrained")
    results = _train(prepared_dir, tmp_path / "run", model_name_or_path=str(tmp_path / "pretrained"))
    assert (results.model.architecture, results.model.model_class) == ("dinov2", "Dinov2ForImageClassification")
    processor = json.loads((tmp_path / "run" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": SIZE, "width": SIZE} and processor["do_center_crop"] is False
    assert results.model.image_size == SIZE


@pytest.mark.parametrize("config, words", [
    ({"model_type": "convnext"}, "model_type 'convnext' is an image classifier bps-vit has not been taught to explain"),
    ({"model_type": "bert"}, "model_type 'bert' is not an image-classification architecture"),
    ({"hidden_size": 16}, 'has no "model_type" (a transformers config.json names its architecture, e.g. '
                          '"model_type": "vit")'),
])
@pytest.mark.slow
def test_an_unsupported_architecture_is_refused_with_one_line_listing_the_supported(
        config, words, prepared_dir, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = _script("train").run(["--config_name", str(path), "--data_dir", str(prepared_dir),
                                 "--output_dir", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (f"error: --config_name {path}: {words}; supported: vit, deit, beit, dinov2, "
                        "dinov2_with_registers, swin.")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_hub_style_checkpoint_of_an_unsupported_architecture_is_refused_before_its_weights(tmp_path):
    from transformers import ConvNextConfig

    from bps_vit.model import ModelLoadError, load_classifier

    ConvNextConfig(num_labels=2).save_pretrained(tmp_path / "convnext")  # an image classifier's config.json
    (tmp_path / "convnext" / "model.safetensors").write_bytes(b"not read")  # a weights read would fail otherwise
    with pytest.raises(ModelLoadError, match=r"model_type 'convnext' .* supported: vit, deit, beit, dinov2, "):
        load_classifier(tmp_path / "convnext")


@pytest.mark.parametrize("model_type, config_kwargs, cls, prefix", [
    ("beit", {"use_mean_pooling": False}, "BeitForImageClassification", ("cls",)),
    ("deit", {}, "DeiTForImageClassification", ("cls", "distillation")),
])
def test_the_variants_without_a_row_of_their_own_read_the_cls_token(model_type, config_kwargs, cls, prefix):
    """BEiT without mean pooling and DeiT without its distillation head: their heads read the CLS row alone (the
    distillation token is still in the sequence, before the patches)."""
    from transformers import AutoConfig

    from bps_vit.backbones import token_layout
    from bps_vit.model import build_model_from_config

    config = AutoConfig.for_model(model_type, image_size=SIZE, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, **config_kwargs)
    model = build_model_from_config(config.to_dict())
    layout = token_layout(model)
    assert (type(model).__name__, layout.prefix, layout.pooling) == (cls, prefix, "cls")
    assert layout.head_weights(len(prefix) + 16).tolist() == [1.0] + [0.0] * (len(prefix) + 15)
