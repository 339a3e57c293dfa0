"""The synthetic BPS generator: deterministic, realistic, BPS-shaped, and with its class signal only in the foci."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bps_vit.bps import KNOWN_DOSES, KNOWN_HOURS, parse_filename, read_meta_csv
from bps_vit.imaging import Stretch
from bps_vit.synthetic import CONDITIONS, SyntheticConfig, generate_dataset, plan_rows, plate_look
from bps_vit.synthetic_image import MASK_FOCI, MASK_NEIGHBOUR, MASK_NUCLEUS, PlateLook, tracks_per_nucleus
from bps_vit.synthetic_stats import FOCI_BLIND_STATISTICS, dataset_statistics, layout_comparison
from tests.support.paths import REAL_IMAGE, REPO

SMALL = dict(min_size=100, max_size=150)  # small crops keep the tests fast; the physics is unchanged


def _make(tmp_path_factory, name: str, **kwargs):
    raw = tmp_path_factory.mktemp(name)
    config = SyntheticConfig(**{**SMALL, **kwargs})
    rows = generate_dataset(raw, config, progress=False)
    return raw, rows, dataset_statistics(raw, rows)


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    # ~440 irradiated images: a null AUC then has a standard deviation of ~0.03, so +-0.1 is a >3 sigma band
    return _make(tmp_path_factory, "default", num_images=680, seed=11)


@pytest.fixture(scope="module")
def chance_set(tmp_path_factory):
    return _make(tmp_path_factory, "chance", num_images=680, seed=12, difficulty=1.0)


#: Three worlds that differ only in their confound knob: same seed, same layout, same crops up to the plates' looks.
LOOK_WORLD = dict(num_images=340, seed=13, plates_per_condition=1, wells_per_plate=4)


@pytest.fixture(scope="module")
def plain_set(tmp_path_factory):
    return _make(tmp_path_factory, "plain", **LOOK_WORLD)


@pytest.fixture(scope="module")
def campaign_set(tmp_path_factory):
    return _make(tmp_path_factory, "campaign", campaign_effect=1.0, **LOOK_WORLD)


@pytest.fixture(scope="module")
def plate_set(tmp_path_factory):
    return _make(tmp_path_factory, "plate", plate_effect=1.0, **LOOK_WORLD)


def _cv_auc(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Cross-validated AUC of a logistic regression: what simple statistics reveal about the label."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return roc_auc_score(labels, scores)


def _select(rows, stats, sham: bool):
    keep = [i for i, row in enumerate(rows) if row.is_sham == sham]
    labels = np.array([rows[i].particle_type == "Fe" for i in keep])
    return keep, labels


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    config = SyntheticConfig(num_images=40, seed=3, **SMALL)
    generate_dataset(tmp_path / "a", config, progress=False)
    generate_dataset(tmp_path / "b", config, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 2 * 40 + 2  # images + masks + meta.csv + provenance
    assert all(a[name] == b[name] for name in a), [name for name in a if a[name] != b[name]][:5]

    generate_dataset(tmp_path / "c", SyntheticConfig(num_images=40, seed=4, **SMALL), progress=False)
    c = _files(tmp_path / "c")
    assert c["meta.csv"] != a["meta.csv"]
    first_image = next(name for name in a if name.endswith("_proj.tif") and "/" not in name)
    c_first = next(name for name in c if name.endswith("_proj.tif") and "/" not in name)
    assert c[c_first] != a[first_image]


@pytest.mark.slow
def test_worker_processes_do_not_change_the_output(tmp_path):
    serial = SyntheticConfig(num_images=34, seed=5, num_workers=1, **SMALL)
    parallel = SyntheticConfig(num_images=34, seed=5, num_workers=2, **SMALL)
    generate_dataset(tmp_path / "serial", serial, progress=False)
    generate_dataset(tmp_path / "parallel", parallel, progress=False)
    a, b = _files(tmp_path / "serial"), _files(tmp_path / "parallel")
    a.pop("synthetic_config.json"), b.pop("synthetic_config.json")  # records num_workers itself
    assert a == b


def test_bad_config_names_the_setting():
    with pytest.raises(ValueError, match="difficulty"):
        SyntheticConfig(difficulty=1.5)
    with pytest.raises(ValueError, match="plate_effect must lie in"):
        SyntheticConfig(plate_effect=-0.1)
    with pytest.raises(ValueError, match="campaign_effect must lie in"):
        SyntheticConfig(campaign_effect=3.5)
    with pytest.raises(ValueError, match="num_images"):
        SyntheticConfig(num_images=5)
    with pytest.raises(ValueError, match="min_size"):
        SyntheticConfig(min_size=300, max_size=200)


# ----------------------------------------------------------------------------- realism and layout


@pytest.mark.slow
def test_images_look_like_bps_crops(default_set):
    raw, rows, stats = default_set
    for row, stat in zip(rows, stats):
        with tifffile.TiffFile(raw / row.filename) as tif:
            page = tif.pages[0]
            assert page.dtype == np.uint16 and page.compression == 32946  # Deflate, like the bucket's files
            image = page.asarray()
        assert 100 <= image.shape[0] <= 150 and 100 <= image.shape[1] <= 150
        assert image.min() > 0
        assert 250 <= stat["background_level"] <= 700
        ratio = (stat["nucleus_mean"]) / stat["background_level"]
        assert 1.3 <= ratio <= 4.0, (row.filename, ratio)
    shapes = {tifffile.imread(raw / row.filename).shape for row in rows[:60]}
    assert len(shapes) > 20 and any(h != w for h, w in shapes)  # sizes vary, non-square happens
    ratios = np.array([s["nucleus_mean"] / s["background_level"] for s in stats])
    assert 1.6 <= np.median(ratios) <= 2.8  # "nucleus interior ~2x background"
    assert np.mean([s["neighbour_fraction"] > 0 for s in stats]) > 0.5  # neighbours at edges/corners


@pytest.mark.slow
def test_full_size_range_and_real_image_in_the_same_ranges(tmp_path):
    rows = generate_dataset(tmp_path, SyntheticConfig(num_images=60, seed=2), progress=False)
    sizes = np.array([tifffile.imread(tmp_path / row.filename).shape for row in rows])
    assert sizes.min() >= 100 and sizes.max() <= 280 and sizes.max() - sizes.min() > 60
    if not REAL_IMAGE.is_file():
        pytest.skip(f"real sample {REAL_IMAGE} absent (CI keeps a copy of shared/ beside the repo)")
    real = tifffile.imread(REAL_IMAGE).astype(np.float32)
    stats = dataset_statistics(tmp_path, rows)
    backgrounds = [s["background_level"] for s in stats]
    real_background = float(np.percentile(real, 10))
    assert min(backgrounds) - 60 <= real_background <= max(backgrounds) + 60
    real_ratio = float(np.percentile(real, 90)) / real_background
    ratios = [s["nucleus_mean"] / s["background_level"] for s in stats]
    assert min(ratios) <= real_ratio <= max(ratios) + 0.5


def _hierarchy(rows):
    levels = {key: defaultdict(set) for key in ("conditions_by_plate", "plates_by_condition", "wells", "fields")}
    objects_by_field = defaultdict(int)
    for row in rows:
        name = parse_filename(row.filename)
        levels["conditions_by_plate"][name.plate_id].add(row.condition)
        levels["plates_by_condition"][row.condition].add(name.plate_id)
        levels["wells"][name.plate_id].add(name.well_id)
        levels["fields"][name.well_id].add(name.field_id)
        objects_by_field[name.field_id] += 1
    return levels, objects_by_field


@pytest.mark.slow
def test_filenames_plates_and_design(default_set):
    raw, rows, _ = default_set
    assert read_meta_csv(raw / "meta.csv").rows == rows
    assert plan_rows(SyntheticConfig(num_images=680, seed=11, **SMALL)) == rows
    levels, _ = _hierarchy(rows)
    assert all(len(c) == 1 for c in levels["conditions_by_plate"].values())  # one condition per plate
    assert len(levels["plates_by_condition"]) == 17
    assert all(len(p) == 1 for p in levels["plates_by_condition"].values())  # like the real experiment
    assert "Fe 0.3Gy 48h" not in levels["plates_by_condition"]
    assert {(r.particle_type, r.dose_Gy, r.hr_post_exposure) for r in rows} == set(CONDITIONS)
    assert all(r.dose_Gy in KNOWN_DOSES[r.particle_type] and r.hr_post_exposure in KNOWN_HOURS for r in rows)
    assert {r.particle_type for r in rows if r.is_sham} == {"Fe", "X-ray"}  # sham carries its branch
    counts = np.array([sum(r.condition == c for r in rows) for c in levels["plates_by_condition"]])
    assert counts.max() - counts.min() <= 1  # balanced design


def _layout_counts(rows) -> tuple[list[int], list[int], list[int]]:
    """(wells per plate, fields per well, crops per field), counted from the names with a regex of their own."""
    pattern = re.compile(r"^(P\d+)_\d+-([A-Z]\d+)_(\d+)_\d+_proj\.tif$")
    crops = Counter(pattern.match(row.filename).groups() for row in rows)
    fields = Counter((plate, well) for plate, well, _ in crops)
    wells = Counter(plate for plate, _ in fields)
    return list(wells.values()), list(fields.values()), list(crops.values())


@pytest.mark.slow
def test_default_dataset_has_the_real_layout():
    config = SyntheticConfig(num_images=77_177)  # the real experiment's size: about 4,500 crops per plate
    rows = plan_rows(config)
    assert len(rows) == 77_177 and len({r.filename for r in rows}) == 77_177
    levels, _ = _hierarchy(rows)
    assert len(levels["plates_by_condition"]) == 17  # one plate per condition ...
    assert all(len(c) == 1 for c in levels["conditions_by_plate"].values())
    wells, fields, crops = _layout_counts(rows)
    assert wells == [8] * 17  # ... 8 wells per plate, about 24 fields per well, about 19 nuclei per field (issue 20)
    assert 22 <= np.median(fields) <= 27 and 17 <= np.median(crops) <= 21
    # a small dataset is a uniform draw of those nuclei: the fields of a well thin out, the wells stay
    small = plan_rows(SyntheticConfig(num_images=3000))
    wells, fields, crops = _layout_counts(small)
    assert np.mean(wells) > 7.5 and np.median(crops) == 1 and 10 <= np.median(fields) <= 17
    assert plan_rows(SyntheticConfig(num_images=3000)) == small  # deterministic per seed ...
    assert plan_rows(SyntheticConfig(num_images=3000, seed=1)) != small  # ... and the seed matters


@pytest.mark.slow
def test_layout_matches_the_real_meta_csv(real_meta):
    real = read_meta_csv(real_meta).rows
    synthetic = plan_rows(SyntheticConfig(num_images=len(real)))
    for level, (real_counts, synthetic_counts) in zip(("wells", "fields", "crops"),
                                                      zip(_layout_counts(real), _layout_counts(synthetic))):
        distance = ks_2samp(real_counts, synthetic_counts).statistic
        assert distance < 0.1, f"{level} per parent: KS distance {distance:.3f} from the real layout"  # 21 quantiles
    # docs/synthetic.md quotes the table built from this file (bench/synthetic_layout.py prints it)
    table = layout_comparison(real)
    docs = (REPO / "docs" / "synthetic.md").read_text(encoding="utf-8")
    assert table in docs, "docs/synthetic.md's layout table is stale; paste: python bench/synthetic_layout.py\n" + table


@pytest.mark.slow
def test_masks_align_with_the_images(default_set):
    raw, rows, stats = default_set
    for row, stat in list(zip(rows, stats))[::4]:
        image = tifffile.imread(raw / row.filename).astype(np.float32)
        mask = tifffile.imread(raw / "masks" / row.filename)
        assert mask.dtype == np.uint8 and mask.shape == image.shape
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        assert (mask == MASK_NUCLEUS).sum() > 0.1 * mask.size
        assert image[mask == MASK_NUCLEUS].mean() > 1.3 * stat["background_level"]
        if (mask == MASK_NEIGHBOUR).sum() > 200:
            assert image[mask == MASK_NEIGHBOUR].mean() > 1.2 * stat["background_level"]
        if (mask == MASK_FOCI).any():  # foci are bright spots on the nucleus
            assert image[mask == MASK_FOCI].mean() > image[mask == MASK_NUCLEUS].mean()
        if not row.is_sham:
            assert stat["foci_count"] >= 1, row.filename  # every irradiated nucleus carries damage


# ----------------------------------------------------------------------------- where the signal is


@pytest.mark.slow
def test_class_signal_is_in_the_foci_only(default_set):
    _, rows, stats = default_set
    keep, labels = _select(rows, stats, sham=False)
    blind = np.array([[stats[i][k] for k in FOCI_BLIND_STATISTICS] for i in keep])
    blind_auc = _cv_auc(blind, labels)
    assert abs(blind_auc - 0.5) < 0.1, f"foci-blind statistics predict the class: AUC {blind_auc:.3f}"
    focus_area = np.array([stats[i]["focus_mean_area"] for i in keep])
    focus_contrast = np.array([stats[i]["focus_mean_contrast"] for i in keep])
    assert roc_auc_score(labels, focus_area) > 0.9  # Fe foci are larger ...
    assert roc_auc_score(labels, focus_contrast) > 0.9  # ... and brighter
    counts = np.array([stats[i]["foci_count"] for i in keep])
    assert roc_auc_score(labels, counts) < 0.5  # ... and fewer


@pytest.mark.slow
def test_difficulty_one_puts_the_foci_at_chance_too(chance_set):
    _, rows, stats = chance_set
    keep, labels = _select(rows, stats, sham=False)
    for key in ("focus_mean_area", "focus_mean_contrast", "foci_count"):
        auc = roc_auc_score(labels, [stats[i][key] for i in keep])
        assert abs(auc - 0.5) < 0.1, f"{key}: AUC {auc:.3f} at difficulty 1"
    blind = np.array([[stats[i][k] for k in FOCI_BLIND_STATISTICS] for i in keep])
    assert abs(_cv_auc(blind, labels) - 0.5) < 0.1


@pytest.mark.slow
def test_sham_images_of_both_branches_are_alike_without_batch_effect(default_set):
    _, rows, stats = default_set
    keep, labels = _select(rows, stats, sham=True)
    names = FOCI_BLIND_STATISTICS + ("focus_mean_area", "foci_count")
    features = np.array([[stats[i][k] for k in names] for i in keep])
    auc = _cv_auc(features, labels)
    assert abs(auc - 0.5) < 0.12, f"sham Fe vs X-ray separable without a batch effect: AUC {auc:.3f}"


def _stretched_features(raw: Path, rows, keep) -> np.ndarray:
    """What survives the model's per-image percentile stretch: mean stretched level near and far from the nucleus."""
    out = []
    for i in keep:
        gray = Stretch()(tifffile.imread(raw / rows[i].filename))
        mask = tifffile.imread(raw / "masks" / rows[i].filename)
        nucleus = ((mask == MASK_NUCLEUS) | (mask == MASK_FOCI)).astype(np.uint8)
        ring = cv2.dilate(nucleus, np.ones((15, 15), np.uint8)).astype(bool) & (mask == 0)
        far = (mask == 0) & ~ring
        out.append([gray[region].mean() if region.any() else 0.0 for region in (ring, far, mask == MASK_NUCLEUS)])
    return np.array(out)


