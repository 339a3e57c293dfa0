"""Tiny models of every supported architecture, built with transformers' own config classes (no downloads).

One row per row of the README's architecture table: ViT, DeiT with its distillation head, BEiT with mean pooling,
DINOv2, DINOv2 with registers and Swin, all at 32 px so that a test trains, predicts and explains them in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

SIZE = 32
_BODY = dict(image_size=SIZE, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_configs() -> dict:
    """architecture id -> a transformers config (one per row of the README table)."""
    import transformers as tf

    return {
        "vit": tf.ViTConfig(**_BODY),
        "deit_distilled": tf.DeiTConfig(**_BODY, architectures=["DeiTForImageClassificationWithTeacher"]),
        "beit_mean_pooling": tf.BeitConfig(**_BODY, use_mean_pooling=True),
        "dinov2": tf.Dinov2Config(**_BODY),
        "dinov2_with_registers": tf.Dinov2WithRegistersConfig(**_BODY, num_register_tokens=2),
        "swin": tf.SwinConfig(image_size=SIZE, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1],
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
    """The config as a user would pass it to --config_name: transformers' own JSON of it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tiny_configs()[name].to_json_file(path)
    assert json.loads(path.read_text())["model_type"]  # transformers writes the architecture into the file
    return path
