#!/usr/bin/env python
"""Cost of the explanations against the forward passes they cannot avoid.

    python bench/explain_cost.py            # mini config (128 px), CPU: ~5 min on 2 cores
    python bench/explain_cost.py --quick    # about a minute (SHAP at 500 evaluations only)

Uses the public API of `bps_vit.explain` on a model saved like a training run and reloaded by
`load_for_inference` (eager attention, as scripts/explain.py does), on real pixel batches from
the prepared folder (`Preprocessor`):

- `AttentionRollout` and `GradientRollout`: ms per image at the explain batch size (8), against
  one plain forward of the same model at the same batch (targets: <= 1.5x and <= 4x).
- `ShapExplainer.explain` (blur masker, log-odds, batch 64): seconds per image at max_evals 500
  and 2,000, against `max_evals` forwards in batches of 64 on resident tensors (target: <= 25%
  overhead). The model calls SHAP really makes are counted and shown.

Each method alternates with its reference in the same loop; medians of the repeats are reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.support.tiny_models import MINI_CONFIG, TINY_CONFIG  # noqa: E402

TARGETS = {"rollout": 1.5, "grad_rollout": 4.0, "shap_overhead": 0.25}


AUTOCAST = {"enabled": False}


def autocast(device):
    """bf16 autocast around every timed call when --bf16 (weights stay fp32, as under the Trainer's bf16)."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=AUTOCAST["enabled"])


def forward_seconds(model, pixel_values, device) -> float:
    import torch

    start = common.now()
    with torch.no_grad(), autocast(device):
        model(pixel_values=pixel_values).logits.float().cpu()
    common.sync(device)
    return common.now() - start


def timed(fn, device) -> float:
    start = common.now()
    with autocast(device):
        fn()
    common.sync(device)
    return common.now() - start


def load(opts):
    import torch

    from bps_vit.model import load_for_inference

    loaded = load_for_inference(str(opts.model or common.saved_random_model(opts.config)))
    model, preprocessor = loaded.model, loaded.preprocessor
    device = torch.device(opts.device)
    model.to(device).eval()
    AUTOCAST["enabled"] = bool(opts.bf16)
    data_dir = common.prepared_folder(opts.num_images)
    paths = sorted((data_dir / "test").glob("*/*.tif"))
    pixel_values = preprocessor([str(p) for p in paths[: opts.batch_size]]).to(device)
    return model, preprocessor, pixel_values, device


def bench_rollouts(model, pixel_values, device, repeats: int) -> list[dict]:
    from bps_vit.explain import AttentionRollout, GradientRollout

    methods = {"rollout": AttentionRollout(model), "grad_rollout": GradientRollout(model)}
    for explainer in methods.values():  # warm-up
        timed(lambda: explainer(pixel_values), device)
    forward_seconds(model, pixel_values, device)
    times = {name: [] for name in methods}
    forwards = {name: [] for name in methods}
    for _ in range(repeats):
        for name, explainer in methods.items():
            forwards[name].append(forward_seconds(model, pixel_values, device))
            times[name].append(timed(lambda: explainer(pixel_values), device))
    batch = len(pixel_values)
    rows = []
    for name in methods:
        ratio = common.median(times[name]) / common.median(forwards[name])
        rows.append({
            "method": name, "batch": batch,
            "ms_per_image": common.median(times[name]) / batch * 1000,
            "forward_ms_per_image": common.median(forwards[name]) / batch * 1000,
            "x_forward": ratio,
            "x_forward_median_pair": common.median(t / f for t, f in zip(times[name], forwards[name])),
            "target": TARGETS[name], "ok": ratio <= TARGETS[name],
            "times": times[name], "forwards": forwards[name],
        })
    return rows


def bench_shap(model, preprocessor, pixel_values, device, max_evals_list, images: int, repeats: int,
               shap_batch: int) -> list[dict]:
    import torch

    from bps_vit.bps import LABELS
    from bps_vit.explain import ShapExplainer

    rows = []
    dtype = torch.float32
    for max_evals in max_evals_list:
        explainer = ShapExplainer(model, preprocessor.image_mean, preprocessor.image_std, max_evals=max_evals,
                                  batch_size=shap_batch, class_names=list(LABELS))
        calls = {"images": 0, "calls": 0}
        original = explainer.model_outputs

        def counting(hwc, output=None, _original=original):
            calls["images"] += len(hwc)
            calls["calls"] += 1
            return _original(hwc, output)

        explainer.model_outputs = counting
        size = preprocessor.height
        full, rest = divmod(max_evals, shap_batch)
        batches = [torch.randn(shap_batch, 3, size, size, device=device, dtype=dtype)] * full
        if rest:
            batches.append(torch.randn(rest, 3, size, size, device=device, dtype=dtype))

        def reference() -> float:
            return sum(forward_seconds(model, b, device) for b in batches)

        timed(lambda: explainer.explain(pixel_values[:1]), device)  # warm-up (imports, masker, partition tree)
        reference()
        shap_s, ref_s, evals, n_calls = [], [], [], []
        for r in range(repeats):
            for i in range(images):
                image = pixel_values[(r * images + i) % len(pixel_values)][None]
                ref_s.append(reference())
                calls["images"] = calls["calls"] = 0
                shap_s.append(timed(lambda: explainer.explain(image), device))
                evals.append(calls["images"])
                n_calls.append(calls["calls"])
        overhead = common.median(shap_s) / common.median(ref_s) - 1
        rows.append({
            "method": f"shap max_evals={max_evals}", "s_per_image": common.median(shap_s),
            "reference_s": common.median(ref_s), "overhead": overhead,
            "overhead_median_pair": common.median(s / r for s, r in zip(shap_s, ref_s)) - 1,
            "model_evals_per_image": common.median(evals), "model_calls_per_image": common.median(n_calls),
            "reference_calls": len(batches), "target": TARGETS["shap_overhead"],
            "ok": overhead <= TARGETS["shap_overhead"], "times": shap_s, "references": ref_s,
        })
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--config", default=None,
                        help="Model config to build and save (random init; default: the mini config, --smoke: tiny).")
    parser.add_argument("--model", default=None, help="Or a saved model folder (e.g. outputs/demo).")
    parser.add_argument("--batch-size", type=int, default=8, help="Explain batch (scripts/explain.py default 8).")
    parser.add_argument("--shap-batch-size", type=int, default=64)
    parser.add_argument("--shap-max-evals", default=None, help="Comma list (default 500,2000; quick: 500).")
    parser.add_argument("--shap-images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--num-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU).")
    parser.add_argument("--section", default="explain")
    parser.add_argument("--title", default=None)
    opts = parser.parse_args(argv)
    if opts.device == "auto":
        import torch

        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    opts.config = opts.config or common.run_size(opts, smoke=TINY_CONFIG, quick=MINI_CONFIG, full=MINI_CONFIG)
    evals = opts.shap_max_evals or common.run_size(opts, smoke="50", quick="500", full="500,2000")
    opts.shap_max_evals = [int(x) for x in evals.split(",")]
    opts.shap_images = opts.shap_images or (1 if opts.quick else 2)
    opts.repeats = opts.repeats or common.run_size(opts, smoke=1, quick=3, full=7)
    opts.num_images = opts.num_images or common.run_size(opts, smoke=common.SMOKE_IMAGES, quick=400, full=1200)
    return opts


