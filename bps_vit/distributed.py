"""Multi-process launches (accelerate, torchrun) on machines with and without GPUs."""

from __future__ import annotations

import os


def launched_processes() -> int:
    """How many processes the launcher started (1 under plain `python`)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def accelerator_available() -> bool:
    """A device that DDP would run on instead of the CPU (CUDA, or another torch accelerator)."""
    import torch  # deferred: torch and accelerate load only when the process state is asked for

    if torch.cuda.is_available():
        return True
    accelerator = getattr(torch, "accelerator", None)
    return bool(accelerator is not None and accelerator.is_available())


def multi_process_on_cpu() -> bool:
    """True for a CPU-only multi-process launch (`torchrun`, or `accelerate launch --multi_gpu` without GPUs).

    Such a launch needs `cpu=True` (gloo) everywhere: without it accelerate and the Trainer see no
    distributed device, every process believes it is alone, does all the work, and all of them write
    the same output folder at once.
    """
    from accelerate.utils import parse_flag_from_env  # deferred: as above

    return parse_flag_from_env("ACCELERATE_USE_CPU") or (launched_processes() > 1 and not accelerator_available())


def distributed_state():
    """accelerate's `PartialState`, correct on CPU-only machines too (see `multi_process_on_cpu`)."""
    from accelerate import PartialState  # deferred: as above

    return PartialState(cpu=multi_process_on_cpu())
