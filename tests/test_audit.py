"""The audit's plan, its numbers and its bad-input errors, without training (see test_audit_run.py for the runs)."""

from __future__ import annotations

import importlib.util
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bps_vit.audit import scoring
from bps_vit.audit.folds import AuditInputError, Image, Pool, plan_folds, pool_from_manifest
from tests.support.folders import bps_name, make_raw_folder
from tests.support.paths import REPO
from tests.support.tiny_models import TINY_CONFIG as TINY

# ----------------------------------------------------------------------------- the cluster bootstrap, by hand

#: (plate, label, images, correct): two labels of three plates each.
HAND_PLATES = [("A", 0, 10, 9), ("B", 0, 4, 1), ("C", 0, 6, 6), ("D", 1, 8, 2), ("E", 1, 12, 11), ("F", 1, 5, 5)]


def _held_out(plates, correct_of) -> scoring.HeldOut:
    labels, predictions, names = [], [], []
    for plate, label, n, _ in plates:
        correct = correct_of[plate]
        labels += [label] * n
        predictions += [label] * correct + [1 - label] * (n - correct)
        names += [plate] * n
    return scoring.HeldOut(np.array(labels), np.array(predictions), np.array(names, dtype=object),
                           np.array(["c"] * len(labels), dtype=object))


def _exact_distribution(value_of_counts) -> tuple[np.ndarray, np.ndarray]:
    """Every outcome of drawing 3 of {A,B,C} and 3 of {D,E,F} with replacement (729 equally likely), as values."""
    values = []
    for fe in itertools.product(range(3), repeat=3):
        for xray in itertools.product(range(3), repeat=3):
            counts = Counter([HAND_PLATES[i][0] for i in fe] + [HAND_PLATES[3 + i][0] for i in xray])
            values.append(value_of_counts(counts))
    values = np.array(values)
    return values, np.full(len(values), 1 / len(values))


def _accuracy_of_counts(counts, correct_of) -> float:
    total = sum(counts[p] * n for p, _, n, _ in HAND_PLATES)
    return sum(counts[p] * correct_of[p] for p, *_ in HAND_PLATES) / total


def _assert_interval_is_the_exact_quantiles(interval, values, probabilities, slack=0.006):
    """The exact probability below the lower bound is at most 2.5% and at or below it at least 2.5% (the same at the
    top), up to Monte Carlo slack."""
    assert probabilities[values < interval.low - 1e-12].sum() <= 0.025 + slack
    assert probabilities[values <= interval.low + 1e-12].sum() >= 0.025 - slack
    assert probabilities[values > interval.high + 1e-12].sum() <= 0.025 + slack
    assert probabilities[values >= interval.high - 1e-12].sum() >= 0.025 - slack


def test_cluster_bootstrap_matches_the_exact_resampling_distribution_of_a_hand_made_case():
    correct_of = {p: c for p, _, _, c in HAND_PLATES}
    held = _held_out(HAND_PLATES, correct_of)
    plates = [p for p, *_ in HAND_PLATES]
    weights = scoring.plate_resamples(np.array([label for _, label, _, _ in HAND_PLATES]), 40000, seed=1)
    assert (weights[:, :3].sum(axis=1) == 3).all() and (weights[:, 3:].sum(axis=1) == 3).all()  # within each label
    result = scoring.score_strategy(held, plates, weights)
    # the point estimate by hand: 34 correct of 45 images; balanced: mean of 16/20 and 18/25
    assert result["accuracy"].estimate == pytest.approx(34 / 45)
    assert result["balanced_accuracy"].estimate == pytest.approx((16 / 20 + 18 / 25) / 2)
    values, probabilities = _exact_distribution(lambda counts: _accuracy_of_counts(counts, correct_of))
    _assert_interval_is_the_exact_quantiles(result["accuracy"], values, probabilities)

    def balanced(counts):
        recalls = [sum(counts[p] * c for p, label, _, c in HAND_PLATES if label == k)
                   / sum(counts[p] * n for p, label, n, _ in HAND_PLATES if label == k) for k in (0, 1)]
        return sum(recalls) / 2

    values, probabilities = _exact_distribution(balanced)
    _assert_interval_is_the_exact_quantiles(result["balanced_accuracy"], values, probabilities)