@pytest.mark.slow
def test_campaign_effect_is_caught_by_the_sham_control(campaign_set, default_set):
    for (raw, rows, stats), expect_effect in ((campaign_set, True), (default_set, False)):
        keep, labels = _select(rows, stats, sham=True)
        raw_features = np.array([[stats[i]["background_level"], stats[i]["nucleus_mean"]] for i in keep])
        raw_auc = _cv_auc(raw_features, labels)
        stretched_auc = _cv_auc(_stretched_features(raw, rows, keep), labels)
        if expect_effect:  # plates carry a signature: 0 Gy Fe vs X-ray far from chance, even after the stretch
            assert raw_auc > 0.85 and stretched_auc > 0.75, (raw_auc, stretched_auc)
        else:
            assert abs(raw_auc - 0.5) < 0.12 and abs(stretched_auc - 0.5) < 0.12, (raw_auc, stretched_auc)


@pytest.mark.slow
def test_foci_counts_follow_dose_and_repair(default_set):
    for particle, low, high in (("Fe", 0.3, 0.82), ("X-ray", 0.1, 1.0)):
        for hours in KNOWN_HOURS:
            if particle == "Fe" and hours == 48:
                continue
            assert tracks_per_nucleus(particle, high, hours, 0.2) > tracks_per_nucleus(particle, low, hours, 0.2)
        assert tracks_per_nucleus(particle, high, 4, 0.2) > tracks_per_nucleus(particle, high, 24, 0.2) > (
            tracks_per_nucleus(particle, high, 48, 0.2)
        )
        assert tracks_per_nucleus(particle, 0.0, 4, 0.2) == 0.0
    _, rows, stats = default_set
    count = defaultdict(list)
    for row, stat in zip(rows, stats):
        count[row.condition].append(stat["foci_count"])
    mean = {c: np.mean(v) for c, v in count.items()}
    assert mean["X-ray 1Gy 4h"] > mean["X-ray 1Gy 48h"] and mean["X-ray 1Gy 4h"] > mean["X-ray 0.1Gy 4h"]
    assert mean["X-ray 0.1Gy 48h"] > mean["X-ray 0Gy 48h"]  # low dose, late: still a few foci
    assert mean["X-ray 1Gy 4h"] > mean["Fe 0.82Gy 4h"]  # X-rays: more numerous foci


