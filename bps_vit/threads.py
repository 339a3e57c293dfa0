"""CPU threading for the data path: small tensor ops on one thread, batches decoded by a thread pool.

On a 2-core CPU the forward pass takes both cores; the decode and the per-batch tensor ops that run
between forwards must neither fight it with OpenMP barriers nor leave it idle. Used by training's
data path and collator, prediction and the raw-space perturbations of the explain step.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor


@contextlib.contextmanager
def one_intraop_thread():
    """Run small tensor ops (the data path; the training loop's grad clipping) on one thread, then restore.

    Yields the thread count it replaced: the cores the forward pass uses, and so the number of
    Python threads that can decode a batch meanwhile (`map_in_threads`).

    With `dataloader_num_workers=0` (the CPU default) the transform and the collator run on the
    training thread between steps (prediction decodes between forwards the same way). Normalising
    and stacking a batch are a few MB of memory traffic that one thread does quickly, while an
    OpenMP parallel region costs far more in barrier waits whenever a core is busy; on a loaded
    2-core machine that cost the training loop up to 10% of its throughput (bench/train_throughput.py
    measures it).
    DataLoader workers already run with one thread, so there this changes nothing.
    """
    import torch  # deferred: prepare's decode threads run without torch

    threads = torch.get_num_threads()
    if threads == 1:
        yield 1
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def map_in_threads(function, items, threads: int) -> list:
    """`[function(item) for item in items]`, spread over `threads` Python threads, in order.

    Why threads: decoding a BPS crop is mostly Deflate inflate, numpy and a torch resize, which
    release the GIL, so two threads decode a batch in well under the time of one, and on a 2-core
    CPU the forward pass (which takes both cores) is idle meanwhile. Pools are kept per process
    (a forked DataLoader worker gets its own). Exceptions propagate as from the plain loop.
    """
    items = list(items)
    if threads <= 1 or len(items) < 2:
        return [function(item) for item in items]
    key = (os.getpid(), threads)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bps-decode")
    return list(pool.map(function, items))
