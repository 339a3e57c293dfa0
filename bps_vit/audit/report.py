"""What the audit says: the three levels of confound in words, the printed summary, and its files."""

from __future__ import annotations

import sys
from pathlib import Path

from ..figures import plot_audit
from ..results import AuditResults, Inflation, Reading, StrategyResults, chance_band, fmt
from . import foci_test
from .inputs import PREDICTION_COLUMNS, write_csv

OOF_FILE = "oof_predictions.csv"
FIGURE_FILE = Path("figures") / "audit.png"


def _sham_reading(flagged: int, folds: int, plate_signature_found: bool) -> str:
    """What a sham control outside its band in most fold models means. The band treats the 0 Gy nuclei as
    independent, but they sit on a few plates: a model that reads each plate's signature also sends a whole sham
    plate to one class, so once plate signatures are found a branch-wide one cannot be told apart from them."""
    if flagged <= folds / 2:
        return ""
    if plate_signature_found:
        return (". The plate signatures found above move it too (the 0 Gy nuclei sit on a few plates), so a "
                "signature shared by a whole branch cannot be told apart from them here")
    return ". A signature shared by a whole branch is likely"


def readings(strategies: dict[str, StrategyResults], inflation: list[Inflation], causal_images: int) -> list[Reading]:
    """Each level of confound beside the check that can see it (`causal_images` 0: the causal test was skipped)."""
    verdicts = [item.verdict for item in inflation if item.metric == "accuracy"]
    per_plate = "; ".join(verdicts) or "not measured: it needs the plate strategy and the field or image strategy"
    flagged = [(name, s.sham_folds_flagged, len(s.folds)) for name, s in strategies.items()
               if s.sham_folds_flagged is not None]
    if flagged:
        total, folds = sum(k for _, k, _ in flagged), sum(n for _, _, n in flagged)
        means = ", ".join(f"{name} {fmt(strategies[name].sham_balanced_accuracy_mean, 3)}" for name, _, _ in flagged)
        sham = (f"outside the chance band in {total} of {folds} fold models "
                f"({', '.join(f'{name} {k}/{n}' for name, k, n in flagged)}); mean balanced accuracy {means}"
                + _sham_reading(total, folds, any(item.detected for item in inflation)))
    else:
        sham = "not available: the data folder has no sham (0 Gy) images"
    foci = "; ".join(f"{name} model (fold {name}-0): {foci_test.reading(s.causal_foci_test)}"
                     for name, s in strategies.items()) if causal_images else "skipped (--causal_images 0)"
    return [
        Reading("a signature of each plate (staining, exposure, focus)", "plate-held-out inflation", per_plate),
        Reading("a signature shared by a whole branch (Fe and X-ray imaged in separate runs)",
                "sham control (Fe vs X-ray on unirradiated nuclei)", sham),
        Reading("does the model read the damage at all", "causal foci test", foci),
    ]


CHANCE_LEVEL_METRICS = ("balanced_accuracy", "accuracy")  # best-model metrics whose chance level is 0.5


def folds_that_did_not_learn(results: AuditResults) -> list[str]:
    """Field and image folds whose best model never beat a coin on its own validation images: their held-out
    accuracy measures a failed training, not the split (a tiny model trained from scratch sometimes does not start
    learning). Such a fold validates on the plates it trains on, so chance there means nothing was learned. A plate
    fold validates on other plates: chance there is what a model of plate signatures scores, not a failed training."""
    metric = ((results.settings or {}).get("training") or {}).get("metric_for_best_model", "")
    if metric.removeprefix("eval_") not in CHANCE_LEVEL_METRICS:
        return []
    failed = []
    for strategy in results.strategies.values():
        for fold in (f for f in strategy.folds if f.strategy != "plate"):
            band = chance_band([fold.n_validation // 2, fold.n_validation - fold.n_validation // 2])
            if fold.best_metric is not None and band is not None and fold.best_metric <= 0.5 + band:
                failed.append(f"{fold.strategy}-{fold.fold} ({fmt(fold.best_metric, 3)})")
    return failed


def summary_lines(results: AuditResults, root: Path) -> list[str]:
    """What the audit prints: the table, the inflation, the three readings and where the files are."""
    baseline = results.baseline
    lines = ["", f"{'strategy':<9}{'folds':>6}{'images':>8}   {'accuracy [95% CI]':<24}"
             f"{'balanced accuracy [95% CI]':<28}sham flagged"]
    for name, strategy in results.strategies.items():
        flagged = strategy.sham_folds_flagged
        sham = f"{flagged}/{len(strategy.folds)}" if flagged is not None else "-"
        lines.append(f"{name:<9}{strategy.num_folds:>6}{strategy.n:>8}   {str(strategy.accuracy):<24}"
                     f"{str(strategy.balanced_accuracy):<28}{sham}")
    if baseline is not None:
        lines.append(f"baseline: always {baseline.majority_class} {fmt(baseline.accuracy, 3)} accuracy, 0.500 balanced"
                     f" (intervals: cluster bootstrap over {sum(map(len, results.plates.values()))} plates)")
    lines += [f"Inflation: {item.verdict}." for item in results.inflation if item.metric == "accuracy"]
    lines += [f"{reading.check}: {reading.result}." for reading in results.readings]
    if failed := folds_that_did_not_learn(results):
        lines.append(f"Warning: {len(failed)} fold model(s) never beat chance on their validation images (best "
                     f"validation score): {', '.join(failed)}. Their held-out accuracy measures a training that did "
                     "not start, not the split; rerun with another --seed or more epochs before reading a difference "
                     "that rests on them.")
    lines += [f"Files: {root}/{AuditResults.FILENAME}, {OOF_FILE}, {FIGURE_FILE}, folds/<strategy>-<k>/", ""]
    return lines


def write_outputs(root: Path, results: AuditResults, rows: list[dict]) -> None:
    """oof_predictions.csv and the figure (main process only; audit.json is written last, by the flow)."""
    write_csv(root / OOF_FILE, PREDICTION_COLUMNS, rows)
    plot_audit(results, root / FIGURE_FILE)


def print_summary(results: AuditResults, root: Path) -> None:
    print("\n".join(summary_lines(results, root)), file=sys.stderr)
