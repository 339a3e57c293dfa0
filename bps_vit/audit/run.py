"""The audit's flow: plan (every check) -> output folder -> decode once -> one `run_training` per fold -> scores.

Each fold is a training run of `train.py`'s own path (`train.train_and_evaluate`: the same arguments, Trainer,
checkpoints, evaluation and files) in `folds/<strategy>-<k>/`, on `select`s of the one decode cache. Under
`accelerate launch` / `torchrun` every process runs this same flow, so each fold uses every process; only the main
process writes the audit's own files, between barriers.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from accelerate import PartialState

from ..bps import LABELS
from ..imaging import Preprocessor
from ..manifest import read_manifest, read_report
from ..provenance import RUN_ARTIFACTS, RunIdentity
from ..results import (
    AuditFold,
    AuditResults,
    Baseline,
    DataSummary,
    FoldRecord,
    Inflation,
    RunResults,
    StrategyResults,
)
from ..train import (
    BPSTrainingArguments,
    DataArguments,
    ModelArguments,
    build_model_and_processor,
    check_before_training,
    command_settings,
    model_summary,
    prepare_output_dir,
    resume_requested,
    run_identity,
    train_and_evaluate,
)
from ..trainer import last_complete_checkpoint
from . import foci_test, report, scoring
from .arguments import AuditArguments
from .folds import GROUP_OF_STRATEGY, AuditInputError, Fold, Pool, plan_folds, pool_from_manifest
from .inputs import (
    DECODED_DIR,
    FOLD_MANIFEST,
    FOLD_PREDICTIONS,
    FOLDS_DIR,
    PREDICTION_COLUMNS,
    decode_once,
    finished_fold,
    fold_dir,
    fold_fingerprint,
    fold_inputs,
    fold_manifest,
    prediction_rows,
    read_csv,
    remove_decoded,
    write_csv,
)

#: What an audit writes in its folder (`--overwrite_output_dir` removes exactly these, and a training run's files).
AUDIT_ARTIFACTS = (*RUN_ARTIFACTS, AuditResults.FILENAME, report.OOF_FILE, FOLDS_DIR, DECODED_DIR)


@dataclass
class AuditPlan:
    pool: Pool
    folds: list[Fold]
    strategies: list[str]
    identity: RunIdentity


@dataclass
class FoldRun:
    summary: AuditFold
    rows: list[dict]  # its predictions.csv
    training_s: float  # 0 for a fold finished by an earlier run


def plan_audit(model_args: ModelArguments, data_args: DataArguments, training_args: BPSTrainingArguments,
               audit_args: AuditArguments) -> AuditPlan:
    """Every check that can fail, before anything is decoded or written."""
    audit_args.check()
    if data_args.max_train_samples or data_args.max_eval_samples:
        raise AuditInputError("--max_train_samples/--max_eval_samples: the audit holds out and scores every image; "
                              "prepare a smaller data folder instead (--num_images, --max_per_condition).")
    check_before_training(model_args, data_args, training_args)
    pool = pool_from_manifest(read_manifest(data_args.data_dir))
    strategies = audit_args.strategy_list()
    folds = plan_folds(pool, strategies, audit_args.num_folds, audit_args.validation_fraction, audit_args.fold_seed,
                       audit_args.balance_labels)
    return AuditPlan(pool, folds, strategies, run_identity(model_args, data_args))


def _state():

    return PartialState()


def _fold_summary(fold: Fold, pool: Pool, results: RunResults) -> AuditFold:
    training = results.training
    return AuditFold(
        strategy=fold.strategy, fold=fold.index,
        held_out_plates=sorted({pool.images[i].plate for i in fold.held_out}),
        num_held_out_groups=len(fold.held_out_groups), n_train=len(fold.train), n_validation=len(fold.validation),
        n_held_out=len(fold.held_out), accuracy=results.splits["test"].accuracy, sham_control=results.sham_control,
        best_metric=training.best_metric, epochs_run=training.epochs_run, train_runtime_s=training.train_runtime_s,
        model_fingerprint=results.model_fingerprint,
    )


def run_fold(fold: Fold, plan: AuditPlan, args: tuple, decoded, stretch, preprocessor,
             audit_args: AuditArguments) -> FoldRun:
    """Train and score one fold, or read it back when an earlier run of this audit finished it."""
    model_args, data_args, training_args = args
    folder = fold_dir(training_args.output_dir, fold)
    fingerprint = fold_fingerprint(plan.identity.data_fingerprint, plan.pool, fold)
    record = finished_fold(folder, fingerprint) if resume_requested(training_args) else None
    if record is not None:
        return FoldRun(record.fold, read_csv(folder / FOLD_PREDICTIONS), 0.0)
    state = _state()
    if state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FOLD_MANIFEST).write_text(fold_manifest(plan.pool, fold), encoding="utf-8")
    state.wait_for_everyone()
    checkpoint = last_complete_checkpoint(folder) if resume_requested(training_args) else None
    fold_args = dataclasses.replace(training_args, output_dir=str(folder), overwrite_output_dir=checkpoint is None,
                                    resume_from_checkpoint="last" if checkpoint else None)
    if state.is_main_process:
        print(f"\nFold {fold.name}: holding out {_held_out_text(fold)}; training on "
              f"{len(fold.train)}, validating on {len(fold.validation)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    outcome = train_and_evaluate(model_args, data_args, fold_args,
                                 fold_inputs(fold, plan.pool, decoded, stretch, preprocessor, fingerprint))
    seconds = time.perf_counter() - started
    rows = prediction_rows(plan.pool, fold, outcome.probabilities)
    summary = _fold_summary(fold, plan.pool, outcome.results)
    if state.is_main_process:
        write_csv(folder / FOLD_PREDICTIONS, PREDICTION_COLUMNS, rows)
        FoldRecord(summary, fingerprint).to_json(folder / FoldRecord.FILENAME)  # last: the fold is finished
        if not audit_args.keep_checkpoints:
            for path in folder.glob("checkpoint-*"):
                shutil.rmtree(path)
    state.wait_for_everyone()
    return FoldRun(summary, rows, seconds)


def _held_out_text(fold: Fold) -> str:
    """"plate P901 (89 images)", "39 fields (194 images)", "194 images"."""
    images = f"{len(fold.held_out)} images"
    if fold.strategy == "plate":
        return f"plate {', '.join(fold.held_out_groups)} ({images})"
    if fold.strategy == "image":
        return images
    return f"{len(fold.held_out_groups)} {GROUP_OF_STRATEGY[fold.strategy]}s ({images})"


# ----------------------------------------------------------------------------- scores


def _held_out(rows: list[dict], strategy: str) -> scoring.HeldOut:
    chosen = [row for row in rows if row["role"] == "held_out" and row["strategy"] == strategy]
    return scoring.HeldOut(
        labels=np.array([LABELS.index(row["label"]) for row in chosen], dtype=np.int64),
        predictions=np.array([LABELS.index(row["prediction"]) for row in chosen], dtype=np.int64),
        plates=np.array([row["plate"] for row in chosen], dtype=object),
        conditions=np.array([row["condition"] for row in chosen], dtype=object),
    )


def _strategy_results(strategy: str, held: scoring.HeldOut, plates: list[str], weights: np.ndarray,
                      folds: list[AuditFold]) -> StrategyResults:
    scores = scoring.score_strategy(held, plates, weights)
    shams = [fold.sham_control for fold in folds if fold.sham_control is not None]
    return StrategyResults(
        strategy=strategy, group=GROUP_OF_STRATEGY[strategy].replace("filename", "image"), num_folds=len(folds),
        n=len(held.labels), accuracy=scores["accuracy"], balanced_accuracy=scores["balanced_accuracy"],
        per_plate=scoring.per_plate(held), folds=folds,
        sham_folds_flagged=sum(bool(s.batch_signature_suspected) for s in shams) if shams else None,
        sham_balanced_accuracy_mean=float(np.mean([s.balanced_accuracy for s in shams])) if shams else None,
    )


def score_audit(plan: AuditPlan, runs: list[FoldRun], audit_args: AuditArguments):
    """(strategy results, inflation): every number from the held-out rows, intervals over the same plate draws."""
    rows = [row for run in runs for row in run.rows]
    plate_label = {image.plate: image.label for image in plan.pool.images}  # one condition, so one label, per plate
    plates = sorted(plate_label)
    weights = scoring.plate_resamples(np.array([plate_label[p] for p in plates]), audit_args.bootstrap_resamples,
                                      audit_args.bootstrap_seed)
    held = {strategy: _held_out(rows, strategy) for strategy in plan.strategies}
    strategies = {strategy: _strategy_results(strategy, held[strategy], plates, weights,
                                              [run.summary for run in runs if run.summary.strategy == strategy])
                  for strategy in plan.strategies}
    inflation = []
    for leaky in (s for s in plan.strategies if s != "plate" and "plate" in plan.strategies):
        for metric in scoring.METRICS:
            difference = scoring.paired_difference(held[leaky], held["plate"], plates, weights, metric)
            verdict = scoring.inflation_verdict(leaky, difference)
            inflation.append(Inflation(leaky, metric, difference, bool(difference.low > 0), verdict))
    return strategies, inflation


def add_causal_tests(strategies: dict[str, StrategyResults], plan: AuditPlan, data_dir: str, root: str,
                     audit_args: AuditArguments) -> None:
    """Explain's causal foci test on each strategy's first fold model (main process; synthetic data only)."""
    for strategy, results in strategies.items():
        fold = next(f for f in plan.folds if f.strategy == strategy)
        images = foci_test.images_for_test(plan.pool, fold, data_dir, audit_args.causal_images, audit_args.fold_seed)
        test = foci_test.causal_foci_test(fold_dir(root, fold), images, data_dir, audit_args.fold_seed)
        results.causal_foci_test, results.causal_foci_test_fold = test, fold.name if test else None


# ----------------------------------------------------------------------------- the flow


def _audit_results(plan: AuditPlan, strategies, inflation, model_args, data_args, training_args, audit_args,
                   processor_model) -> AuditResults:
    labels = np.array([image.label for image in plan.pool.images])
    majority = int(np.bincount(labels, minlength=len(LABELS)).argmax())
    counts = {"held_out": {label: int((labels == k).sum()) for k, label in enumerate(LABELS)},
              "sham": {label: sum(i.label == k for i in plan.pool.sham) for k, label in enumerate(LABELS)}}
    model, preprocessor, stretch = processor_model
    return AuditResults(
        strategies=strategies, inflation=inflation,
        readings=report.readings(strategies, inflation, audit_args.causal_images),
        baseline=Baseline(LABELS[majority], float((labels == majority).mean())),
        data=DataSummary(data_dir=str(data_args.data_dir), source=read_report(data_args.data_dir).get("source"),
                         counts=counts),
        plates=plan.pool.plates_per_label(), data_fingerprint=plan.identity.data_fingerprint,
        model=model_summary(model_args, model, preprocessor.height),
        preprocessing=stretch.to_dict(),
        bootstrap={"resamples": audit_args.bootstrap_resamples, "seed": audit_args.bootstrap_seed, "level": 0.95,
                   "resampled": "whole plates, with replacement, within each label"},
        settings={"audit": dataclasses.asdict(audit_args), **command_settings(model_args, data_args, training_args)},
    )


def run_audit(model_args: ModelArguments, data_args: DataArguments, training_args: BPSTrainingArguments,
              audit_args: AuditArguments) -> AuditResults:
    """Plan, train every fold, score, and write the audit to `training_args.output_dir`."""
    started = time.perf_counter()
    plan = plan_audit(model_args, data_args, training_args, audit_args)
    prepare_output_dir(training_args, plan.identity, AUDIT_ARTIFACTS)
    # --stretch_mode dataset: one clip for the audit, from every irradiated image (label-free; see README)
    stretch = data_args.stretch(sorted(str(Path(data_args.data_dir) / image.path) for image in plan.pool.images))
    model, processor = build_model_and_processor(model_args, stretch, LABELS)  # the model is counted, then dropped
    preprocessor = Preprocessor.from_processor(processor, stretch)
    decoded = decode_once(plan.pool, data_args, preprocessor, training_args.output_dir)
    runs = [run_fold(fold, plan, (model_args, data_args, training_args), decoded, stretch, preprocessor, audit_args)
            for fold in plan.folds]
    strategies, inflation = score_audit(plan, runs, audit_args)
    root = Path(training_args.output_dir)
    state = _state()
    if state.is_main_process and audit_args.causal_images:
        add_causal_tests(strategies, plan, data_args.data_dir, str(root), audit_args)
    results = _audit_results(plan, strategies, inflation, model_args, data_args, training_args, audit_args,
                             (model, preprocessor, stretch))
    if state.is_main_process:
        report.write_outputs(root, results, [row for run in runs for row in run.rows])
        results.timing = _timing(started, runs)
        results.to_json(root / AuditResults.FILENAME)  # last: the audit is finished
        remove_decoded(root)
        report.print_summary(results, root)
    state.wait_for_everyone()
    return results


def _timing(started: float, runs: list[FoldRun]) -> dict[str, float]:
    """Wall time of the audit so far and of its folds' training (`train_and_evaluate`), run in this command."""
    total = time.perf_counter() - started
    training = sum(run.training_s for run in runs)
    return {"total_s": total, "folds_training_s": training, "outside_training_s": total - training,
            "outside_share": (total - training) / total, "folds_trained": sum(run.training_s > 0 for run in runs),
            "folds_reused": sum(run.training_s == 0 for run in runs)}
