#!/usr/bin/env python
"""A 2-process entry point for tests/test_teardown.py: `cli.run_main` around a small body, one mode each.

    accelerate launch --multi_gpu --num_processes 2 tests/support/teardown_driver.py MODE

race       the exit race of issue 23, made certain: rank 1 leaves a collective to gloo's worker thread, drops
           its tensors and holds the GIL until the collective has finished (rank 0 joins it DELAY s late), so
           the worker's last release of the tensors waits for the GIL at the moment the body returns.
raise      every rank gathers an object (as explain and predict do); then rank 1 fails (OSError, a runtime
           failure) and rank 0 returns normally.
die        every rank gathers an object; then rank 1 exits at once (os._exit(3)), without any teardown, and
           rank 0 returns normally.
interrupt  both ranks gather in a loop until interrupted (SIGINT).

After run_main every rank prints one line, `rank R: exit CODE, group alive BOOL`, except in `race` mode:
writing a line releases the GIL, which would let the worker finish before the interpreter finalizes. Lines
are written with one `os.write` each: the ranks share the launcher's stdout, and under `python -u` (as
torchrun starts them) `print` writes the text and its newline separately, so two ranks' lines could mix.
"""

from __future__ import annotations

import os
import sys
import time

from bps_vit.cli import EXIT_OK, run_main
from bps_vit.distributed import distributed_state

DELAY = 2.0


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def _gather(state) -> list:
    from accelerate.utils import gather_object

    return gather_object([{"rank": state.process_index, "payload": list(range(1000))}])


def _race(state) -> None:
    import torch
    import torch.distributed as dist

    tensor = torch.ones(1000)
    if state.process_index == 0:
        time.sleep(DELAY)
        dist.all_reduce(tensor)
        return
    work = dist.all_reduce(tensor, async_op=True)
    del work, tensor  # gloo's worker thread now holds the only reference to the tensor
    sys.setswitchinterval(1000)  # no forced GIL hand-over: the worker waits until this thread blocks
    end = time.monotonic() + DELAY + 1
    while time.monotonic() < end:  # busy, holding the GIL, while rank 0 joins and the collective ends
        pass


def body(mode: str) -> int:
    state = distributed_state()
    if mode == "race":
        _race(state)
        return EXIT_OK
    if mode == "interrupt":
        say(f"rank {state.process_index}: looping")
        while True:
            _gather(state)
            time.sleep(0.05)
    _gather(state)
    if state.process_index == 1 and mode == "raise":
        raise OSError("rank 1 could not write its part")
    if state.process_index == 1 and mode == "die":
        os._exit(3)
    return EXIT_OK


def main() -> int:
    import torch.distributed as dist

    mode = sys.argv[1]
    rank = os.environ.get("RANK", "0")
    code = EXIT_OK
    try:
        code = run_main(lambda: body(mode), failures=(OSError,))
    except KeyboardInterrupt:
        code = 130
    if mode != "race":
        say(f"rank {rank}: exit {code}, group alive {dist.is_initialized()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
