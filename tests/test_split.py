"""The split on the real 77,177-row BPS meta.csv: counts, group leakage, proportions, time-point and sham rules; and
the leak check on a plan written by hand (no real data needed)."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from bps_vit.bps import MetaRow, read_meta_csv
from bps_vit.manifest import SPLITS
from bps_vit.split import SplitConfig, SplitError, SplitPlan, plan_split, select_rows
from tests.support.paths import REAL_META, SKIP_REASON

# Published per-condition row counts of the bucket's meta.csv (one plate per condition).
REAL_CONDITION_COUNTS = {
    "Fe 0.3Gy 24h": 4668, "Fe 0.3Gy 4h": 4582, "Fe 0.82Gy 24h": 4515, "Fe 0.82Gy 48h": 4593, "Fe 0.82Gy 4h": 4416,
    "Fe 0Gy 24h": 4651, "Fe 0Gy 48h": 4507, "Fe 0Gy 4h": 4632, "X-ray 0.1Gy 24h": 4408, "X-ray 0.1Gy 48h": 4451,
    "X-ray 0.1Gy 4h": 4726, "X-ray 0Gy 24h": 4437, "X-ray 0Gy 48h": 4448, "X-ray 0Gy 4h": 4803,
    "X-ray 1Gy 24h": 4519, "X-ray 1Gy 48h": 4371, "X-ray 1Gy 4h": 4450,
}


@pytest.fixture(scope="module")
def real_rows():
    if not REAL_META.is_file():
        pytest.skip(SKIP_REASON)
    table = read_meta_csv(REAL_META)
    assert table.rejected == []
    return table.rows


@pytest.fixture(scope="module")
def plans(real_rows):
    return {mode: plan_split(real_rows, SplitConfig(split_by=mode)) for mode in ("image", "field", "well", "plate")}


@pytest.mark.slow
def test_real_meta_counts_per_condition(real_rows):
    assert len(real_rows) == 77_177
    counts = Counter(row.condition for row in real_rows)
    assert len(counts) == 17
    assert counts["Fe 0.82Gy 4h"] == 4416
    assert dict(counts) == REAL_CONDITION_COUNTS
    assert "Fe 0.3Gy 48h" not in counts  # the design has no Fe 0.3 Gy at 48 h
    plates_per_condition = Counter()
    for condition in counts:
        plates = {r.filename.split("_")[0] for r in real_rows if r.condition == condition}
        plates_per_condition[len(plates)] += 1
    assert plates_per_condition == {1: 17}  # why random splits leak: one plate per condition


#: The group of an image, read straight from its name (P<plate>_<acq>-<well>_<field>_<object>_proj.tif), not
#: through the code under test: a split that quietly grouped by something finer would fail here.
GROUP_PATTERNS = {
    "image": r"^(.*)$",
    "field": r"^(P\d+_\d+-[A-Z]\d+_\d+)_\d+_proj\.tiff?$",
    "well": r"^(P\d+_\d+-[A-Z]\d+)_",
    "plate": r"^(P\d+)_",
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["image", "field", "well", "plate"])
def test_every_split_mode_has_zero_group_overlap(plans, mode):
    plan = plans[mode]
    assert plan.group_overlap() == {"train/validation": 0, "train/test": 0, "validation/test": 0}
    pattern = re.compile(GROUP_PATTERNS[mode])
    groups = {s: {pattern.match(r.filename).group(1) for r in plan.rows if plan.split_of[r.filename] == s}
              for s in SPLITS}
    assert all(groups[s] for s in SPLITS)
    assert not (groups["train"] & groups["validation"]) and not (groups["train"] & groups["test"])
    assert not (groups["validation"] & groups["test"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["image", "field", "well"])
def test_proportions_within_two_points(plans, mode):
    achieved = plans[mode].achieved_fractions()
    for split, target in {"train": 0.70, "validation": 0.15, "test": 0.15}.items():
        assert abs(achieved[split] - target) <= 0.02, (mode, achieved)


@pytest.mark.slow
def test_field_split_is_stratified_per_condition(plans):
    counts = plans["field"].counts()
    for condition in (c for c in REAL_CONDITION_COUNTS if " 0Gy " not in c):
        total = sum(counts[s].get(condition, 0) for s in SPLITS)
        assert abs(counts["train"][condition] / total - 0.70) < 0.03, condition
        assert counts["validation"][condition] > 0 and counts["test"][condition] > 0


@pytest.mark.slow
def test_plate_split_reports_what_it_achieved(plans):
    plan = plans["plate"]
    achieved = plan.achieved_fractions()
    assert sum(achieved.values()) == pytest.approx(1.0, abs=1e-3)
    by_label = plan.counts_by_label()
    assert all(by_label[s][label] > 0 for s in SPLITS for label in ("Fe", "X-ray"))
    groups = plan.groups_per_split()
    assert groups["train"] + groups["validation"] + groups["test"] == 11
    assert any("pooled per label" in note for note in plan.notes)


@pytest.mark.slow
def test_sham_excluded_by_default_and_restored_on_request(real_rows, plans):
    plan = plans["field"]
    sham_names = {r.filename for r in real_rows if r.dose_Gy == 0}
    assert len(sham_names) == 27_478
    assert {n for n, s in plan.split_of.items() if s == "sham"} == sham_names
    with_sham = plan_split(real_rows, SplitConfig(split_by="field", include_sham=True))
    assert "sham" not in set(with_sham.split_of.values())
    assert with_sham.counts()["sham"]["total"] == 0
    assert abs(with_sham.achieved_fractions()["train"] - 0.70) <= 0.02


@pytest.mark.slow
def test_test_hours_48_puts_exactly_the_48h_images_in_test(real_rows):
    plan = plan_split(real_rows, SplitConfig(split_by="field", test_hours=(48,)))
    expected = {r.filename for r in real_rows if r.hr_post_exposure == 48 and r.dose_Gy != 0}
    assert {n for n, s in plan.split_of.items() if s == "test"} == expected
    for row in real_rows:
        if plan.split_of[row.filename] in ("train", "validation"):
            assert row.hr_post_exposure != 48
    assert plan.group_overlap() == {"train/validation": 0, "train/test": 0, "validation/test": 0}
    rest = Counter(plan.split_of[r.filename] for r in real_rows if r.hr_post_exposure != 48 and r.dose_Gy != 0)
    assert abs(rest["train"] / (rest["train"] + rest["validation"]) - 0.70 / 0.85) < 0.02


@pytest.mark.slow
def test_plan_is_deterministic_per_seed_and_fast(real_rows):
    start = time.perf_counter()
    first = plan_split(real_rows, SplitConfig(split_by="field", seed=7))
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"planning 77k rows took {elapsed:.1f}s"
    again = plan_split(list(reversed(real_rows)), SplitConfig(split_by="field", seed=7))
    assert first.split_of == again.split_of  # input order does not matter
    other = plan_split(real_rows, SplitConfig(split_by="field", seed=8))
    changed = sum(first.split_of[n] != other.split_of[n] for n in first.split_of)
    assert changed > 1000


@pytest.mark.slow
def test_max_per_condition_is_stratified_deterministic_and_stable(real_rows):
    selection = select_rows(real_rows, max_per_condition=2000, seed=3)
    per_condition = Counter(r.condition for r in selection.rows)
    assert len(per_condition) == 17 and set(per_condition.values()) == {2000}
    assert selection.filtered_out == 77_177 - 34_000
    again = select_rows(real_rows, max_per_condition=2000, seed=3)
    assert [r.filename for r in again.rows] == [r.filename for r in selection.rows]
    fe_only = select_rows(real_rows, particles=["Fe"], max_per_condition=2000, seed=3)
    assert {r.filename for r in fe_only.rows} == {r.filename for r in selection.rows if r.particle_type == "Fe"}
    reseeded = select_rows(real_rows, max_per_condition=2000, seed=4)
    assert {r.filename for r in reseeded.rows} != {r.filename for r in selection.rows}


@pytest.mark.slow
def test_filters_select_and_reject_with_clear_errors(real_rows):
    picked = select_rows(real_rows, particles=["X-ray"], doses=[1.0], hours=[4, 24]).rows
    assert len(picked) == 4450 + 4519
    with pytest.raises(SplitError, match="--particles"):
        select_rows(real_rows, particles=["Iron"])
    with pytest.raises(SplitError, match=r"--doses 5"):
        select_rows(real_rows, doses=[5.0])
    with pytest.raises(SplitError, match="--hours 12"):
        select_rows(real_rows, hours=[12])
    with pytest.raises(SplitError, match="leave no images"):
        select_rows(real_rows, particles=["Fe"], doses=[0.1])


def test_bad_split_flags_are_named():
    with pytest.raises(SplitError, match="must be 1"):
        SplitConfig(train_fraction=0.8, validation_fraction=0.15, test_fraction=0.15)
    with pytest.raises(SplitError, match="--split_by"):
        SplitConfig(split_by="object")
    with pytest.raises(SplitError, match="--validation_fraction"):
        SplitConfig(train_fraction=0.85, validation_fraction=0.0, test_fraction=0.15)


@pytest.mark.slow
def test_test_hours_refuses_groups_that_mix_hours(real_rows):
    from bps_vit.bps import MetaRow

    rows = [r for r in real_rows if r.filename.startswith(("P242_", "P251_", "P280_", "P288_"))][:4000]
    # Relabel one field's images so it holds both 4 h and 48 h: a whole time point can no longer go to test.
    field = rows[0].filename.rsplit("_", 2)[0]
    mixed = [MetaRow(r.filename, r.dose_Gy, r.particle_type, 48 if r.filename.startswith(field) and i % 2 else
                     r.hr_post_exposure) for i, r in enumerate(rows)]
    with pytest.raises(SplitError, match="finer --split_by"):
        plan_split(mixed, SplitConfig(split_by="field", test_hours=(48,)))


def test_group_overlap_names_each_pair_of_splits_that_shares_a_group():
    """A plan written by hand with two planted leaks: field F1 has images in train AND validation, field F4 in test
    AND sham. Every other field sits in one split. The count per pair of splits is worked out from that table."""
    placed = {  # field -> the splits its two images went to
        "F1": ("train", "validation"), "F2": ("train", "train"), "F3": ("validation", "validation"),
        "F4": ("test", "sham"), "F5": ("test", "test"), "F6": ("sham", "sham"),
    }
    rows, split_of, group_of = [], {}, {}
    for field, splits in placed.items():
        for i, split in enumerate(splits):
            row = MetaRow(f"{field}_{i}.tif", 0.0 if split == "sham" else 1.0, "X-ray", 4)
            rows.append(row)
            split_of[row.filename], group_of[row.filename] = split, field
    plan = SplitPlan(SplitConfig(), rows, split_of, group_of, stratum_of_condition={}, target_fractions={})
    assert plan.group_overlap() == {"train/validation": 1, "train/test": 0, "validation/test": 0}
    assert plan.group_overlap(include_sham=True) == {
        "train/validation": 1, "train/test": 0, "train/sham": 0, "validation/test": 0, "validation/sham": 0,
        "test/sham": 1,
    }
