"""What notebooks/bps_vit.ipynb needs beyond the package's own API: which training config of this checkout suits
this machine, the flags that swap its model for another backbone, and the faithfulness results as table rows.
Repository glue, so it sits beside the notebook, not in the installed package; no step logic lives here."""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bps_vit.results import ExplanationResults
from bps_vit.synthetic_config import CONDITIONS  # the BPS design: 17 conditions (particle x dose x hour)

CPU_CONFIG = "configs/demo.yaml"
GPU_CONFIG = "configs/bps_vit_base.yaml"
# (key in explain_metrics.json's "methods", column shown); the verdicts come from the same file.
FAITHFULNESS_KEYS = (
    "deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc", "randomization_spearman",
    "foci_mass", "foci_mass_baseline", "pointing_game", "pointing_game_baseline",
)


def train_config_for_device(
    checkout: str | os.PathLike,
    *,
    cuda_available: bool | None = None,
    capability: tuple[int, int] | None = None,
    has_tensorboard: bool | None = None,
) -> tuple[Path, list[str]]:
    """The README's two training setups: the tiny demo model on a CPU, ViT-base in bf16 on a GPU.

    Returns the config and the flags this machine needs on top of it: GPUs before Ampere (Colab's T4) have no
    native bf16, so they train in fp16; without tensorboard installed the GPU config's TensorBoard logging is off.
    """
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        return Path(checkout) / CPU_CONFIG, []
    if capability is None:
        capability = torch.cuda.get_device_capability()
    if has_tensorboard is None:
        has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    flags = [] if tuple(capability) >= (8, 0) else ["--bf16", "false", "--fp16", "true"]
    if not has_tensorboard:
        flags += ["--report_to", "none"]
    return Path(checkout) / GPU_CONFIG, flags


def backbone_flags(backbone: str | os.PathLike | None) -> list[str]:
    """Training flags that swap the training config's model for `backbone`: a config .json trains that architecture
    from scratch (`--config_name`); anything else, a Hub id of the README's architecture table (e.g.
    facebook/dinov2-small) or a saved model folder, is fine-tuned (`--model_name_or_path`, which on the command line
    replaces the config file's `config_name`). None keeps the config's model."""
    if not backbone:
        return []
    if str(backbone).endswith(".json"):
        return ["--config_name", str(backbone)]
    return ["--model_name_or_path", str(backbone)]


def images_per_condition(num_images: int) -> tuple[int, int]:
    """(images per condition, up to how many images in all) for about `num_images` real images: the s3 source takes a
    number per condition (--max_per_condition), shared here over the design's 17 conditions, as the synthetic
    source deals its total."""
    per_condition = max(1, math.ceil(num_images / len(CONDITIONS)))
    return per_condition, per_condition * len(CONDITIONS)


def progress_flags(widgets_installed: bool | None = None) -> list[str]:
    """`--disable_tqdm true` where a notebook cannot draw bars: tqdm draws them with ipywidgets, and without it every
    update of a bar becomes one more line of stderr (the decode, training and explain bars: hundreds of lines)."""
    if widgets_installed is None:
        widgets_installed = importlib.util.find_spec("ipywidgets") is not None
    return [] if widgets_installed else ["--disable_tqdm", "true"]


def faithfulness_rows(results: ExplanationResults) -> list[dict[str, Any]]:
    """One row per method of the explain step's results: each score beside its baseline, then the step's own
    yes/no verdicts (`beats_<check>`; None where it withheld one)."""
    if not results.methods:
        raise ValueError("the explain results hold no methods: pass what explain() returns "
                         "(or ExplanationResults.from_json(explain_metrics.json))")
    rows = []
    for name, summary in results.methods.items():
        row: dict[str, Any] = {"method": name, "title": summary.title}
        row.update({key: getattr(summary, key) for key in FAITHFULNESS_KEYS})
        row.update({f"beats_{check}": verdict for check, verdict in asdict(summary.beats_baseline).items()})
        rows.append(row)
    return rows
