"""Every bench/*.py runs to its end on a tiny input and leaves the numbers it promises (smoke, not speed: speed is
measured in bench/, never asserted here).

Each bench runs as a user runs it, `python bench/x.py`, in a subprocess with $BPS_BENCH_DIR in a temporary folder and
its markdown section written to a temporary --output (or none), so /tmp/bps_bench and BENCHMARKS.md are never touched.
The benches that take `--smoke` (bench/common.py: --quick on the fewest images that reach every code path) run through
`bench/run_all.py --smoke`, which then builds its summary from their JSON; the others with their own size flags.
The runs are independent and go two at a time (2 cores); the module fixture starts them all, the tests read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.folders import design_rows, make_prepared_folder, write_meta
from tests.support.paths import REPO
from tests.support.tiny_models import TINY_CONFIG, save_tiny_model

pytestmark = pytest.mark.slow
BENCH = REPO / "bench"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"

#: the benches run_all.py runs: JSON name -> the keys its payload promises (run_all's summary reads them)
SUMMARISED = {
    "fetch_throughput": {"speedup", "requests", "resume", "concurrent_s", "serial_s", "context"},
    "memory": {"results", "context"},
    "decode_codecs": {"ms_per_crop", "cpu_ms_per_crop", "n", "rounds"},
    "train_throughput": {"results", "decode", "context"},
    "eval_throughput": {"results", "decode_ms", "context"},
    "explain": {"rollouts", "shap", "context"},
}
SCRIPT_OF = {"explain": "explain_cost"}
SECTION_OF = {"fetch_throughput": "fetch", "train_throughput": "train", "eval_throughput": "eval"}
#: the demo's prepare -> train -> explain at its smallest: 60 synthetic images, one epoch of the tiny ViT at 32 px,
#: 4 explained images
DEMO_CONFIGS = {
    "data": "source: synthetic\nnum_images: 60\ndifficulty: 0.0\nseed: 0\nsplit_by: field\n",
    "train": (f"config_name: {TINY_CONFIG}\nimage_size: 32\nnum_train_epochs: 1\nper_device_train_batch_size: 16\n"
              "per_device_eval_batch_size: 64\neval_strategy: 'no'\nsave_strategy: 'no'\n"
              "load_best_model_at_end: false\nreport_to: none\ndataloader_num_workers: 0\n"),
    "explain": "split: test\nnum_images: 4\nmethods: rollout,grad_rollout\nfaithfulness_steps: 4\nmax_figures: 0\n",
}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commands(root: Path) -> dict[str, list[str]]:
    """bench script -> its arguments; what they read (a tiny saved model, a prepared folder, configs) is made here."""
    model = save_tiny_model(root / "app_latency" / "model")
    data = make_prepared_folder(root / "app_latency" / "bps", {"test": 1})
    (root / "layout").mkdir()
    write_meta(root / "layout" / "meta.csv", design_rows())
    (root / "demo").mkdir()
    for name, text in DEMO_CONFIGS.items():
        (root / "demo" / f"{name}.yaml").write_text(text)
    return {
        "run_all": ["--smoke", "--output", str(root / "BENCHMARKS.md")],
        "app_latency": ["--smoke", "--model", str(model), "--data_dir", str(data), "--no-write"],
        "ddp_unused_search": ["--smoke", "--no-write"],
        "synthetic_layout": ["--meta", str(root / "layout" / "meta.csv"), "--per_condition", "4"],
        "synthetic_separability": ["--quick", "--num_images", "60", "--difficulties", "0", "1"],
        "demo_verdicts": ["--seeds", "1", "--threads", "1", "--root", str(root / "demo" / "runs"),
                          *(arg for name in DEMO_CONFIGS
                            for arg in (f"--{name}_config", str(root / "demo" / f"{name}.yaml")))],
    }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    """Every bench run once (`python bench/<script>.py ARGS`, one torch thread each, two at a time): script ->
    (CompletedProcess, seconds); plus the private $BPS_BENCH_DIR, the --output file and BENCHMARKS.md before/after."""
    root = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, BPS_BENCH_DIR=str(root / "bench_dir"), HF_DATASETS_CACHE=str(root / "hf_datasets_cache"),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs = commands(root)
    before = file_digest(BENCHMARKS_MD)

    def run(script: str) -> tuple[subprocess.CompletedProcess, float]:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *runs[script]], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        return proc, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:  # run_all (the longest) first
        results = dict(zip(runs, pool.map(run, runs)))
    print("\nbench smoke seconds: " + ", ".join(f"{name} {seconds:.0f}" for name, (_, seconds) in results.items())
          + f"; all {time.perf_counter() - start:.0f} (wall, two at a time)")
    return {"runs": results, "dir": root / "bench_dir", "output": root / "BENCHMARKS.md", "root": root,
            "benchmarks_md": (before, file_digest(BENCHMARKS_MD))}


def finished(smoke: dict, script: str) -> subprocess.CompletedProcess:
    proc, _ = smoke["runs"][script]
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_every_bench_script_is_smoke_tested(tmp_path):
    scripts = {path.stem for path in BENCH.glob("*.py")} - {"common"}
    covered = set(commands(tmp_path)) | {SCRIPT_OF.get(name, name) for name in SUMMARISED}
    assert scripts == covered, "a bench without a smoke run here (or a run of a bench that is gone)"


def test_no_bench_wrote_into_benchmarks_md(smoke):
    before, after = smoke["benchmarks_md"]
    assert before == after


@pytest.mark.parametrize("name", sorted(SUMMARISED))
def test_run_all_runs_the_bench_and_it_leaves_its_numbers_and_its_section(smoke, name):
    finished(smoke, "run_all")
    payload = json.loads((smoke["dir"] / f"{name}_smoke.json").read_text())
    assert SUMMARISED[name] <= set(payload), f"{name}_smoke.json lacks {SUMMARISED[name] - set(payload)}"
    assert f"<!-- bench:{SECTION_OF.get(name, name)}:smoke -->" in smoke["output"].read_text()


def test_run_all_summarises_every_bench_it_ran(smoke):
    proc = finished(smoke, "run_all")
    summary = smoke["output"].read_text().split("<!-- bench:summary:smoke -->", 1)[1]
    summary = summary.split("<!-- /bench:summary:smoke -->", 1)[0]
    for row in ("1. training, cached-eval", "1. training, uncached-noeval", "1. one-time decode cache",
                "2. Trainer.evaluate", "2. predict_paths", "3. rollout", "3. grad_rollout", "3. shap max_evals=50",
                "4. fetch, 16 workers vs 1", "4. resumed fetch", "7.7 peak RSS per 1,000 images"):
        assert row in summary, f"no '{row}' row in the summary:\n{summary}"
    assert "benchmarks that crashed" not in proc.stderr


def test_app_latency_on_a_tiny_saved_model(smoke):
    finished(smoke, "app_latency")
    payload = json.loads((smoke["dir"] / "app_latency_smoke.scratch.json").read_text())
    assert {"answer_s", "answer_p90_s", "bare_s", "ratio", "answers", "bares"} <= set(payload)
    assert len(payload["answers"]) == 2  # 2 images x 1 repeat


def test_ddp_unused_search_on_two_processes(smoke):
    finished(smoke, "ddp_unused_search")
    payload = json.loads((smoke["dir"] / "ddp_unused_search_smoke.scratch.json").read_text())
    assert [r["steps"] for r in payload["results"]] == [2, 2]
    assert all(r["same_weights"] for r in payload["results"])  # the search changes the time, not the result


def test_synthetic_layout_prints_its_table(smoke):
    proc = finished(smoke, "synthetic_layout")
    assert "| | real meta.csv | synthetic, same size | real, 4 per condition |" in proc.stdout


def test_synthetic_separability_prints_one_row_per_difficulty(smoke):
    proc = finished(smoke, "synthetic_separability")
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2, proc.stdout


def test_demo_verdicts_on_tiny_configs(smoke):
    """Its own --root: never /tmp/bps_bench/demo_verdicts."""
    proc = finished(smoke, "demo_verdicts")
    runs = json.loads((smoke["root"] / "demo" / "runs" / "demo_verdicts.json").read_text())
    assert [(r["seed"], r["threads"]) for r in runs] == [(1, 1)]
    assert set(runs[0]["verdicts"]) == {"rollout", "grad_rollout"} and runs[0]["removes_signal"]
    assert "1 runs (1 seeds x threads [1])" in proc.stdout and "\n| rollout " in proc.stdout
