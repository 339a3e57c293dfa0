#!/usr/bin/env python
"""Training throughput of the real `scripts/train.py` path against the pure compute limit, in one run.

    python bench/train_throughput.py            # mini config (128 px), batch 32, CPU: ~4 min on an idle 2-core machine
    python bench/train_throughput.py --quick    # about a minute

The real path is `bps_vit.train.run_training` itself (what `scripts/train.py` calls): imagefolder
TIFFs -> `prepare_for_model` (float16 decode cache, or decoding on the fly with --no cache) ->
the Trainer's dataloader with `collate_pixel_batch` -> forward + backward + clip + AdamW + schedule,
logging and (per setting) per-epoch evaluation. A callback added to `BPSTrainer` timestamps every
optimizer step and evaluation and, right after each one, runs the same work on the limit: a twin
model (same config, attention kernel, optimizer class, batch, threads, dtype) stepping on tensors
already in memory. Real and limit thus alternate unit by unit under the same machine load.

Steady state = every epoch after the first (warm-up, first evaluation and metric loading are in
epoch 1); the one-time decode cache is timed separately, as seconds per 1,000 images. Checkpoint
saving (save_strategy=epoch in the evaluation setting) is timed and reported on its own line:
it is disk I/O, not the data path.

Ratio = limit time / real time for the same units (>= 0.95 is the target). The headline uses
per-kind medians (first step of an epoch, other steps, evaluation), each times its count, so one
load spike on a shared machine does not decide it; plain sums and per-pair medians are shown too.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the offline/cache environment before any HF import)

from tests.support.tiny_models import MINI_CONFIG, TINY_CONFIG  # noqa: E402

TARGET = 0.95


# ----------------------------------------------------------------------------- the limit


class ComputeLimit:
    """The same model/optimizer/batch doing only forward+backward+step (and eval forwards) on resident tensors."""

    def __init__(self, config_name: str, attn_implementation: str, training_args, batch_size: int, image_size: int,
                 eval_sizes: list[int], device, bf16: bool):
        import torch
        from transformers import Trainer

        from bps_vit.model import build_model_from_config

        torch.manual_seed(0)
        self.device = device
        self.model = build_model_from_config(config_name, attn_implementation=attn_implementation).to(device)
        self.model.train()
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, self.model)
        self.optimizer = optimizer_cls(self.model.parameters(), weight_decay=training_args.weight_decay, **kwargs)
        # a few distinct noise batches with random labels, cycled: one fixed batch would be memorised
        # within steps and drive the gradients towards zero (denormals), which is not a real workload
        self.batches = [
            (torch.randn(batch_size, 3, image_size, image_size, device=device),
             torch.randint(0, 2, (batch_size,), device=device))
            for _ in range(4)
        ]
        self.calls = 0
        self.eval_batches = [torch.randn(n, 3, image_size, image_size, device=device) for n in eval_sizes]
        self.autocast = (
            torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else None
        )

    def _ctx(self):
        import contextlib

        return self.autocast if self.autocast is not None else contextlib.nullcontext()

    def warm_up(self, steps: int = 2) -> None:
        for _ in range(steps):
            self.train_step()
        if self.eval_batches:
            self.evaluate()

    def train_step(self) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one forward+backward+optimizer step."""
        x, y = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        start, cpu = common.now(), common.cpu_now()
        with self._ctx():
            loss = self.model(pixel_values=x, labels=y).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        common.sync(self.device)
        return common.now() - start, common.cpu_now() - cpu

    def evaluate(self) -> tuple[float, float]:
        import torch

        self.model.eval()
        start, cpu = common.now(), common.cpu_now()
        with torch.no_grad(), self._ctx():
            for batch in self.eval_batches:
                self.model(pixel_values=batch).logits.float().cpu()
        common.sync(self.device)
        seconds = common.now() - start, common.cpu_now() - cpu
        self.model.train()
        return seconds


@dataclass
class Unit:
    kind: str  # "step", "eval" or "save"
    epoch: int
    real: float
    limit: float | None
    real_cpu: float = 0.0
    limit_cpu: float | None = None