def main(argv=None) -> dict:
    opts = parse_args(argv)
    ctx = common.start(opts)
    info = ctx.info
    model, preprocessor, pixel_values, device = load(opts)
    print(f"# {ctx.describe()}", flush=True)
    rollouts = bench_rollouts(model, pixel_values, device, opts.repeats)
    shap_rows = bench_shap(model, preprocessor, pixel_values, device, opts.shap_max_evals, opts.shap_images,
                           max(1, opts.repeats // 3), opts.shap_batch_size)
    table1 = common.markdown_table(
        ["method", "ms / image", "forward ms / image", "x forward (medians)", "x forward (median pair)", "target"],
        [[r["method"], f"{r['ms_per_image']:.1f}", f"{r['forward_ms_per_image']:.1f}", f"**{r['x_forward']:.2f}**",
          f"{r['x_forward_median_pair']:.2f}", f"<= {r['target']}" + (" ok" if r["ok"] else " MISSED")]
         for r in rollouts])
    table2 = common.markdown_table(
        ["method", "s / image", "max_evals forwards s", "images / calls (reference calls)", "overhead (medians)",
         "overhead (median pair)", "target"],
        [[r["method"], f"{r['s_per_image']:.2f}", f"{r['reference_s']:.2f}",
          f"{int(r['model_evals_per_image'])} / {int(r['model_calls_per_image'])} ({r['reference_calls']})",
          f"**{r['overhead'] * 100:.0f}%**", f"{r['overhead_median_pair'] * 100:.0f}%",
          f"<= {r['target'] * 100:.0f}%" + (" ok" if r["ok"] else " MISSED")] for r in shap_rows])
    attn = getattr(model.config, "_attn_implementation", "?")
    forward_flops = common.vit_forward_flops(model.config)
    forward_tflops = forward_flops / (rollouts[0]["forward_ms_per_image"] / 1000) / 1e12
    notes = [
        f"- Model {Path(opts.model).name if opts.model else Path(opts.config).name} reloaded with "
        f"`load_for_inference` ({attn} attention), explain batch {len(pixel_values)}, SHAP blur masker, log-odds, "
        f"batch {opts.shap_batch_size}; {opts.repeats} alternating repeats (SHAP {max(1, opts.repeats // 3)} x "
        f"{opts.shap_images} images), medians; device {opts.device}{' bf16' if opts.bf16 else ''}.",
        "- SHAP's model calls include `explain`'s own probability forward and the Partition explainer's small "
        "first calls (1, 1, 1, 2, 8, 32 images) before full batches; each call has a fixed cost, large on a busy "
        "CPU (OpenMP waits) or a GPU (launch and host work).",
        "- 'forward' = the same model's plain forward (no attentions returned) at the same batch, no_grad: "
        f"{forward_flops / 1e9:.2f} GFLOP per image (formula in bench/common.py), {forward_tflops:.3f} TFLOP/s achieved"
        + (f" = {forward_tflops * 1e12 / common.H100_BF16_DENSE_PEAK * 100:.1f}% of the H100 bf16 dense peak."
           if opts.device == "cuda" else "."),
    ]
    body = table1 + "\n\n" + table2 + "\n\n" + "\n".join(notes) + "\n"
    print()
    print(body)
    print("RATIOS:")
    for r in rollouts:
        print(f"  {r['method']:<22} {r['x_forward']:.2f}x forward (target <= {r['target']})")
    for r in shap_rows:
        print(f"  {r['method']:<22} overhead {r['overhead'] * 100:.0f}% (target <= 25%)")
    payload = {"opts": vars(opts), "machine": info, "context": ctx.as_dict(), "rollouts": rollouts, "shap": shap_rows}
    common.publish(opts, opts.section, "Explanation cost vs forward passes", body, payload, ctx)
    return payload


if __name__ == "__main__":
    main()