def test_paired_inflation_interval_is_that_of_the_difference_on_the_same_plates():
    honest = {"A": 2, "B": 0, "C": 6, "D": 1, "E": 3, "F": 5}
    leaky = {p: c for p, _, _, c in HAND_PLATES}
    plates = [p for p, *_ in HAND_PLATES]
    weights = scoring.plate_resamples(np.array([label for _, label, _, _ in HAND_PLATES]), 40000, seed=2)
    difference = scoring.paired_difference(_held_out(HAND_PLATES, leaky), _held_out(HAND_PLATES, honest), plates,
                                           weights)
    assert difference.estimate == pytest.approx((34 - 17) / 45)
    values, probabilities = _exact_distribution(
        lambda counts: _accuracy_of_counts(counts, leaky) - _accuracy_of_counts(counts, honest))
    _assert_interval_is_the_exact_quantiles(difference, values, probabilities)
    assert "overstates accuracy on new plates by" in scoring.inflation_verdict("field", difference)


def test_inflation_verdict_says_no_inflation_when_the_interval_includes_zero():
    from bps_vit.results import PlateInterval

    assert "no inflation detected (the interval includes 0" in scoring.inflation_verdict(
        "field", PlateInterval(0.02, -0.03, 0.08))
    assert "understates" in scoring.inflation_verdict("image", PlateInterval(-0.2, -0.3, -0.1))


def test_a_flagged_sham_control_blames_a_branch_only_where_no_plate_signature_was_found():
    from bps_vit.audit.report import readings
    from bps_vit.results import AuditFold, Inflation, PlateInterval, StrategyResults

    def strategy(flagged: int) -> StrategyResults:
        folds = [AuditFold(strategy="plate", fold=k, held_out_plates=[], num_held_out_groups=1, n_train=1,
                           n_validation=1, n_held_out=10) for k in range(4)]
        interval = PlateInterval(0.5, 0.4, 0.6)
        return StrategyResults(strategy="plate", group="plate", num_folds=4, n=40, accuracy=interval,
                               balanced_accuracy=interval, folds=folds, sham_folds_flagged=flagged,
                               sham_balanced_accuracy_mean=0.45)

    def sham_line(flagged: int, detected: bool) -> str:
        inflation = [Inflation("field", "accuracy", PlateInterval(0.2, 0.1 if detected else -0.1, 0.3), detected, "")]
        return next(r.result for r in readings({"plate": strategy(flagged)}, inflation, 0) if "sham" in r.check)

    assert sham_line(3, detected=False).endswith("A signature shared by a whole branch is likely")
    assert "cannot be told apart" in sham_line(3, detected=True) and "is likely" not in sham_line(3, detected=True)
    assert sham_line(2, detected=False).endswith("plate 0.450")  # half or fewer flagged: no reading


def test_a_field_or_image_fold_that_never_beat_chance_on_its_validation_images_is_named():
    from bps_vit.audit.report import folds_that_did_not_learn
    from bps_vit.results import AuditFold, AuditResults, PlateInterval, StrategyResults

    def strategy(name: str, best: list[float]) -> StrategyResults:
        folds = [AuditFold(strategy=name, fold=k, held_out_plates=[], num_held_out_groups=1, n_train=600,
                           n_validation=120, n_held_out=190, best_metric=b) for k, b in enumerate(best)]
        interval = PlateInterval(0.8, 0.7, 0.9)
        return StrategyResults(strategy=name, group=name, num_folds=len(folds), n=950, accuracy=interval,
                               balanced_accuracy=interval, folds=folds)

    # a coin's band on 60 + 60 validation images: 0.5 +- 1.96 * sqrt(0.25/60 + 0.25/60) / 2 = 0.5 +- 0.089
    results = AuditResults(strategies={"plate": strategy("plate", [0.50, 0.95]),
                                       "image": strategy("image", [0.90, 0.50, 0.58, 0.60])},
                           settings={"training": {"metric_for_best_model": "balanced_accuracy"}})
    assert folds_that_did_not_learn(results) == ["image-1 (0.500)", "image-2 (0.580)"]
    results.settings["training"]["metric_for_best_model"] = "loss"  # no chance level to compare with
    assert folds_that_did_not_learn(results) == []


