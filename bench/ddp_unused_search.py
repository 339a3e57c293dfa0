#!/usr/bin/env python
"""DDP's search for unused parameters against no search, on 2 processes, alternating in the same processes.

    python bench/ddp_unused_search.py            # mini ViT batch 16 (30 steps) and tiny ViT batch 2 (200 steps)
    python bench/ddp_unused_search.py --quick    # the same two cases, 10 and 60 steps

`find_unused_parameters=True` is what the Trainer gives DDP for a ViT unless told otherwise: after every
forward DDP walks the autograd graph for parameters that will get no gradient (a ViT classifier has none,
and DDP warns so). Since issue 23 `BPSTrainer` turns the search off for models whose every parameter trains
(ViT, DeiT, Swin, BEiT without a mask token: `bps_vit.backbones.every_parameter_trains`); this bench measures
what that saves.

The script launches itself with `accelerate launch --multi_gpu --num_processes 2` (on a machine without
GPUs: 2 CPU processes over gloo, one torch thread each). Each process wraps two identical copies of the
model in DDP, one with the search and one without, and times training steps (forward, loss, backward with
DDP's gradient all-reduce, AdamW step) in ABBA order, so both settings see the same load. Two cases: a
compute-bound step (mini ViT, 128 px, batch 16 per process) and a short one (tiny ViT, 64 px, batch 2), where
a fixed cost per step shows most. Reported: median seconds per step of each setting, the ratio of the
medians and the median of the per-step ratios, and whether both copies end with the same weights (the
search changes the time, not the result).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.support.launch import accelerate_launch  # noqa: E402
from tests.support.tiny_models import MINI_CONFIG, TINY_CONFIG  # noqa: E402

# (config, images per process and step, timed steps of each setting: full, quick)
CASES = ((Path(MINI_CONFIG), 16, (30, 10)), (Path(TINY_CONFIG), 2, (200, 60)))
SMOKE_STEPS = 2


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per process (2 processes).")
    return parser.parse_args(argv)


def launch_two_processes(argv: list[str]) -> int:
    """This script again, under `accelerate launch` on 2 processes and a port the OS says is free."""
    command = [*accelerate_launch(2), str(Path(__file__).resolve()), *argv]
    return subprocess.run(command, cwd=common.REPO).returncode


def twin_model(config: Path, state, search: bool):
    """The model in DDP with or without the search, and its optimizer (same seed: same start for both)."""
    import torch

    from bps_vit.model import build_model_from_config

    torch.manual_seed(0)
    model = build_model_from_config(config, attn_implementation="sdpa").to(state.device)
    device_ids = [state.local_process_index] if state.device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=search)
    return ddp, torch.optim.AdamW(ddp.parameters(), lr=1e-4)


def train_step(model, optimizer, pixels, labels) -> float:
    start = common.now()
    model(pixel_values=pixels, labels=labels).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    common.sync(pixels.device)
    return common.now() - start


def measure(config: Path, batch_size: int, steps: int, state) -> dict:
    import torch

    twins = {search: twin_model(config, state, search) for search in (True, False)}
    size = twins[True][0].module.config.image_size
    generator = torch.Generator().manual_seed(1 + state.process_index)  # each process its own batches
    batches = [(torch.randn(batch_size, 3, size, size, generator=generator).to(state.device),
                torch.randint(0, 2, (batch_size,), generator=generator).to(state.device)) for _ in range(4)]
    for search in (True, False):  # warm-up: the first steps build DDP's buckets and the allocator's pools
        for pixels, labels in batches[:2]:
            train_step(*twins[search], pixels, labels)
    times: dict[bool, list[float]] = {True: [], False: []}
    for step in range(steps):
        pixels, labels = batches[step % len(batches)]
        for search in ((True, False) if step % 2 == 0 else (False, True)):  # ABBA
            times[search].append(train_step(*twins[search], pixels, labels))
    same = all(torch.equal(a, b) for a, b in zip(twins[True][0].parameters(), twins[False][0].parameters()))
    search, none = common.median(times[True]), common.median(times[False])
    return {"config": str(config.relative_to(common.REPO)), "batch_size": batch_size, "steps": steps,
            "seconds_per_step": {"search": search, "no_search": none}, "ratio_of_medians": search / none,
            "median_step_ratio": common.median(a / b for a, b in zip(times[True], times[False])),
            "spread": {"search": common.spread(times[True]), "no_search": common.spread(times[False])},
            "same_weights": same}


def report(results: list[dict], state) -> str:
    rows = [[f"{r['config']}, batch {r['batch_size']}", setting, f"{r['seconds_per_step'][key]:.4f}",
             r["spread"][key], f"**{r['ratio_of_medians']:.3f}** ({r['median_step_ratio']:.3f})" if key == "search"
             else "", str(r["same_weights"]) if key == "search" else ""]
            for r in results
            for key, setting in (("search", "find_unused_parameters=True (Trainer default)"),
                                 ("no_search", "find_unused_parameters=False (BPSTrainer, ViT/DeiT)"))]
    return (common.markdown_table(["case", "DDP setting", "s per step (median)", "spread",
                                   "search / no search (median of per-step ratios)", "same weights"], rows)
            + f"\n\n{state.num_processes} processes on {state.device}, steps of both settings in ABBA order "
            "(counts in the spread column). Ratio > 1: the search costs time.\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return launch_two_processes(argv)
    from bps_vit.distributed import distributed_state, process_group_teardown

    with process_group_teardown():
        ctx = common.start(opts)
        state = distributed_state()
        results = [measure(config, batch, common.run_size(opts, smoke=SMOKE_STEPS, quick=steps[1], full=steps[0]),
                           state) for config, batch, steps in CASES]
        if state.is_main_process:
            body = report(results, state)
            print(body)
            common.publish(opts, "ddp_unused_search", "DDP: search for unused parameters vs none (2 processes)",
                           body, {"results": results, "context": ctx.as_dict()}, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
