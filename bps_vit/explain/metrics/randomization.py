"""Model randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): re-initialise the weights and
explain again. A map that still looks the same (high Spearman rank correlation) describes the image, not the model.
"""

from __future__ import annotations

import copy
from typing import Literal, get_args

import numpy as np
import torch
from scipy.stats import spearmanr

from ...backbones import encoder_blocks
from ..methods.base import model_device

Randomization = Literal["all", "classifier", "cascade", "none"]
#: Learned parameters outside Linear, Conv2d and LayerNorm modules that carry what a model learned
LEARNED_TOKENS = ("cls_token", "position_embeddings", "distillation_token", "register_tokens", "mask_token",
                  "relative_position_bias_table")

RANDOMIZATIONS: tuple[str, ...] = get_args(Randomization)


def _reinit_module(module: torch.nn.Module, std: float, generator: torch.Generator) -> None:
    for child in module.modules():
        if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
            with torch.no_grad():
                child.weight.copy_(torch.randn(child.weight.shape, generator=generator) * std)
                if child.bias is not None:
                    child.bias.zero_()
        elif isinstance(child, torch.nn.LayerNorm):
            child.reset_parameters()
        for name in LEARNED_TOKENS:
            param = getattr(child, name, None)
            if isinstance(param, torch.nn.Parameter):
                with torch.no_grad():
                    param.copy_(torch.randn(param.shape, generator=generator).clamp_(-2, 2) * std)

def _blocks_from_top(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Stages for cascading randomisation: the head (every module outside the backbone: the classifier, or DeiT's
    two; with the backbone's final norm and pooler), then the encoder blocks from the last to the first, then the
    embeddings."""
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    head = [child for child in model.children() if child is not backbone]
    head += [getattr(backbone, "layernorm", None), getattr(backbone, "pooler", None)]
    stages: list[torch.nn.Module] = [torch.nn.ModuleList([m for m in head if isinstance(m, torch.nn.Module)])]
    stages += list(reversed(encoder_blocks(model)))
    if isinstance(getattr(backbone, "embeddings", None), torch.nn.Module):
        stages.append(backbone.embeddings)
    return stages

def randomized_copy(model: torch.nn.Module, seed: int = 0, num_stages: int | None = None) -> torch.nn.Module:
    """A copy of `model` with re-initialised weights, cascading from the top.

    num_stages: None = every weight; 1 = the classifier head (with the final norm); k = the head
    plus the top k-1 encoder blocks. Seeded, so every process builds the same random model.
    """
    clone = copy.deepcopy(model).eval()
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(int(seed))
    stages = _blocks_from_top(clone)
    if num_stages is None:
        _reinit_module(clone, std, generator)
    else:
        for stage in stages[:num_stages]:
            _reinit_module(stage, std, generator)
    return clone.to(model_device(model))

def num_cascade_stages(model: torch.nn.Module) -> int:
    return len(_blocks_from_top(model))

def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (NaN when either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