# ----------------------------------------------------------------------------- the plan


def _pool(plates_per_label=4, wells=2, fields=3, objects=2) -> Pool:
    images = []
    for label in (0, 1):
        for k in range(plates_per_label):
            plate = 901 + 10 * label + k
            for well, field, obj in itertools.product(range(wells), range(fields), range(objects)):
                name = bps_name(plate, f"B{well + 2}", field + 1, obj + 1)
                images.append(Image(name, f"x/{name}", label, f"{'Fe' if label == 0 else 'X-ray'} 1Gy {k}h",
                                    f"P{plate}", f"P{plate}-B{well + 2}", f"P{plate}-B{well + 2}-{field}", False))
    return Pool(images, [])


@pytest.mark.parametrize("strategy", ["plate", "field", "image"])
def test_every_image_is_held_out_exactly_once_and_never_trained_or_validated_on_in_its_fold(strategy):
    pool = _pool()
    folds = plan_folds(pool, [strategy], num_folds=3, validation_fraction=0.2, seed=0)
    held = np.concatenate([fold.held_out for fold in folds])
    assert sorted(held.tolist()) == list(range(len(pool.images)))
    group = {"plate": "plate", "field": "field", "image": "filename"}[strategy]
    for fold in folds:
        parts = [set(fold.train.tolist()), set(fold.validation.tolist()), set(fold.held_out.tolist())]
        assert sum(map(len, parts)) == len(set.union(*parts))  # disjoint (balancing may leave images unused)
        groups = [{getattr(pool.images[i], group) for i in part} for part in parts]
        assert not (groups[0] & groups[2]) and not (groups[1] & groups[2]) and not (groups[0] & groups[1])
        for part in parts[:2]:
            assert {pool.images[i].label for i in part} == {0, 1}
    if strategy == "plate":
        assert [fold.held_out_groups for fold in folds] == [(p,) for p in sorted({i.plate for i in pool.images})]


def test_pool_keeps_sham_images_apart_and_refuses_images_without_a_plate():
    rows = [{"filename": bps_name(901, "B2", 1, 1), "split": "train", "label": "Fe", "dose_Gy": "0.82",
             "hr_post_exposure": "4", "plate": "P901", "well": "w", "field": "f", "path": "train/Fe/a.tif"},
            {"filename": bps_name(903, "B2", 1, 1), "split": "sham", "label": "Fe", "dose_Gy": "0",
             "hr_post_exposure": "4", "plate": "P903", "well": "w", "field": "f", "path": "sham/Fe/b.tif"},
            {"filename": bps_name(904, "B2", 1, 1), "split": "train", "label": "X-ray", "dose_Gy": "0",
             "hr_post_exposure": "4", "plate": "P904", "well": "w", "field": "f", "path": "train/X-ray/c.tif"}]
    pool = pool_from_manifest(rows)
    assert [i.plate for i in pool.images] == ["P901"] and [i.plate for i in pool.sham] == ["P903", "P904"]
    rows[0]["plate"] = ""
    with pytest.raises(AuditInputError, match="1 of 3 images in manifest.csv have no plate"):
        pool_from_manifest(rows)


# ------------------------------------------------------------------------ bad input: one error line, nothing written


def _design(fe_plates: int, xray_plates: int, fields: int = 8):
    """(plate, particle, dose, hour) with that many irradiated plates per label, plus one sham plate each."""
    fe = [(901 + k, "Fe", 0.82, 4 + k) for k in range(fe_plates)] + [(950, "Fe", 0.0, 4)]
    xray = [(911 + k, "X-ray", 1.0, 4 + k) for k in range(xray_plates)] + [(960, "X-ray", 0.0, 4)]
    rows = []
    for plate, particle, dose, hour in fe + xray:
        for field in range(1, fields + 1):
            rows += [(bps_name(plate, "B2", field, obj), dose, particle, hour) for obj in (1, 2)]
    return rows


