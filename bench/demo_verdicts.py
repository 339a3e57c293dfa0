"""How often does each demo verdict hold? `make demo`'s train + explain over training seeds x thread counts.

Thread count changes the order of float reductions, so the trained model (and every verdict on it) differs between
machines (issue 23 item 9). This runs the README's demo commands (configs/demo.yaml, configs/demo_explain.yaml) once
per (seed, OMP_NUM_THREADS) and counts each verdict: "pointing game better in 4 of 6 runs".

    python bench/demo_verdicts.py                       # seeds 42 43 44 x threads 1 2: 6 runs, ~4-8 min each
    python bench/demo_verdicts.py --seeds 42 --threads 1 2

Runs go to --root (default $BPS_BENCH_DIR/demo_verdicts, $BPS_BENCH_DIR defaulting to /tmp/bps_bench), each in its
own folder, and a finished run is reused, so an interrupted table resumes. The table is printed (markdown) and saved
as demo_verdicts.json there. Other configurations (--data_config, --train_config, --explain_config; the smoke test's
tiny ones) need their own --root, or the demo's finished runs would be reused for them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import BENCH_DIR, REPO, markdown_table

from tests.support.env import use_offline_environment

CHECKS = ("deletion", "insertion", "randomization", "foci_mass", "pointing_game")
DEMO_CONFIGS = ("configs/demo_data.yaml", "configs/demo.yaml", "configs/demo_explain.yaml")


def run(command: list[str], threads: int, log: Path) -> None:
    env = use_offline_environment({**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, check=True)


def prepare(data_dir: Path, root: Path, config: str) -> None:
    if not (data_dir / "split_report.json").is_file():
        run([sys.executable, "scripts/prepare_data.py", config, "--output_dir", str(data_dir),
             "--raw_dir", str(root / "raw"), "--disable_tqdm", "true"], 2, root / "prepare.log")


def demo_run(data_dir: Path, seed: int, threads: int, root: Path, train_config: str, explain_config: str) -> dict:
    """The README's demo train + explain at this seed and thread count (reused when its files are there)."""
    out = root / f"seed{seed}_threads{threads}"
    metrics = out / "explain" / "explain_metrics.json"
    if not metrics.is_file():
        out.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "scripts/train.py", train_config, "--data_dir", str(data_dir), "--output_dir",
             str(out), "--seed", str(seed), "--overwrite_output_dir", "true", "--disable_tqdm", "true"],
            threads, out / "run.log")
        run([sys.executable, "scripts/explain.py", explain_config, "--model", str(out), "--data_dir",
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
    parser.add_argument("--root", type=Path, default=BENCH_DIR / "demo_verdicts",
                        help="where the data, the runs and demo_verdicts.json go")
    parser.add_argument("--data_config", default=DEMO_CONFIGS[0], help="scripts/prepare_data.py's config")
    parser.add_argument("--train_config", default=DEMO_CONFIGS[1], help="scripts/train.py's config")
    parser.add_argument("--explain_config", default=DEMO_CONFIGS[2], help="scripts/explain.py's config")
    opts = parser.parse_args(argv)
    root = opts.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data" / "bps"
    prepare(data_dir, root, opts.data_config)
    runs = []
    for seed in opts.seeds:
        for threads in opts.threads:
            runs.append(demo_run(data_dir, seed, threads, root, opts.train_config, opts.explain_config))
            (root / "demo_verdicts.json").write_text(json.dumps(runs, indent=2) + "\n")
            print(f"seed {seed}, {threads} thread(s): test accuracy {runs[-1]['test_accuracy']:.4f}", flush=True)
    per_run = markdown_table(["seed", "threads", "test accuracy", "whole-image perturbation removes the signal"],
                             [[r["seed"], r["threads"], f"{r['test_accuracy']:.4f}",
                               ", ".join(f"{k}: {v}" for k, v in r["removes_signal"].items())] for r in runs])
    print(f"\n{len(runs)} runs ({len(opts.seeds)} seeds x threads {opts.threads}):\n\n{count_table(runs)}\n\n{per_run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
