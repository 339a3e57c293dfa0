#!/usr/bin/env python
"""Evaluation and prediction throughput against a pure forward pass at the same batch size.

    python bench/eval_throughput.py           # mini config (128 px), CPU: ~4 min on 2 cores
    python bench/eval_throughput.py --quick   # about a minute

Two real paths, each alternated with its limit (the same model's forward under no_grad on
tensors already in memory, same batch size, same threads), repeated, medians reported:

- Trainer evaluation: `BPSTrainer.evaluate` exactly as `run_training` builds it (cached float16
  pixels via `prepare_for_model`, `collate_pixel_batch`, the project's `compute_metrics`), at the
  eval batch of configs/demo.yaml (128).
- Prediction: `bps_vit.predict.predict_paths` on the TIFF files, with the model loaded from a
  saved folder by `load_for_inference` like scripts/predict.py (sdpa), batch 32, its default
  decoding (threads between forwards on a CPU, worker processes on a GPU). It decodes every TIFF
  (no cache: new images), so its limit is the forward only. Full runs also time it with ViT-B/16
  at 224 px (the model of configs/bps_vit_base.yaml), where decoding is a small share.

Ratio = limit seconds / real seconds (target >= 0.90).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.support.tiny_models import MINI_CONFIG, TINY_CONFIG  # noqa: E402

TARGET = 0.90
BASE = str(Path(__file__).resolve().parent / "vit_b16_224.json")


def pure_forward(model, batches, device) -> float:
    import torch

    model.eval()
    start = common.now()
    with torch.no_grad():
        for batch in batches:
            model(pixel_values=batch).logits.float().cpu()
    common.sync(device)
    return common.now() - start


def resident_batches(n: int, batch_size: int, image_size: int, device):
    import torch

    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return [torch.randn(size, 3, image_size, image_size, device=device) for size in sizes]


def bench_trainer_evaluate(data_dir: Path, opts) -> dict:
    """`BPSTrainer.evaluate` on cached pixels vs the forward alone."""
    from bps_vit.bps import LABELS
    from bps_vit.data import collate_pixel_batch, load_bps_dataset, prepare_for_model
    from bps_vit.imaging import Preprocessor
    from bps_vit.metrics import make_compute_metrics
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments, build_model_and_processor
    from bps_vit.trainer import BPSTrainer

    stretch = DataArguments().stretch()
    model, processor = build_model_and_processor(ModelArguments(config_name=opts.config), stretch, LABELS)
    preprocessor = Preprocessor.from_processor(processor, stretch)
    raw = load_bps_dataset(data_dir)["train"]
    raw = raw.select(range(min(opts.eval_images, len(raw))))
    eval_ds = prepare_for_model(raw, preprocessor, None, cache=True, desc="Decoding eval")
    args = BPSTrainingArguments(
        output_dir=str(common.BENCH_DIR / "runs" / "eval"), per_device_eval_batch_size=opts.eval_batch_size,
        report_to="none", disable_tqdm=True, use_cpu=opts.device == "cpu", bf16=opts.bf16,
        dataloader_num_workers=opts.dataloader_num_workers,
    )
    trainer = BPSTrainer(model=model, args=args, eval_dataset=eval_ds, processing_class=processor,
                         data_collator=collate_pixel_batch, compute_metrics=make_compute_metrics())
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # keep the bench output to its table
    device = args.device
    batches = resident_batches(len(eval_ds), opts.eval_batch_size, preprocessor.height, device)
    trainer.evaluate()  # warm-up: first dataloader, metric module load
    pure_forward(trainer.model, batches, device)
    real_s, limit_s = [], []
    for _ in range(opts.repeats):
        with common.stopwatch(real_s):
            trainer.evaluate()
            common.sync(device)
        limit_s.append(pure_forward(trainer.model, batches, device))
    return _result("Trainer.evaluate (cached pixels)", len(eval_ds), opts.eval_batch_size, real_s, limit_s)


def bench_predict(data_dir: Path, opts, config: str, num_images: int) -> dict:
    """`predict_paths` on TIFF files vs the forward alone."""
    from bps_vit.model import load_for_inference
    from bps_vit.predict import default_num_workers, predict_paths

    loaded = load_for_inference(str(common.saved_random_model(config)), attn_implementation="sdpa",
                                dtype="bfloat16" if opts.bf16 else "float32")
    model = loaded.model
    paths = sorted(str(p) for p in (data_dir / "train").glob("*/*.tif"))[:num_images]
    import torch

    device = torch.device(opts.device)
    size = loaded.processor.size["height"]
    batches = resident_batches(len(paths), opts.predict_batch_size, size, device)
    kwargs = dict(batch_size=opts.predict_batch_size, progress=False)
    if opts.predict_num_workers is not None:
        kwargs["num_workers"] = opts.predict_num_workers
    predict_paths(loaded, paths[: 2 * opts.predict_batch_size], **kwargs)  # warm-up
    pure_forward(model, batches, device)
    real_s, limit_s = [], []
    for _ in range(opts.repeats if config == opts.config else min(3, opts.repeats)):  # ViT-B: ~1 min a repeat on a CPU
        with common.stopwatch(real_s):
            predictions = predict_paths(loaded, paths, **kwargs)
        assert all(p.ok for p in predictions), [p.status for p in predictions if not p.ok][:3]
        limit_s.append(pure_forward(model, batches, device))
    workers = kwargs.get("num_workers", default_num_workers(1, device.type))
    how = f"{workers} worker process(es)" if workers else f"in-process, {torch.get_num_threads()} decode thread(s)"
    result = _result(f"predict_paths {Path(config).stem} (TIFF decode, {how})", len(paths), opts.predict_batch_size,
                     real_s, limit_s)
    result["forward_ms_per_image"] = 1000 / result["limit_img_per_s"]
    return result


def decode_cost(data_dir: Path, opts) -> float:
    """ms per image of `Preprocessor.gray` (decode + stretch + resize) in this process: what predict must hide."""
    from bps_vit.imaging import Preprocessor, Stretch

    paths = sorted((data_dir / "train").glob("*/*.tif"))[:100]
    pre = Preprocessor(Stretch(), 128, 128)
    start = common.now()
    for path in paths:
        pre.gray(path)
    return (common.now() - start) / len(paths) * 1000


def _result(name, n, batch, real_s, limit_s) -> dict:
    ratios = [lim / rea for lim, rea in zip(limit_s, real_s)]
    return {
        "path": name, "images": n, "batch": batch,
        "real_img_per_s": n / common.median(real_s), "limit_img_per_s": n / common.median(limit_s),
        "ratio": common.median(limit_s) / common.median(real_s), "ratio_median_pair": common.median(ratios),
        "real_s": real_s, "limit_s": limit_s, "ratios": ratios,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--config", default=None, help="Default: the mini config (--smoke: the tiny one).")
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--predict-batch-size", type=int, default=32)
    parser.add_argument("--predict-num-workers", type=int, default=None, help="Default: predict's own default.")
    parser.add_argument("--dataloader-num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--eval-images", type=int, default=None)
    parser.add_argument("--predict-images", type=int, default=None)
    parser.add_argument("--predict-base", action=argparse.BooleanOptionalAction, default=None,
                        help="Also time predict with ViT-B/16 at 224 px (default: on in full runs, off with --quick).")
    parser.add_argument("--predict-base-images", type=int, default=64)
    parser.add_argument("--num-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--section", default="eval")
    parser.add_argument("--title", default=None)
    opts = parser.parse_args(argv)
    if opts.device == "auto":
        import torch

        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    opts.config = opts.config or common.run_size(opts, smoke=TINY_CONFIG, quick=MINI_CONFIG, full=MINI_CONFIG)
    opts.repeats = opts.repeats or common.run_size(opts, smoke=1, quick=3, full=7)
    opts.eval_images = opts.eval_images or common.run_size(opts, smoke=8, quick=128, full=384)
    opts.predict_images = opts.predict_images or common.run_size(opts, smoke=8, quick=96, full=256)
    opts.num_images = opts.num_images or common.run_size(opts, smoke=common.SMOKE_IMAGES, quick=400, full=1200)
    if opts.predict_base is None:
        opts.predict_base = not opts.quick
    return opts


def main(argv=None) -> dict:
    opts = parse_args(argv)
    ctx = common.start(opts)
    info = ctx.info
    data_dir = common.prepared_folder(opts.num_images)
    print(f"# data {data_dir}; {ctx.describe()}", flush=True)
    results = [bench_trainer_evaluate(data_dir, opts), bench_predict(data_dir, opts, opts.config, opts.predict_images)]
    if opts.predict_base:
        results.append(bench_predict(data_dir, opts, BASE, opts.predict_base_images))
    decode_ms = decode_cost(data_dir, opts)
    headers = ["path", "images", "batch", "real img/s", "pure forward img/s", "ratio (medians)",
               "ratio (median pair)", "target"]
    rows = [[r["path"], r["images"], r["batch"], f"{r['real_img_per_s']:.1f}", f"{r['limit_img_per_s']:.1f}",
             f"**{r['ratio']:.3f}**", f"{r['ratio_median_pair']:.3f}",
             f">= {TARGET}" + (" ok" if r["ratio"] >= TARGET else " MISSED")] for r in results]
    table = common.markdown_table(headers, rows)
    notes = [
        f"- Model {Path(opts.config).name} (random init; speed does not depend on the weights), "
        f"{opts.repeats} alternating repeats, medians; device {opts.device}.",
        f"- Decoding one TIFF (`Preprocessor.gray`: tifffile + stretch + float resize) costs {decode_ms:.1f} ms "
        f"on one thread; the pure forward costs "
        + ", ".join(f"{r['forward_ms_per_image']:.1f} ms per image ({r['path'].split()[1]})" for r in results[1:])
        + f" at batch {opts.predict_batch_size}. Prediction must decode every file (new images have no cache), "
        "so the smaller the model, the larger the decoding's share.",
    ]
    body = table + "\n\n" + "\n".join(notes) + "\n"
    print()
    print(body)
    print(f"RATIOS (pure forward time / real time; target >= {TARGET}):")
    for r in results:
        print(f"  {r['path']:<45} {r['ratio']:.3f}  (pairs {', '.join('%.2f' % x for x in r['ratios'])})")
    payload = {"opts": vars(opts), "machine": info, "context": ctx.as_dict(), "results": results,
               "decode_ms": decode_ms}
    common.publish(opts, "eval_throughput" if opts.section == "eval" else opts.section,
                   "Evaluation and prediction throughput vs pure forward", body, payload, ctx, section=opts.section)
    return payload


if __name__ == "__main__":
    main()