# ----------------------------------------------------------------------------- the two confound knobs


def _look_features(raw: Path, rows) -> np.ndarray:
    """How an image was acquired, measured here from pixels and mask (not with the generator's own statistics):
    background level, nucleus level above it, pixel noise, sharpness of the nucleus texture, background spread."""
    out = []
    for row in rows:
        image = tifffile.imread(raw / row.filename).astype(np.float32)
        mask = tifffile.imread(raw / "masks" / row.filename)
        background = image[mask == 0] if np.count_nonzero(mask == 0) > 50 else np.sort(image, axis=None)[:200]
        level = float(np.median(background))
        nucleus = float(np.median(image[mask == MASK_NUCLEUS])) - level
        steps = np.diff(image, axis=1)[(mask[:, 1:] == 0) & (mask[:, :-1] == 0)]
        noise = float(np.median(np.abs(steps - np.median(steps)))) if steps.size else 0.0
        sharpness = float(np.percentile(np.abs(cv2.Laplacian(image, cv2.CV_32F))[mask == MASK_NUCLEUS], 90))
        out.append([level, nucleus, noise, sharpness / max(nucleus, 1.0), np.percentile(background, 90) - level])
    return np.array(out)


def _plate_accuracy(features: np.ndarray, plates: np.ndarray) -> float:
    """Cross-validated accuracy of a logistic regression that names an image's plate from its look."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    return float(np.mean(cross_val_predict(model, features, plates, cv=folds) == plates))


def _plate_accuracies(world) -> dict[str, float]:
    """Plate accuracy over all plates and within each branch (8 Fe plates, 9 X-ray plates)."""
    raw, rows, _ = world
    features = _look_features(raw, rows)
    plates = np.array([parse_filename(row.filename).plate_id for row in rows])
    out = {"all": _plate_accuracy(features, plates)}
    for label in ("Fe", "X-ray"):
        keep = np.array([row.particle_type == label for row in rows])
        out[label] = _plate_accuracy(features[keep], plates[keep])
    return out


@pytest.mark.slow
def test_plate_effect_tells_plates_apart_and_campaign_effect_only_branches(plain_set, campaign_set, plate_set):
    plain, campaign, plate = (_plate_accuracies(world) for world in (plain_set, campaign_set, plate_set))
    # 17 plates (chance 0.06), 8 or 9 within a branch (chance 0.12): a plate signature names the plate ...
    assert plate["all"] > 0.45 and min(plate["Fe"], plate["X-ray"]) > 0.5, plate
    # ... the same images without it do not (measured 0.05-0.08 overall, 0.08-0.14 within a branch, seeds 13-15)
    assert plain["all"] < 0.12 and max(plain["Fe"], plain["X-ray"]) < 0.22, plain
    # a campaign shift tells the branches apart, so it helps name the plate overall, but not within a branch
    assert max(campaign["Fe"], campaign["X-ray"]) < 0.22, campaign


def test_plate_signature_is_drawn_per_plate_whatever_the_branch():
    branches = [particle for particle, _, _ in CONDITIONS]  # one plate per condition: plate k has condition k
    own = [plate_look(SyntheticConfig(plate_effect=1.0), branch, k) for k, branch in enumerate(branches)]
    assert len(set(own)) == 17  # every plate its own
    assert plate_look(SyntheticConfig(plate_effect=1.0), "X-ray", 0) == own[0]  # the branch does not enter the draw
    # a campaign shift moves every plate of a branch by the same amount and leaves each plate's own part alone
    config = SyntheticConfig(plate_effect=1.0, campaign_effect=0.5)
    for k, branch in enumerate(branches):
        look, sign = plate_look(config, branch, k), (1 if branch == "Fe" else -1)
        assert look.background - own[k].background == pytest.approx(sign * 0.5 * 70.0)
        assert (look.defocus, look.noise) == (own[k].defocus, own[k].noise)
    assert all(look.defocus >= 0 for look in own)  # a blur has no sign
    backgrounds = np.array([look.background for look in own])
    assert 35 < backgrounds.std() < 140  # plate_effect 1: a standard deviation of 70 grey levels (17 draws)
    assert plate_look(SyntheticConfig(), "Fe", 0) == PlateLook()  # no knob, no signature


def test_batch_effect_is_retired_with_a_message_naming_its_replacements():
    with pytest.raises(ValueError, match="batch_effect was retired.*campaign_effect.*plate_effect"):
        SyntheticConfig(batch_effect=1.0)
    assert "batch_effect" not in asdict(SyntheticConfig())  # not recorded in synthetic_config.json either


def test_the_three_named_worlds_differ_only_in_their_confound():
    from bps_vit.cli import parse_args
    from bps_vit.prepare import PrepareDataArguments

    configs = REPO / "configs"
    worlds = {name: asdict(parse_args([PrepareDataArguments], [str(configs / f"{name}.yaml")])[0].synthetic_config())
              for name in ("audit_data", "audit_data_campaign", "audit_data_clean")}
    knobs = {name: (world.pop("plate_effect"), world.pop("campaign_effect")) for name, world in worlds.items()}
    assert knobs["audit_data"][0] > 0 and knobs["audit_data"][1] == 0  # plate leak: per-plate signatures only
    assert knobs["audit_data_campaign"][0] == 0 and knobs["audit_data_campaign"][1] > 0  # one shift per branch
    assert knobs["audit_data_clean"] == (0, 0)
    assert worlds["audit_data"] == worlds["audit_data_campaign"] == worlds["audit_data_clean"]  # same foci, layout
    assert worlds["audit_data"]["plates_per_condition"] == 1  # the real layout: 11 irradiated plates to hold out
