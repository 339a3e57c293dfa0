"""The image-classification backbones bps-vit supports, and how each one lays out its tokens and reads them.

A Hugging Face user picks a backbone by name; transformers builds it from its config's `model_type`. What the
rest of bps-vit needs to know about it is here, read from the model's config and class, never assumed:

- `ARCHITECTURES`: the supported `model_type`s, their display names and the Hub id a user would pass. Anything
  else is refused by name (`supported_architecture`), before a model is built or downloaded.
- `TokenLayout` (`token_layout(model)`): the tokens before the patches (CLS, DeiT's distillation token,
  DINOv2's registers), the patch grid, and what the classification head pools: the CLS row (ViT, DeiT), the mean
  of CLS and distillation (DeiT with its distillation head), the mean of the patch rows (BEiT with
  `use_mean_pooling`, Swin), or CLS concatenated with the patch mean (DINOv2). Swin attends within windows and has
  no global token, so its attention matrices do not compose into token-to-token flow (`global_attention`).
- The encoder block whose input Grad-CAM reads (`last_block_norm`), and the classes FSDP wraps
  (`model._no_split_modules`, read by accelerate itself: see configs/accelerate/fsdp.yaml).
- Whether the classifier trains every parameter on every step (`every_parameter_trains`), so that DDP need not
  search the autograd graph for unused ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: What the classification head reads from the last layer's tokens.
Pooling = Literal["cls", "cls_distillation_mean", "patch_mean", "cls_and_patch_mean"]


@dataclass(frozen=True)
class Architecture:
    """One supported backbone family: its transformers `model_type`, a display name, the Hub id a user would pass,
    and its encoder block (class name, and the attribute of the norm that starts it: Grad-CAM's layer).

    `mask_token`: whether the image classifier holds a mask token (a parameter for masked-image pretraining that no
    classification forward uses): "never", "always", or the name of the config flag that adds it."""

    model_type: str
    name: str
    hub_id: str
    block_class: str
    block_norm: str = "layernorm_before"
    mask_token: str = "never"


ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    Architecture("vit", "ViT", "google/vit-base-patch16-224-in21k", "ViTLayer"),
    Architecture("deit", "DeiT", "facebook/deit-base-distilled-patch16-224", "DeiTLayer"),
    Architecture("beit", "BEiT", "microsoft/beit-base-patch16-224-pt22k-ft22k", "BeitLayer",
                 mask_token="use_mask_token"),
    Architecture("dinov2", "DINOv2", "facebook/dinov2-small", "Dinov2Layer", "norm1", mask_token="always"),
    Architecture("dinov2_with_registers", "DINOv2 with registers", "facebook/dinov2-with-registers-small",
                 "Dinov2WithRegistersLayer", "norm1", mask_token="always"),
    Architecture("swin", "Swin", "microsoft/swin-tiny-patch4-window7-224", "SwinLayer"),
)}


class UnsupportedArchitectureError(ValueError):
    """A `model_type` bps-vit does not build, train or explain; the message lists the ones it does."""


def supported_list() -> str:
    return ", ".join(ARCHITECTURES)


def supported_architecture(model_type: str | None, where: str) -> Architecture:
    """The `Architecture` of `model_type`, or `UnsupportedArchitectureError` naming `where` (a flag and its value)
    and every supported type. An image-classification architecture of transformers that bps-vit has not taught its
    explanations is refused too: its token layout is unknown, so nothing downstream could be trusted."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    from transformers.models.auto.modeling_auto import (  # deferred: transformers takes seconds to import
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    if not model_type:
        why = 'has no "model_type" (a transformers config.json names its architecture, e.g. "model_type": "vit")'
    elif model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        why = f"model_type {model_type!r} is an image classifier bps-vit has not been taught to explain"
    else:
        why = f"model_type {model_type!r} is not an image-classification architecture"
    raise UnsupportedArchitectureError(f"{where}: {why}; supported: {supported_list()}.")


def every_parameter_trains(config: Any) -> bool:
    """Whether the image classifier of `config` gives every trainable parameter a gradient on every training step.

    Then DDP need not walk the autograd graph after each forward to find the parameters without one. Measured per
    architecture by one backward pass (tests/test_ddp.py): ViT, DeiT (either head) and Swin classifiers train every
    parameter; DINOv2's embeddings always hold a mask token that classification never uses; BEiT holds one when its
    config sets `use_mask_token`. False for a model_type not in the table (not measured: DDP keeps its search)."""
    architecture = ARCHITECTURES.get(getattr(config, "model_type", None))
    if architecture is None or architecture.mask_token == "always":
        return False
    return architecture.mask_token == "never" or not getattr(config, architecture.mask_token, False)


def image_classification_class(config: Any):
    """The transformers class that `AutoModelForImageClassification` builds for `config`: the auto mapping's class,
    or, where the mapping lists several (DeiT: plain and with distillation head), the one `config.architectures`
    names, else the first (as transformers does; its own lookup fails on a config without `architectures`)."""
    import transformers  # deferred: as above
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES  # deferred

    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[config.model_type]
    names = (names,) if isinstance(names, str) else tuple(names)
    chosen = next((name for name in (getattr(config, "architectures", None) or []) if name in names), names[0])
    return getattr(transformers, chosen)


@dataclass(frozen=True)
class TokenLayout:
    """How one model's tokens are laid out and pooled, read from its config and class (`token_layout`)."""

    model_type: str
    model_class: str
    prefix: tuple[str, ...]  # the tokens before the patches, in order: "cls", "distillation", "register"
    pooling: Pooling
    patch_size: int
    global_attention: bool = True  # False for windowed attention (Swin): no token-to-token flow, no global token
    merges: int = 0  # patch-merging steps between the input grid and the last block's (Swin: stages - 1)

    @property
    def num_prefix(self) -> int:
        return len(self.prefix)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns at the input (the patch embedding's stride; Swin pads a partial patch)."""
        if self.merges:
            return -(-height // self.patch_size), -(-width // self.patch_size)
        return height // self.patch_size, width // self.patch_size

    def last_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns at the last encoder block (Swin halves them, rounding up, at each merge)."""
        rows, cols = self.grid(height, width)
        for _ in range(self.merges):
            rows, cols = (rows + 1) // 2, (cols + 1) // 2
        return rows, cols

    def head_weights(self, num_tokens: int, *, gradient_weighted: bool = False):
        """[num_tokens] weights of the last layer's token rows in what the head reads: e_0 for the CLS token,
        (e_0 + e_1) / 2 for CLS and distillation averaged, the mean over the patch rows, or, for CLS concatenated
        with the patch mean (two halves of one linear head), half each.

        `gradient_weighted`: 1 for every row the head reads. Rows that were weighted by the gradient of the target
        logit (gradient rollout) already carry how much the head reads each token (a patch of a mean is read 1/P),
        so weighting them again would count that twice."""
        import torch  # deferred: the table above is read without torch (argument checks)

        weights = torch.zeros(num_tokens, dtype=torch.float32)
        patches = slice(self.num_prefix, num_tokens)
        num_patches = num_tokens - self.num_prefix
        if self.pooling == "cls":
            weights[0] = 1.0
        elif self.pooling == "cls_distillation_mean":
            weights[:2] = 1.0 if gradient_weighted else 0.5
        elif self.pooling == "patch_mean":
            weights[patches] = 1.0 if gradient_weighted else 1.0 / num_patches
        else:  # cls_and_patch_mean
            weights[0] = 1.0 if gradient_weighted else 0.5
            weights[patches] = 1.0 if gradient_weighted else 0.5 / num_patches
        return weights


def _patch_size(config: Any) -> int:
    patch = config.patch_size
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def token_layout(model: Any) -> TokenLayout | None:
    """The token layout of a supported classifier, from its config and class; None for any other model (a plain
    torch module, an unsupported architecture): methods that need a layout refuse such a model by name."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        return None
    cls, patch = type(model).__name__, _patch_size(config)
    if model_type == "swin":
        return TokenLayout(model_type, cls, (), "patch_mean", patch, global_attention=False,
                           merges=len(config.depths) - 1)
    if model_type == "deit":
        pooling = "cls_distillation_mean" if cls.endswith("WithTeacher") else "cls"
        return TokenLayout(model_type, cls, ("cls", "distillation"), pooling, patch)
    if model_type == "beit":
        return TokenLayout(model_type, cls, ("cls",), "patch_mean" if config.use_mean_pooling else "cls", patch)
    if model_type.startswith("dinov2"):
        registers = ("register",) * int(getattr(config, "num_register_tokens", 0) or 0)
        return TokenLayout(model_type, cls, ("cls", *registers), "cls_and_patch_mean", patch)
    return TokenLayout(model_type, cls, ("cls",), "cls", patch)


def describe(layout: TokenLayout) -> str:
    """One line for logs and the card: the architecture, its prefix tokens and what the head reads."""
    heads = {"cls": "the CLS token", "cls_distillation_mean": "the mean of the CLS and distillation heads",
             "patch_mean": "the mean of the patch tokens", "cls_and_patch_mean": "CLS concatenated with the patch mean"}
    prefix = ", ".join(f"{layout.prefix.count(name)} {name}" for name in dict.fromkeys(layout.prefix)) or "none"
    attention = "" if layout.global_attention else "; attention within windows"
    return (f"{ARCHITECTURES[layout.model_type].name} ({layout.model_class}): tokens before the patches: {prefix}; "
            f"the head reads {heads[layout.pooling]}{attention}")


def encoder_blocks(model: Any) -> list:
    """The encoder blocks of a supported model, first to last (Swin's across its stages); [] for any other model."""
    architecture = ARCHITECTURES.get(getattr(getattr(model, "config", None), "model_type", None))
    if architecture is None:
        return []
    return [module for module in model.modules() if type(module).__name__ == architecture.block_class]


def last_block_norm(model: Any):
    """The norm that opens the last encoder block (its output: every token the block's attention mixes, before the
    head pools them): where Grad-CAM reads activations and gradients, as pytorch-grad-cam's ViT and Swin examples do
    (`blocks[-1].norm1`). None for an unsupported model."""
    blocks = encoder_blocks(model)
    if not blocks:
        return None
    return getattr(blocks[-1], ARCHITECTURES[model.config.model_type].block_norm, None)
