"""Splitting inference work (predict, explain) across processes started by accelerate or torchrun."""

from __future__ import annotations

import os


def distributed_state():
    """accelerate's `PartialState`, correct on CPU-only machines too.

    A CPU-only multi-process launch (`torchrun`, or `accelerate launch --multi_gpu` without GPUs)
    needs `cpu=True`; without it every process believes it is alone and does all the work.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (world_size > 1 and not torch.cuda.is_available())
    return PartialState(cpu=cpu)
