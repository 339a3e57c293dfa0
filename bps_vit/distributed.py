"""Multi-process launches (accelerate, torchrun) on machines with and without GPUs, and their clean end."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger(__name__)


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


class PeerLostError(RuntimeError):
    """Another process of the launch ended (or failed) before the final barrier: this one cannot end cleanly."""


@contextmanager
def process_group_teardown() -> Iterator[None]:
    """End torch.distributed's process group, if the launch started one, on every way out of the block.

    Every multi-process entry point runs its body inside this (`cli.run_main` does it for every script).
    On success the processes meet at a barrier and each destroys its group; on an error or Ctrl-C the group
    is destroyed at once, without a barrier (a peer may be inside another collective or already dead), and
    the error goes on. Under plain `python` (no group) nothing happens.

    Why (issue 23): a process that exits with its gloo group alive can abort at exit with `terminate called
    without an active exception` (SIGABRT). Gloo's worker thread completes a collective, wakes the main
    thread, and only then drops its reference to the collective's tensors; when the main thread has already
    dropped the Python side, that last release must take the GIL (`ConcretePyInterpreterVTable::decref`). If
    the main thread begins finalizing first, `take_gil` ends the worker thread with `pthread_exit`, whose
    forced unwind meets a `noexcept` destructor (`~AsyncWork`): `std::terminate`. The barrier is what closes
    that window: every rank waits in it, with the GIL released, until the slowest rank has finished, and the
    worker threads finish their releases meanwhile. `destroy_process_group` alone does not stop gloo's
    threads (torch keeps a reference to the group once DDP or `torch._dynamo` has used it), so it is the
    barrier, not the destroy, that the success path relies on; the destroy releases what torch lets go.
    """
    try:
        yield
    except BaseException:
        _destroy_process_group()
        raise
    end_process_group()


def end_process_group() -> None:
    """Barrier, then destroy the group (no-op without one). `PeerLostError` when a peer is gone or failed."""
    if not _group_initialized():
        return
    import torch.distributed as dist  # deferred: only a process that imported torch can have a group

    try:
        dist.barrier()
    except RuntimeError as err:  # a peer that died or failed closed its connections: gloo fails at once
        _destroy_process_group()
        raise PeerLostError(f"another process of this launch ended before this one finished (see its output): "
                            f"{str(err).strip().splitlines()[0]}") from None
    _destroy_process_group()


def _destroy_process_group() -> None:
    if _group_initialized():
        import torch.distributed as dist  # deferred: only a process that imported torch can have a group

        dist.destroy_process_group()
        logger.debug("Process group destroyed.")


def _group_initialized() -> bool:
    """Whether this process has a torch.distributed group (without torch imported it has none: no import)."""
    if "torch" not in sys.modules:
        return False
    import torch.distributed as dist  # deferred: only a process that imported torch can have a group

    return dist.is_available() and dist.is_initialized()
