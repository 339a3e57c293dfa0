#!/usr/bin/env python
"""Run every benchmark (`make bench`) or its quick version (`make bench-quick`), then summarise.

    python bench/run_all.py            # full: ~25 min on a 2-core CPU (first run adds ~3 min of data generation)
    python bench/run_all.py --quick    # each bench about a minute

Each bench runs in its own process (so memory peaks and thread settings do not leak between them)
and updates its own section of BENCHMARKS.md; this script then rewrites the summary table at the top
from the JSON each bench left in $BPS_BENCH_DIR. Missed targets are reported, not failed: benchmarks
are not tests. A bench that crashes makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TITLES = {"train_throughput": "Training throughput vs compute limit",
          "eval_throughput": "Evaluation and prediction throughput vs pure forward",
          "explain_cost": "Explanation cost vs forward passes"}
BENCHES = ("fetch_throughput", "memory", "decode_codecs", "train_throughput", "eval_throughput", "explain_cost")


def load(name: str, opts) -> dict | None:
    path = common.BENCH_DIR / f"{common.json_name(name, opts)}.json"
    return json.loads(path.read_text()) if path.is_file() else None


THREADED = ("train_throughput", "eval_throughput", "explain_cost")
JSON_NAME = {"train_throughput": "train", "eval_throughput": "eval", "explain_cost": "explain"}


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def probe(payload: dict) -> str:
    value = payload.get("context", {}).get("contention_probe_at_start")
    return "n/a" if value is None else f"{value:.1f}"


def threaded_rows(opts, suffix: str, label: str) -> list[list[str]]:
    """Rows of the CPU-bound benches; suffix '' = default threads, '-1t' = the --threads 1 run."""
    rows: list[list[str]] = []
    train = load("train_throughput" if not suffix else "train" + suffix, opts)
    if train:
        for r in train["results"]:
            rows.append([f"1. training, {r['setting']}{label}", "limit time / real time >= 0.95", f"{r['ratio']:.3f}",
                         mark(r["ratio"] >= 0.95), probe(train)])
        rows.append([f"1. one-time decode cache{label}", "(reported)",
                     f"{train['decode']['cache_s_per_1000']:.1f} s / 1,000 images", "", probe(train)])
    evals = load("eval_throughput" if not suffix else "eval" + suffix, opts)
    if evals:
        for r in evals["results"]:
            rows.append([f"2. {r['path']}{label}", "forward time / real time >= 0.90", f"{r['ratio']:.3f}",
                         mark(r["ratio"] >= 0.90), probe(evals)])
    explain = load("explain" + suffix, opts)
    if explain:
        for r in explain["rollouts"]:
            rows.append([f"3. {r['method']}{label}", f"<= {r['target']}x a forward", f"{r['x_forward']:.2f}x",
                         mark(r["ok"]), probe(explain)])
        for r in explain["shap"]:
            rows.append([f"3. {r['method']}{label}", "overhead <= 25%",
                         f"{r['overhead'] * 100:.0f}% ({r['s_per_image']:.1f} s/image)", mark(r["ok"]), probe(explain)])
    return rows


def summary_rows(opts) -> list[list[str]]:
    rows = threaded_rows(opts, "", "") + threaded_rows(opts, "-1t", " (1 thread)")
    fetch = load("fetch_throughput", opts)
    if fetch:
        rows.append(["4. fetch, 16 workers vs 1", ">= 8x", f"{fetch['speedup']:.1f}x", mark(fetch["speedup"] >= 8),
                     probe(fetch)])
        resume = fetch["resume"]
        clean = resume["third_requests"] == 0 and resume["second_gets_of_present_files"] == 0
        rows.append(["4. resumed fetch", "re-downloads nothing",
                     f"{resume['second_gets']} GETs = the {resume['first_failed']} missing; complete folder: "
                     f"{resume['third_requests']} requests", mark(clean), probe(fetch)])
    memory = load("memory", opts)
    if memory:
        results = memory["results"]
        first, last = results[0], results[-1]
        per_1000 = 1000 / 1024 / (last["images"] - first["images"])  # kB differences -> MB per 1,000 images
        slope = (last["peak_kb"]["VmHWM"] - first["peak_kb"]["VmHWM"]) * per_1000
        anon = (last["peak_kb"]["RssAnon"] - first["peak_kb"]["RssAnon"]) * per_1000
        rows.append(["7.7 peak RSS per 1,000 images", "not all images in memory",
                     f"{slope:.1f} MB (private {anon:.1f} MB) per 1,000; {last['peak_kb']['VmHWM'] / 1024:.0f} MB "
                     f"peak at {last['images']} images", mark(anon < 50), probe(memory)])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)  # --quick, --smoke, --no-write and --output pass through to every bench
    parser.add_argument("--only", default=None, help="Comma list of benches to run (default: all).")
    parser.add_argument("--threads", type=int, default=None,
                        help="Run the CPU-bound benches (train, eval, explain) with this many torch threads; "
                             "1 writes separate '-1t' sections (robust on a machine shared with other jobs).")
    parser.add_argument("--summary-only", action="store_true", help="Only rewrite the summary from the last results.")
    opts = parser.parse_args(argv)
    names = [] if opts.summary_only else (opts.only.split(",") if opts.only else list(BENCHES))
    failed = []
    ratios = []
    for name in names:
        command = [sys.executable, str(Path(__file__).resolve().parent / f"{name}.py")]
        command += ["--smoke"] if opts.smoke else ["--quick"] if opts.quick else []
        command += ["--no-write"] if opts.no_write else []
        command += ["--output", str(opts.output)]
        if opts.threads and name in THREADED:
            section = f"{JSON_NAME[name]}-{opts.threads}t"
            command += ["--threads", str(opts.threads), "--section", section,
                        "--title", f"{TITLES[name]}, {opts.threads} torch thread(s)"
                        + (" (quick)" if opts.quick else "")]
        print(f"\n=== {name} {'(quick)' if opts.quick else ''}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=common.REPO, text=True, capture_output=True)
        sys.stdout.write(proc.stdout)
        print(f"=== {name}: {time.perf_counter() - start:.0f} s, exit {proc.returncode}", flush=True)
        if proc.returncode != 0:
            failed.append(name)
            sys.stderr.write(proc.stderr[-4000:])
        tail = proc.stdout.split("RATIOS", 1)
        if len(tail) == 2:
            ratios.append(f"[{name}] RATIOS" + tail[1].rstrip())
    rows = summary_rows(opts)
    table = common.markdown_table(["item", "target", "result", "status", "probe"], rows) if rows else "(no results)"
    if rows and common.writes_section(opts):
        ctx = common.RunContext(opts)
        title = "Summary" + (" of the smoke runs" if opts.smoke else " of the quick runs" if opts.quick
                             else " (full runs)")
        body = table + ("\n\nEach row comes from the latest run of its bench (its section below gives the command, "
                        "date and load). 'probe' is the contention probe at that bench's start: ~0.6 idle, >1 busy "
                        "cores (then the default-thread numbers are dominated by OpenMP waits; see the "
                        "1-thread rows).\n")
        common.write_section(common.section_key("summary", opts.quick, opts.smoke), title, body, opts.output, ctx)
    print("\n" + table)
    print("\n" + "\n".join(ratios))
    if failed:
        print(f"\nbenchmarks that crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
