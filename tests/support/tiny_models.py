"""Tiny models, each built one way for one purpose. torch and transformers are imported inside the functions, so that
a bench or a fast test importing a config path pays nothing for them.

- `TINY_CONFIG` (64 px ViT) and `MINI_CONFIG` (128 px ViT): the repository's small model configs, as the command
  line takes them (a str goes into an argv list and into `build_model_from_config` alike).
- `save_tiny_model`: a random-init tiny ViT saved as training saves it (safetensors + processor with the stretch);
  instant. For tests of loading, prediction and the app, where the weights do not matter.
- `train_tiny_model`: the tiny ViT trained a few dozen mini-batch steps on a prepared folder, so that its
  explanations have something to explain.
- `fit_tiny_model`: the tiny ViT fitted a few full-batch steps on a handful of images (the publishing tests' run).
- `tiny_configs` / `write_config`: one tiny transformers config per supported architecture (ViT, DeiT with its
  distillation head, BEiT with mean pooling, DINOv2, DINOv2 with registers, Swin), all at 32 px, built with
  transformers' own config classes (no downloads), so that a test trains, predicts and explains each in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .paths import REPO

TINY_CONFIG = str(REPO / "configs" / "model" / "vit_tiny.json")
MINI_CONFIG = str(REPO / "configs" / "model" / "vit_mini.json")
#: the tiny models' labels, written out here (not read from bps_vit) so tests compare against an independent value
LABELS = ("Fe", "X-ray")


def save_tiny_model(folder: Path, seed: int = 3) -> Path:
    """A random-init tiny ViT saved as training saves it (safetensors + processor with the stretch): instant."""
    import torch
    from transformers import ViTImageProcessor

    from bps_vit.imaging import Stretch
    from bps_vit.model import build_model_from_config

    torch.manual_seed(seed)
    model = build_model_from_config(TINY_CONFIG, labels=LABELS)
    model.save_pretrained(folder)
    Stretch(low_percentile=1.0, high_percentile=99.0).attach_to(
        ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ).save_pretrained(folder)
    return folder


def train_tiny_model(data_dir: Path, out_dir: Path, steps: int = 80, seed: int = 0) -> Path:
    """Train the tiny ViT on data_dir/train (batches of 16, random flips) and save it like the training step does."""
    import torch
    from transformers import ViTImageProcessor

    from bps_vit.imaging import Preprocessor, Stretch
    from bps_vit.model import build_model_from_config

    torch.manual_seed(seed)
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    Stretch().attach_to(processor)
    preprocessor = Preprocessor.from_processor(processor)
    paths, targets = [], []
    for target, label in enumerate(LABELS):
        for path in sorted((data_dir / "train" / label).glob("*.tif")):
            paths.append(path)
            targets.append(target)
    pixels = preprocessor(paths)
    labels = torch.tensor(targets)
    model = build_model_from_config(TINY_CONFIG, labels=LABELS, attn_implementation="eager")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randperm(len(paths), generator=generator)[:16]
        flips = torch.rand(4, generator=generator)
        x = pixels[batch]
        x = torch.flip(x, dims=[-1]) if flips[0] > 0.5 else x
        x = torch.flip(x, dims=[-2]) if flips[1] > 0.5 else x
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def fit_tiny_model(paths: Sequence[Path], targets: Sequence[int], folder: Path, steps: int = 4, seed: int = 0):
    """The tiny ViT fitted `steps` full-batch AdamW steps on `paths` (label ids `targets`) and saved into `folder`
    with a 0.5-99.5 percentile stretch; returns (model, processor)."""
    import torch
    from transformers import ViTImageProcessor

    from bps_vit.imaging import Preprocessor, Stretch
    from bps_vit.model import build_model_from_config

    torch.manual_seed(seed)
    model = build_model_from_config(TINY_CONFIG)
    processor = Stretch(low_percentile=0.5, high_percentile=99.5).attach_to(
        ViTImageProcessor(size={"height": 64, "width": 64})
    )
    pixels = Preprocessor.from_processor(processor)([str(p) for p in paths])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = model(pixel_values=pixels, labels=torch.tensor(list(targets))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


# ----------------------------------------------------------------------------- one tiny config per architecture

BACKBONE_SIZE = 32
_BODY = dict(image_size=BACKBONE_SIZE, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_configs() -> dict:
    """architecture id -> a transformers config (one per row of the README's architecture table)."""
    import transformers as tf

    return {
        "vit": tf.ViTConfig(**_BODY),
        "deit_distilled": tf.DeiTConfig(**_BODY, architectures=["DeiTForImageClassificationWithTeacher"]),
        "beit_mean_pooling": tf.BeitConfig(**_BODY, use_mean_pooling=True),
        "dinov2": tf.Dinov2Config(**_BODY),
        "dinov2_with_registers": tf.Dinov2WithRegistersConfig(**_BODY, num_register_tokens=2),
        "swin": tf.SwinConfig(image_size=BACKBONE_SIZE, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1],
                              num_heads=[2, 2], window_size=4, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0),
    }


ARCHITECTURE_IDS = ("vit", "deit_distilled", "beit_mean_pooling", "dinov2", "dinov2_with_registers", "swin")
#: the class each one must build (DeiT: the distillation head its config names)
EXPECTED_CLASS = {
    "vit": "ViTForImageClassification",
    "deit_distilled": "DeiTForImageClassificationWithTeacher",
    "beit_mean_pooling": "BeitForImageClassification",
    "dinov2": "Dinov2ForImageClassification",
    "dinov2_with_registers": "Dinov2WithRegistersForImageClassification",
    "swin": "SwinForImageClassification",
}


def write_config(name: str, folder: Path) -> Path:
    """The config of architecture `name` as a user would pass it to --config_name: transformers' own JSON of it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tiny_configs()[name].to_json_file(path)
    assert json.loads(path.read_text())["model_type"]  # transformers writes the architecture into the file
    return path
