"""Shared pieces of the benchmarks: data under /tmp, machine facts, robust timing, the BENCHMARKS.md writer.

A bench imports this module first: it puts the repository root on sys.path (so `bps_vit` and `tests.support`, the
fixtures the tests and the benches share, import from a plain checkout) and sets the offline environment.

Why medians of interleaved pairs: the CPU machines this runs on are often shared, and a step can
take 3x longer when a neighbour starts a test. Each bench therefore measures the real path and
its limit alternately in the same process (a real step, then a limit step, ...) and reports the
median of the per-pair ratios, which a load spike moves far less than a ratio of two separate runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/x.py` puts bench/, not the repository, on sys.path
    sys.path.insert(0, str(REPO))
BENCH_DIR = Path(os.environ.get("BPS_BENCH_DIR", "/tmp/bps_bench"))
BENCHMARKS_MD = REPO / "BENCHMARKS.md"

from tests.support.env import use_offline_environment  # noqa: E402  (needs REPO on sys.path)

# Offline and quiet before any HF import; a private datasets cache so benchmarks never touch ~/.cache.
use_offline_environment()
os.environ.setdefault("HF_DATASETS_CACHE", str(BENCH_DIR / "hf_datasets_cache"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

#: Synthetic images of a `--smoke` run: the fewest the split gives every split (train, validation, test, sham) from.
SMOKE_IMAGES = 60


def quiet() -> None:
    """No progress bars or info logs inside timed regions (they cost time and clutter the table)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# ----------------------------------------------------------------------------- data


def synthetic_raw(num_images: int, seed: int = 0) -> Path:
    """A synthetic raw BPS folder under BENCH_DIR, generated once and reused (marker file written last)."""
    from bps_vit.synthetic import SyntheticConfig, generate_dataset

    raw = BENCH_DIR / f"raw_{num_images}_{seed}"
    marker = raw / ".bench_complete"
    if not marker.is_file():
        t0 = time.perf_counter()
        generate_dataset(raw, SyntheticConfig(num_images=num_images, seed=seed), progress=False)
        marker.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return raw


