"""How often does each demo verdict hold? `make demo`'s train + explain over training seeds x thread counts.

Thread count changes the order of float reductions, so the trained model (and every verdict on it) differs between
machines (issue 23 item 9). This runs the README's demo commands (configs/demo.yaml, configs/demo_explain.yaml) once
per (seed, OMP_NUM_THREADS) and counts each verdict: "pointing game better in 4 of 6 runs".

    python bench/demo_verdicts.py                       # seeds 42 43 44 x threads 1 2: 6 runs, ~4-8 min each
    python bench/demo_verdicts.py --seeds 42 --threads 1 2

Runs go to $BPS_BENCH_DIR/demo_verdicts (default /tmp/bps_bench), each in its own folder, and a finished run is
reused, so an interrupted table resumes. The table is printed (markdown) and saved as demo_verdicts.json there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import BENCH_DIR, REPO, markdown_table

ROOT = BENCH_DIR / "demo_verdicts"
CHECKS = ("deletion", "insertion", "randomization", "foci_mass", "pointing_game")


def run(command: list[str], threads: int, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, check=True)


def prepare(data_dir: Path) -> None:
    if not (data_dir / "split_report.json").is_file():
        run([sys.executable, "scripts/prepare_data.py", "configs/demo_data.yaml", "--output_dir", str(data_dir),
             "--raw_dir", str(ROOT / "raw"), "--disable_tqdm", "true"], 2, ROOT / "prepare.log")


def demo_run(data_dir: Path, seed: int, threads: int) -> dict:
    """The README's demo train + explain at this seed and thread count (reused when its files are there)."""
    out = ROOT / f"seed{seed}_threads{threads}"
    metrics = out / "explain" / "explain_metrics.json"
    if not metrics.is_file():
        out.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "scripts/train.py", "configs/demo.yaml", "--data_dir", str(data_dir), "--output_dir",
             str(out), "--seed", str(seed), "--overwrite_output_dir", "true", "--disable_tqdm", "true"],
            threads, out / "run.log")
        run([sys.executable, "scripts/explain.py", "configs/demo_explain.yaml", "--model", str(out), "--data_dir",
             str(data_dir), "--output_dir", str(out / "explain"), "--disable_tqdm", "true"], threads, out / "run.log")
    results = json.loads((out / "bps_results.json").read_text())
    explained = json.loads(metrics.read_text())
    return {
        "seed": seed, "threads": threads,
        "test_accuracy": results["splits"]["test"]["accuracy"],
        "verdicts": {method: summary["beats_baseline"] for method, summary in explained["methods"].items()},
        "removes_signal": {key: check["removes_signal"]
                           for key, check in explained["perturbation_check"]["perturbations"].items()},
    }


def count_table(runs: list[dict]) -> str:
    """One row per method: each check as 'better in k of n' (n: runs with a verdict; the rest withheld one)."""
    methods = list(runs[0]["verdicts"]) if runs else []
    rows = []
    for method in methods:
        cells = []
        for check in CHECKS:
            values = [r["verdicts"][method].get(check) for r in runs]
            decided = [v for v in values if v is not None]
            word = "passes" if check == "randomization" else "better"
            cell = f"{word} in {sum(decided)} of {len(decided)}" if decided else "no verdict"
            if len(decided) < len(values):
                cell += f" ({len(values) - len(decided)} withheld)"
            cells.append(cell)
        rows.append([method, *cells])
    return markdown_table(["method", *CHECKS], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    opts = parser.parse_args(argv)
    ROOT.mkdir(parents=True, exist_ok=True)
    data_dir = ROOT / "data" / "bps"
    prepare(data_dir)
    runs = []
    for seed in opts.seeds:
        for threads in opts.threads:
            runs.append(demo_run(data_dir, seed, threads))
            (ROOT / "demo_verdicts.json").write_text(json.dumps(runs, indent=2) + "\n")
            print(f"seed {seed}, {threads} thread(s): test accuracy {runs[-1]['test_accuracy']:.4f}", flush=True)
    per_run = markdown_table(["seed", "threads", "test accuracy", "whole-image perturbation removes the signal"],
                             [[r["seed"], r["threads"], f"{r['test_accuracy']:.4f}",
                               ", ".join(f"{k}: {v}" for k, v in r["removes_signal"].items())] for r in runs])
    print(f"\n{len(runs)} runs ({len(opts.seeds)} seeds x threads {opts.threads}):\n\n{count_table(runs)}\n\n{per_run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