@dataclass
class Probe:
    """TrainerCallback: times each real unit, then the same unit on the limit, alternating."""

    limit: ComputeLimit
    units: list[Unit] = field(default_factory=list)
    mark: float | None = None
    cpu_mark: float | None = None
    data_s_per_batch: float | None = None

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
                probe.limit.warm_up()
                if train_dataloader is not None:  # the data path alone: one pass over the Trainer's own loader
                    start, batches = common.now(), 0
                    for _ in train_dataloader:
                        batches += 1
                    probe.data_s_per_batch = (common.now() - start) / max(batches, 1)

            def on_epoch_begin(self, args, state, control, **kwargs):
                if probe.mark is None:
                    common.sync(probe.limit.device)
                    probe.mark, probe.cpu_mark = common.now(), common.cpu_now()

            def on_step_end(self, args, state, control, **kwargs):
                probe._record("step", state, probe.limit.train_step)

            def on_evaluate(self, args, state, control, **kwargs):
                probe._record("eval", state, probe.limit.evaluate)

            def on_save(self, args, state, control, **kwargs):
                probe._record("save", state, None)

        return _Callback()

    def _record(self, kind: str, state, limit_fn) -> None:
        common.sync(self.limit.device)
        real, real_cpu = common.now() - self.mark, common.cpu_now() - self.cpu_mark
        # state.epoch is fractional (1.0 at the end of the first epoch); the unit belongs to the epoch it ends
        epoch = max(0, math.ceil(round(state.epoch or 0, 6)) - 1)
        # epoch 0 is warm-up and excluded: no limit twin needed there
        limit, limit_cpu = limit_fn() if (limit_fn and epoch >= 1) else (None, None)
        self.units.append(Unit(kind, epoch, real, limit, real_cpu, limit_cpu))
        common.sync(self.limit.device)
        self.mark, self.cpu_mark = common.now(), common.cpu_now()


class _StopAfterTraining(Exception):
    """Raised from on_train_end: the benchmark needs the training loop only, not the final test/figures."""


# ----------------------------------------------------------------------------- one setting


@dataclass
class Setting:
    name: str
    cache: bool
    evaluate: bool


def run_setting(setting: Setting, data_dir: Path, opts) -> dict:
    """Run `bps_vit.train.run_training` with the probe; return the units and the per-epoch ratios."""
    import torch

    import bps_vit.train as train_module
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    out_dir = common.BENCH_DIR / "runs" / f"train_{setting.name}"
    evaluate = setting.evaluate
    training_args = BPSTrainingArguments(
        output_dir=str(out_dir), num_train_epochs=opts.epochs,
        per_device_train_batch_size=opts.batch_size, per_device_eval_batch_size=opts.eval_batch_size,
        learning_rate=1e-3, weight_decay=0.05, warmup_steps=0.1, lr_scheduler_type="cosine", logging_steps=10,
        eval_strategy="epoch" if evaluate else "no", save_strategy="epoch" if evaluate else "no",
        load_best_model_at_end=evaluate, save_total_limit=2, early_stopping_patience=None,
        dataloader_num_workers=opts.dataloader_num_workers, report_to="none", disable_tqdm=True, seed=42,
        bf16=opts.bf16, use_cpu=opts.device == "cpu",
    )
    model_args = ModelArguments(config_name=opts.config, attn_implementation=opts.attn_implementation)
    data_args = DataArguments(data_dir=str(data_dir), cache_images=setting.cache,
                              max_train_samples=opts.max_train_samples, max_eval_samples=opts.max_eval_samples)

    device = training_args.device
    n_eval = _split_size(data_dir, "validation", opts.max_eval_samples)
    eval_sizes = [opts.eval_batch_size] * (n_eval // opts.eval_batch_size)
    if n_eval % opts.eval_batch_size:
        eval_sizes.append(n_eval % opts.eval_batch_size)
    import json

    image_size = int(json.loads(Path(opts.config).read_text())["image_size"])
    limit = ComputeLimit(opts.config, opts.attn_implementation, training_args, opts.batch_size, image_size,
                         eval_sizes if evaluate else [], device, opts.bf16)
    probe = Probe(limit)
    callback = probe.callback()

    from transformers import TrainerCallback

    class _StopCallback(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            raise _StopAfterTraining()

    original = train_module.BPSTrainer

    class ProbedTrainer(original):
        def __init__(self, *args, **kwargs):
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), callback, _StopCallback()]
            super().__init__(*args, **kwargs)
            from transformers.trainer_callback import PrinterCallback

            self.remove_callback(PrinterCallback)  # keep the bench output to its table

    train_module.BPSTrainer = ProbedTrainer
    try:
        train_module.run_training(model_args, data_args, training_args)
    except _StopAfterTraining:
        pass
    finally:
        train_module.BPSTrainer = original
    del limit
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return summarize(setting, probe.units, opts, probe.data_s_per_batch)