def prepared_folder(num_images: int, seed: int = 0) -> Path:
    """`data/bps`-shaped folder (train/validation/test/sham + manifest) made by the real split code."""
    from bps_vit.bps import read_meta_csv
    from bps_vit.prepared_folder import write_split
    from bps_vit.split import SplitConfig

    out = BENCH_DIR / f"bps_{num_images}_{seed}"
    marker = out / ".bench_complete"
    if not marker.is_file():
        raw = synthetic_raw(num_images, seed)
        rows = read_meta_csv(raw / "meta.csv").rows
        write_split(rows, {r.filename: raw / r.filename for r in rows}, out, SplitConfig(seed=0),
                    masks_dir=raw / "masks", disable_tqdm=True)
        marker.write_text("ok\n")
    return out


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import datasets

        info["datasets"] = datasets.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine_info()
    parts = [f"{info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads)"]
    if "gpu" in info:
        parts.append(f"GPU {info['gpu']}")
    parts.append(f"python {info['python']}, torch {info['torch']}, transformers {info['transformers']}")
    if "datasets" in info:
        parts.append(f"datasets {info['datasets']}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- timing


def now() -> float:
    return time.perf_counter()


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """'median (min-max, n=...)' for a table cell."""
    values = list(values)
    if not values:
        return "n/a"
    return f"{median(values):.3f} ({min(values):.3f}-{max(values):.3f}, n={len(values)})"


@contextmanager
def stopwatch(record: list[float]):
    start = time.perf_counter()
    try:
        yield
    finally:
        record.append(time.perf_counter() - start)


def sync(device) -> None:
    """Wait for queued GPU work so wall-clock times mean something (a no-op on CPU)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- output


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "n/a"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def command_line() -> str:
    script = os.path.relpath(sys.argv[0], REPO) if os.path.isabs(sys.argv[0]) else sys.argv[0]
    return "python " + " ".join(shlex.quote(a) for a in [script, *sys.argv[1:]])


def section_key(name: str, quick: bool, smoke: bool = False) -> str:
    return f"{name}:smoke" if smoke else f"{name}:quick" if quick else name


def contention_probe(repeats: int = 5) -> float:
    """Time of a small layer-like torch workload on all cores over its time on one thread.

    About 0.5-0.7 on an idle 2-core machine. Above 1, other processes hold the cores and every
    OpenMP parallel region waits for a descheduled thread: small ops then run many times slower
    (measured here: a mini-ViT forward at batch 8 took 0.9 s with 2 threads, 0.03 s with 1), so
    absolute numbers are unreliable and ratios only hold because real and limit alternate.
    """
    import torch

    threads = torch.get_num_threads()
    many = max(2, usable_cores())  # what the cores allow, whatever this run's --threads
    x, w = torch.randn(256, 192), torch.randn(192, 768)

    def work() -> float:
        start = time.perf_counter()
        for _ in range(20):
            torch.nn.functional.layer_norm((x @ w).relu() @ w.T, (192,))
        return time.perf_counter() - start

    times = {}
    for n in (1, many):
        torch.set_num_threads(n)
        work()
        times[n] = median(work() for _ in range(repeats))
    torch.set_num_threads(threads)
    return times[many] / times[1]


class RunContext:
    """What a section header needs: machine, load and contention at the start (the end is read when writing)."""

    def __init__(self, opts=None) -> None:
        self.info = machine_info()
        self.load = load_average()
        self.probe_repeats = 1 if getattr(opts, "smoke", False) else 5  # a smoke run's numbers mean nothing anyway
        self.probe = contention_probe(self.probe_repeats)

    def as_dict(self) -> dict[str, Any]:
        return {"machine": self.info, "load_at_start": self.load, "contention_probe_at_start": self.probe,
                "date": _dt.datetime.now().astimezone().isoformat(timespec="minutes"), "command": command_line()}

    def describe(self) -> str:
        return (f"{machine_line(self.info)}; load {self.load}; contention probe {self.probe:.2f} "
                f"({max(2, usable_cores())}-thread/1-thread time of small ops; >1 = cores busy elsewhere)")


def write_section(key: str, title: str, body: str, path: Path, ctx: RunContext) -> Path:
    """Replace (or append) the block between `<!-- bench:KEY -->` markers in BENCHMARKS.md.

    Full runs and `--quick` runs have separate blocks, so a quick check never overwrites the
    numbers of a full run. The block starts with the exact command, the machine and the date.
    """
    header = [
        f"### {title}",
        "",
        f"- Command: `{command_line()}`",
        f"- Machine: {machine_line(ctx.info)}",
        f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Load average (1/5/15 min) at start / end: {ctx.load} / {load_average()}; contention probe at "
        f"start / end: {ctx.probe:.2f} / {contention_probe(ctx.probe_repeats):.2f} (see the notes on noise)",
        "",
    ]
    block = f"<!-- bench:{key} -->\n" + "\n".join(header) + "\n" + body.rstrip() + f"\n<!-- /bench:{key} -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        anchor = "<!-- bench:quick-runs -->" if key.endswith(":quick") else "<!-- bench:full-runs-end -->"
        if anchor in text:
            text = text.replace(anchor, block + "\n\n" + anchor)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_size(opts, *, smoke, quick, full):
    """The size this run uses: `smoke` under --smoke, `quick` under --quick, else `full`."""
    return smoke if getattr(opts, "smoke", False) else quick if opts.quick else full


def json_name(name: str, opts) -> str:
    """`<name>_smoke`, `<name>_quick` or `<name>`: the file the raw numbers of this kind of run go to."""
    return name + ("_smoke" if getattr(opts, "smoke", False) else "_quick" if opts.quick else "")


def save_json(name: str, data: dict, scratch: bool = False) -> Path:
    """Raw numbers of the last run (run_all's summary reads them), kept out of the repo.

    A `--no-write` run goes to `<name>.scratch.json`, so trying options never replaces the
    results the summary is built from.
    """
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    out = BENCH_DIR / f"{name}{'.scratch' if scratch else ''}.json"
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return out


def start(opts) -> RunContext:
    """Every bench's first lines: its thread count, quiet libraries, and the run context (load, probe)."""
    set_threads(getattr(opts, "threads", None))
    quiet()
    return RunContext(opts)


def publish(opts, name: str, title: str, body: str, payload: dict, ctx: RunContext,
            section: str | None = None) -> None:
    """Save the raw numbers (`json_name(name, opts)`.json) and, unless --no-write, the BENCHMARKS.md section.

    A --smoke run's numbers mean nothing: its section is written only to an --output other than BENCHMARKS.md.
    """
    save_json(json_name(name, opts), payload, scratch=opts.no_write)
    if writes_section(opts):
        smoke = getattr(opts, "smoke", False)
        title = getattr(opts, "title", None) or (title + (" (smoke)" if smoke else " (quick)" if opts.quick else ""))
        write_section(section_key(section or name, opts.quick, smoke), title, body, opts.output, ctx)


def writes_section(opts) -> bool:
    """Whether this run writes its markdown section: not under --no-write, and a --smoke run (whose numbers mean
    nothing) only into an --output other than BENCHMARKS.md."""
    smoke_into_benchmarks = getattr(opts, "smoke", False) and Path(opts.output).resolve() == BENCHMARKS_MD.resolve()
    return not opts.no_write and not smoke_into_benchmarks


def saved_random_model(config: str) -> Path:
    """A randomly initialised model from a config, saved like a training run (safetensors + processor
    with the stretch), so benches load it through the real `load_for_inference`. Speed does not
    depend on the weights."""
    from bps_vit.bps import LABELS
    from bps_vit.train import DataArguments, ModelArguments, build_model_and_processor

    folder = BENCH_DIR / "models" / Path(config).stem
    if not (folder / "model.safetensors").is_file():
        model, processor = build_model_and_processor(ModelArguments(config_name=config), DataArguments().stretch(),
                                                     LABELS)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder


class _Smoke(argparse.Action):
    """--smoke sets --quick too: every `opts.quick` branch takes its reduced path, and `run_size` its tiny sizes."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.smoke = namespace.quick = True


def add_common_args(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="A reduced run of about a minute.")
    parser.add_argument("--smoke", action=_Smoke, nargs=0, default=False,
                        help="Implies --quick, on the smallest input that runs every code path (tests/test_bench.py); "
                             "its numbers mean nothing, and it writes a section only to an --output other than "
                             "BENCHMARKS.md.")
    parser.add_argument("--no-write", action="store_true", help="Print only; do not update BENCHMARKS.md.")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD, help="Markdown file to update.")


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def cpu_now() -> float:
    """CPU seconds of this process, all threads: what a neighbour's load changes much less than wall time."""
    return time.process_time()


# ----------------------------------------------------------------------------- FLOPs and MFU

#: NVIDIA H100 SXM dense bf16 tensor-core peak (no sparsity), FLOP/s.
H100_BF16_DENSE_PEAK = 989e12


def vit_forward_flops(config) -> float:
    """Forward FLOPs of one image through a ViT classifier (a multiply-add counts 2), from the config.

    T = (image/patch)^2 + 1 tokens, d = hidden_size, f = intermediate_size, L layers, P patch, C channels:
      patch embedding    2 (T-1) (C P^2) d
      per layer          2 T d (3d)  QKV  +  2 T^2 d  scores  +  2 T^2 d  weights x V
                       + 2 T d d     output projection  +  2 T d f + 2 T f d  MLP
      classifier         2 d num_labels
    LayerNorm, softmax, GELU and residual adds are O(T d) and left out (<1% for ViT-B).
    ViT-B/16 at 224 px: 35.1 GFLOP (the usual "17.6 GMACs").
    """
    get = config.get if isinstance(config, dict) else (lambda k, default=None: getattr(config, k, default))
    image, patch = int(get("image_size")), int(get("patch_size"))
    d, f, layers = int(get("hidden_size")), int(get("intermediate_size")), int(get("num_hidden_layers"))
    channels = int(get("num_channels", 3) or 3)
    labels = int(get("num_labels", 2) or 2)
    patches = (image // patch) ** 2
    tokens = patches + 1
    embed = 2 * patches * channels * patch * patch * d
    per_layer = 2 * tokens * d * 3 * d + 4 * tokens * tokens * d + 2 * tokens * d * d + 4 * tokens * d * f
    return float(embed + layers * per_layer + 2 * d * labels)


def vit_train_flops(config) -> float:
    """Training FLOPs per image: forward + backward ~ 3x forward (backward = grads w.r.t. inputs and weights).

    Not the Trainer's `total_flos`: it estimates 6 x parameters x `pixel_values.numel()`, i.e. it
    counts every pixel value (150,528 per 224 px image) as a token, ~730x too high for a ViT-B.
    """
    return 3.0 * vit_forward_flops(config)