def _prepared(tmp_path: Path, rows) -> Path:
    from bps_vit.bps import read_meta_csv
    from bps_vit.prepared_folder import write_split
    from bps_vit.split import SplitConfig

    raw = tmp_path / "raw"
    make_raw_folder(raw, rows, size=40)
    meta = read_meta_csv(raw / "meta.csv").rows
    out = tmp_path / "bps"
    write_split(meta, {r.filename: raw / r.filename for r in meta}, out, SplitConfig(seed=0), disable_tqdm=True)
    return out


def _audit_script():
    spec = importlib.util.spec_from_file_location("audit_script", REPO / "scripts" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refused(capsys, data_dir: Path, out: Path, *flags: str) -> str:
    code = _audit_script().run(["--config_name", TINY, "--data_dir", str(data_dir), "--output_dir", str(out),
                                "--use_cpu", "true", "--report_to", "none", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists(), "a refused audit wrote its output folder"
    return err[0]


@pytest.mark.parametrize("fe, xray, flags, message", [
    (1, 1, (), r"one irradiated plate per label \({'Fe': 1, 'X-ray': 1}\): nothing can be held out"),
    (1, 3, ("--strategies", "field,image"), r"Fe has a single irradiated plate"),
    (2, 3, ("--strategies", "plate"), r"--strategies plate: Fe has 2 irradiated plate\(s\); .* at least 3"),
    (3, 3, ("--num_folds", "60"), r"--num_folds 60 is more than the 48 field groups"),
    (3, 3, ("--strategies", "planet"), r"--strategies 'planet': choose one or more of plate, field, image"),
    (3, 3, ("--max_eval_samples", "8"), r"--max_train_samples/--max_eval_samples: the audit holds out"),
])
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(tmp_path, capsys, fe, xray, flags, message):
    import re

    line = _refused(capsys, _prepared(tmp_path, _design(fe, xray)), tmp_path / "audit", *flags)
    assert re.search(message, line), line


def test_a_fold_that_would_leave_a_label_without_validation_images_is_refused():
    # Fe: 3 plates of one field each. Two field folds hold out two Fe fields in one fold, whose one Fe field left
    # cannot be both trained and validated on; three folds leave two, and the carve pools them by label.
    pool = _pool(plates_per_label=3, wells=1, fields=1, objects=4)
    xray = _pool(plates_per_label=3, wells=2, fields=3, objects=2).images
    pool = Pool([image for image in pool.images if image.label == 0] + [i for i in xray if i.label == 1], [])
    with pytest.raises(AuditInputError, match=r"fold field-\d \(holding out .*\) leaves no Fe image in its validation"):
        plan_folds(pool, ["field"], num_folds=2, validation_fraction=0.2, seed=0)
    for fold in plan_folds(pool, ["field"], num_folds=3, validation_fraction=0.2, seed=0):
        assert {pool.images[i].label for i in fold.validation} == {0, 1}


def test_each_fold_trains_on_as_many_images_of_each_label():
    pool = _pool(plates_per_label=4)
    fe_short = Pool([i for i in pool.images if not (i.label == 0 and i.plate == "P901")], [])
    for fold in plan_folds(fe_short, ["plate", "field"], num_folds=3, validation_fraction=0.2, seed=0):
        counts = np.bincount([fe_short.images[i].label for i in fold.train], minlength=2)
        assert counts[0] == counts[1] > 0, (fold.name, counts)
    unbalanced = plan_folds(fe_short, ["plate"], num_folds=3, validation_fraction=0.2, seed=0, balance=False)
    assert any(np.ptp(np.bincount([fe_short.images[i].label for i in f.train])) for f in unbalanced)


def test_data_without_plates_is_refused(tmp_path, capsys):
    import csv

    data = _prepared(tmp_path, _design(3, 3))
    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["plate"] = ""
    with open(data / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    line = _refused(capsys, data, tmp_path / "audit")
    assert f"{len(rows)} of {len(rows)} images in manifest.csv have no plate" in line, line