def _split_size(data_dir: Path, split: str, cap: int | None) -> int:
    from bps_vit.data import check_prepared_folder

    n = sum(check_prepared_folder(data_dir)[split].values())
    return min(n, cap) if cap else n


def unit_kind(units: list[Unit], unit: Unit) -> str:
    """'first step' (of an epoch: includes creating the epoch's iterator), 'step', 'eval'."""
    if unit.kind != "step":
        return unit.kind
    first = next(u for u in units if u.kind == "step" and u.epoch == unit.epoch)
    return "first step" if first is unit else "step"


def robust_ratio(pairs: list[tuple[str, float, float]]) -> tuple[float, float, float]:
    """(limit s, real s, ratio) per steady epoch from per-kind medians: sum_k n_k med(limit_k) / sum_k n_k med(real_k).

    Real and limit units alternate, so both medians see the same load; a neighbour's spike that
    lands on a single unit moves a median far less than a sum.
    """
    kinds = sorted({k for k, _, _ in pairs})
    limit = real = 0.0
    for kind in kinds:
        of_kind = [(lim, rea) for k, lim, rea in pairs if k == kind]
        limit += len(of_kind) * common.median(lim for lim, _ in of_kind)
        real += len(of_kind) * common.median(rea for _, rea in of_kind)
    return limit, real, (limit / real if real else float("nan"))


def summarize(setting: Setting, units: list[Unit], opts, data_s_per_batch: float | None) -> dict:
    timed = [u for u in units if u.epoch >= 1 and u.limit is not None]
    epochs = sorted({u.epoch for u in timed})
    steps = [u for u in timed if u.kind == "step"]
    evals = [u for u in timed if u.kind == "eval"]
    saves = [u for u in units if u.epoch >= 1 and u.kind == "save"]
    pairs = [(unit_kind(units, u), u.limit, u.real) for u in timed]
    limit_robust, real_robust, ratio_robust = robust_ratio(pairs)
    real_total = sum(u.real for u in timed)
    limit_total = sum(u.limit for u in timed)
    real_cpu_total = sum(u.real_cpu for u in timed)
    limit_cpu_total = sum(u.limit_cpu for u in timed)
    samples = len(steps) * opts.batch_size
    per_epoch = [sum(u.limit for u in timed if u.epoch == e) / sum(u.real for u in timed if u.epoch == e)
                 for e in epochs]
    return {
        "setting": setting.name,
        "cache": setting.cache,
        "evaluate": setting.evaluate,
        "steady_epochs": len(epochs),
        "steady_steps": len(steps),
        "pairs": len(timed),
        "real_samples_per_s": samples / real_robust if real_robust else float("nan"),
        "limit_samples_per_s": samples / limit_robust if limit_robust else float("nan"),
        "ratio": ratio_robust,
        "ratio_pooled": limit_total / real_total if real_total else float("nan"),
        "ratio_per_epoch": per_epoch,
        "ratio_median_step": common.median(u.limit / u.real for u in steps),
        "ratio_cpu_pooled": limit_cpu_total / real_cpu_total if real_cpu_total else float("nan"),
        "data_s_per_batch": data_s_per_batch,
        "real_step_s_median": common.median(u.real for u in steps),
        "limit_step_s_median": common.median(u.limit for u in steps),
        "eval_real_s": [u.real for u in evals],
        "eval_limit_s": [u.limit for u in evals],
        "save_s": [u.real for u in saves],
        "units": [u.__dict__ for u in units],
    }


# ----------------------------------------------------------------------------- decode cache cost


def decode_cache_cost(data_dir: Path, opts, repeats: int) -> dict:
    """Seconds per 1,000 images of the one-time decode cache (`prepare_for_model`, datasets.map, fresh)
    next to a plain loop of `Preprocessor.gray` over the same files (what the map wraps)."""
    import datasets

    from bps_vit.bps import LABELS
    from bps_vit.data import load_bps_dataset, prepare_for_model
    from bps_vit.imaging import Preprocessor, Stretch
    from bps_vit.train import DataArguments, ModelArguments, build_model_and_processor

    raw = load_bps_dataset(data_dir)["train"]
    if opts.max_train_samples:
        raw = raw.select(range(min(opts.max_train_samples, len(raw))))
    _, processor = build_model_and_processor(ModelArguments(config_name=opts.config), DataArguments().stretch(),
                                             LABELS)
    preprocessor = Preprocessor.from_processor(processor, Stretch())
    paths = [image["path"] for image in raw["image"]]
    map_s, loop_s = [], []
    datasets.disable_caching()  # a fresh fingerprint each time: really decode, as on a first run
    try:
        for _ in range(repeats):
            with common.stopwatch(map_s):
                cached = prepare_for_model(raw, preprocessor, cache=True)
            with common.stopwatch(loop_s):
                for path in paths:
                    preprocessor.gray(path)
            del cached
    finally:
        datasets.enable_caching()
    n = len(paths)
    return {
        "images": n,
        "cache_s_per_1000": common.median(map_s) / n * 1000,
        "plain_decode_s_per_1000": common.median(loop_s) / n * 1000,
        "cache_runs_s": map_s,
        "plain_runs_s": loop_s,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--config", default=None,
                        help="Model config JSON (default: the mini config, 128 px; --smoke: the tiny one, 64 px).")
    parser.add_argument("--batch-size", type=int, default=None, help="Default 32 (--smoke: 8).")
    parser.add_argument("--eval-batch-size", type=int, default=128, help="configs/demo.yaml's eval batch.")
    parser.add_argument("--epochs", type=int, default=None, help="Default 3 (quick: 2); epoch 1 is warm-up.")
    parser.add_argument("--num-images", type=int, default=None, help="Synthetic images to generate (incl. sham).")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument("--settings", default=None,
                        help="Comma list of cached-noeval,cached-eval,uncached-noeval,uncached-eval.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--dataloader-num-workers", type=int, default=0, help="The demo config's value is 0.")
    parser.add_argument("--attn-implementation", default="sdpa")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU runs).")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="Peak FLOP/s for MFU (default on CUDA: H100 bf16 dense, 989e12).")
    parser.add_argument("--data-dir", type=Path, default=None, help="Use this prepared folder instead of synthetic.")
    parser.add_argument("--title", default=None, help="Section title in BENCHMARKS.md.")
    parser.add_argument("--section", default="train", help="Section key in BENCHMARKS.md.")
    opts = parser.parse_args(argv)
    if opts.device == "auto":
        import torch

        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts.peak_flops is None and opts.device == "cuda":
        opts.peak_flops = common.H100_BF16_DENSE_PEAK
    for key, value in common.run_size(opts, **RUN_SIZES).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    return opts


#: the defaults of each kind of run (a flag given on the command line wins)
RUN_SIZES = {
    "full": dict(config=MINI_CONFIG, batch_size=32, epochs=3, num_images=1200, max_train_samples=320,
                 max_eval_samples=None, settings="cached-noeval,cached-eval,uncached-noeval,uncached-eval"),
    "quick": dict(config=MINI_CONFIG, batch_size=32, epochs=2, num_images=400, max_train_samples=128,
                  max_eval_samples=64, settings="cached-noeval,cached-eval,uncached-noeval"),
    "smoke": dict(config=TINY_CONFIG, batch_size=8, epochs=2, num_images=common.SMOKE_IMAGES, max_train_samples=16,
                  max_eval_samples=8, settings="cached-eval,uncached-noeval"),
}


SETTINGS = {
    "cached-noeval": Setting("cached-noeval", cache=True, evaluate=False),
    "cached-eval": Setting("cached-eval", cache=True, evaluate=True),
    "uncached-noeval": Setting("uncached-noeval", cache=False, evaluate=False),
    "uncached-eval": Setting("uncached-eval", cache=False, evaluate=True),
}


def main(argv=None) -> dict:
    opts = parse_args(argv)
    ctx = common.start(opts)
    info = ctx.info
    data_dir = opts.data_dir or common.prepared_folder(opts.num_images)
    settings = [SETTINGS[name.strip()] for name in opts.settings.split(",")]
    print(f"# data {data_dir}; {ctx.describe()}", flush=True)

    decode = decode_cache_cost(data_dir, opts, repeats=1 if opts.quick else 2)
    results = []
    for setting in settings:
        result = run_setting(setting, data_dir, opts)
        results.append(result)
        print(f"# {setting.name}: ratio {result['ratio']:.3f} "
              f"(epochs {['%.3f' % r for r in result['ratio_per_epoch']]}), load {common.load_average()}", flush=True)

    n_train = results[0]["steady_steps"] // max(1, results[0]["steady_epochs"]) * opts.batch_size
    headers = ["setting", "real samples/s", "limit samples/s", "ratio", "ratio (pooled sums)",
               "ratio (median step pair)", "data path ms/batch", "real / limit step s (median)", "pairs", "target"]
    rows = []
    for r in results:
        data_ms = r["data_s_per_batch"]
        rows.append([
            r["setting"], f"{r['real_samples_per_s']:.1f}", f"{r['limit_samples_per_s']:.1f}",
            f"**{r['ratio']:.3f}**", f"{r['ratio_pooled']:.3f}", f"{r['ratio_median_step']:.3f}",
            "n/a" if data_ms is None else f"{data_ms * 1000:.0f}",
            f"{r['real_step_s_median']:.3f} / {r['limit_step_s_median']:.3f}",
            f"{r['pairs']} ({r['steady_epochs']} epochs)",
            f">= {TARGET}" + (" ok" if r["ratio"] >= TARGET else " MISSED"),
        ])
    table = common.markdown_table(headers, rows)
    import json as _json

    train_flops = common.vit_train_flops(_json.loads(Path(opts.config).read_text()))
    flop_rows = []
    for r in results:
        achieved_real = r["real_samples_per_s"] * train_flops
        achieved_limit = r["limit_samples_per_s"] * train_flops
        mfu = (f"{achieved_real / opts.peak_flops * 100:.1f}% / {achieved_limit / opts.peak_flops * 100:.1f}%"
               if opts.peak_flops else "n/a (CPU)")
        flop_rows.append([r["setting"], f"{achieved_real / 1e12:.3f} / {achieved_limit / 1e12:.3f}", mfu])
    table += "\n\n" + common.markdown_table(
        ["setting", "achieved TFLOP/s real / limit", "MFU real / limit"], flop_rows)
    saves = [s for r in results for s in r["save_s"]]
    eval_lines = [
        f"- {r['setting']}: evaluation of {_split_size(data_dir, 'validation', opts.max_eval_samples)} images "
        f"at batch {opts.eval_batch_size}: "
        f"real {common.median(r['eval_real_s']):.3f} s vs limit {common.median(r['eval_limit_s']):.3f} s per epoch"
        for r in results if r["evaluate"] and r["eval_real_s"]
    ]
    notes = [
        f"- Model {Path(opts.config).name}, batch {opts.batch_size}, eval batch {opts.eval_batch_size}, "
        f"{opts.epochs} epochs of {n_train} train images (epoch 1 = warm-up, excluded), "
        f"dataloader_num_workers={opts.dataloader_num_workers}, device {opts.device}{', bf16' if opts.bf16 else ''}.",
        f"- One-time decode cache (`prepare_for_model`, datasets.map, 1 process): "
        f"**{decode['cache_s_per_1000']:.1f} s per 1,000 images** "
        f"(plain `Preprocessor.gray` loop over the same {decode['images']} files: "
        f"{decode['plain_decode_s_per_1000']:.1f} s per 1,000).",
        *eval_lines,
        f"- FLOPs per training image: {train_flops / 1e9:.2f} GFLOP = 3 x forward, forward from the formula in "
        f"`bench/common.py:vit_forward_flops` (not the Trainer's total_flos, which counts pixels as tokens)"
        + (f"; MFU against a peak of {opts.peak_flops / 1e12:.0f} TFLOP/s." if opts.peak_flops else "."),
    ]
    if saves:
        notes.append(f"- Checkpoint save (save_strategy=epoch, excluded from the ratios): "
                     f"{common.median(saves):.2f} s per epoch (median of {len(saves)}).")
    body = table + "\n\n" + "\n".join(notes) + "\n"
    print()
    print(table)
    print("\n".join(notes))
    print("\nRATIOS (limit time / real time, steady state; target >= %.2f):" % TARGET)
    for r in results:
        print(f"  {r['setting']:<16} {r['ratio']:.3f}  (pooled sums {r['ratio_pooled']:.3f}, "
              f"CPU-time {r['ratio_cpu_pooled']:.3f}, per epoch {', '.join('%.3f' % x for x in r['ratio_per_epoch'])})")
    payload = {"opts": vars(opts), "machine": info, "context": ctx.as_dict(), "decode": decode, "results": results}
    common.publish(opts, "train_throughput" if opts.section == "train" else opts.section,
                   "Training throughput vs compute limit", body, payload, ctx, section=opts.section)
    return payload


if __name__ == "__main__":
    main()
