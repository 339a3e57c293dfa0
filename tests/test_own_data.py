"""A lab's own images: `--source folder` and `--source table` with any file names, labels and groups from the data,
hostile paths refused, and errors that name the fix (issue 24). Tiny 48 px crops; no model here."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from bps_vit.data import check_prepared_folder
from bps_vit.prepare import PrepareDataArguments, prepare_data
from bps_vit.split import SplitError
from tests.support.images import bps_like_image, tiff_bytes
from tests.support.paths import REPO

SPLITS = ("train", "validation", "test")
#: Class names a lab might use: a space, a digit first, mixed case. Order by `labels.ordered_labels`: numbers first.
CLASSES = ("2 Gy protons", "Alpha", "ctrl")
#: The split report's note when the data names no groups, as a user reads it (written out, not split.py's constant).
GROUPS_UNKNOWN_WORDS = (
    "Groups unknown: the data names no plate, well or field, so images were split one by one (--split_by image) and "
    "crops of one field or plate may sit in both train and test, so accuracy may be inflated."
)


def args(**kwargs) -> PrepareDataArguments:
    kwargs.setdefault("disable_tqdm", True)
    kwargs.setdefault("num_workers", 2)
    return PrepareDataArguments(**kwargs)


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiff_bytes(bps_like_image(seed)))


def make_folder(root: Path, per_class: int = 12) -> list[dict]:
    """`root/<class>/img <n>.tif`: the same file names in every class folder. Returns table rows with groups:
    each class on 6 plates, 1 well and 2 fields each (12 fields), one image per field."""
    rows = []
    for c, label in enumerate(CLASSES):
        for i in range(per_class):
            relative = f"{label}/img {i}.tif"
            write_image(root / relative, seed=100 * c + i)
            rows.append({"path": relative, "label": label, "plate": f"plate{c}{i % 6}", "well": "A1",
                         "field": str(i // 6)})
    return rows


def write_table(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_folder_of_three_classes_with_any_names(tmp_path):
    root = tmp_path / "crops"
    make_folder(root)
    out = tmp_path / "bps"
    with pytest.raises(SplitError, match=r"--split_by field: 36 of 36 images have no field.*--split_by image"):
        prepare_data(args(source="folder", raw_dir=str(root), output_dir=str(out)))
    assert not out.exists()  # refused before anything was written

    report = prepare_data(args(source="folder", raw_dir=str(root), output_dir=str(out), split_by="image"))
    assert report["labels"] == list(CLASSES) and report["label_column"] == "label"
    assert report["groups_known"] is False and GROUPS_UNKNOWN_WORDS in report["notes"]
    counts = check_prepared_folder(out)
    assert sorted(counts["train"]) == sorted(CLASSES) and sum(sum(c.values()) for c in counts.values()) == 36
    rows = manifest(out)
    assert len({r["filename"] for r in rows}) == 36  # `img 0.tif` in three folders: three distinct names
    assert {r["filename"] for r in rows if r["label"] == "ctrl"} >= {"ctrl__img 0.tif"}
    assert all(r["plate"] == "" for r in rows)  # groups unknown, not invented


def test_table_with_groups_keeps_each_plate_in_one_split(tmp_path):
    root = tmp_path / "crops"
    table = write_table(root / "labels.csv", make_folder(root))
    out = tmp_path / "bps"
    report = prepare_data(args(source="table", table=str(table), output_dir=str(out), split_by="plate"))
    assert report["groups_known"] is True and GROUPS_UNKNOWN_WORDS not in report["notes"]
    rows = manifest(out)
    splits_of_plate: dict[str, set] = {}
    for row in rows:
        splits_of_plate.setdefault(row["plate"], set()).add(row["split"])
    assert len(splits_of_plate) == 18 and all(len(s) == 1 for s in splits_of_plate.values())
    assert {r["label"] for r in rows if r["split"] == "test"} == set(CLASSES)


def test_table_without_groups_refuses_field_and_works_by_image(tmp_path):
    root = tmp_path / "crops"
    table = write_table(root / "labels.csv", [{"path": r["path"], "label": r["label"]} for r in make_folder(root)])
    out = tmp_path / "bps"
    with pytest.raises(SplitError, match="have no field"):
        prepare_data(args(source="table", table=str(table), output_dir=str(out)))
    assert not out.exists()
    report = prepare_data(args(source="table", table=str(table), output_dir=str(out), split_by="image"))
    assert report["groups_known"] is False and GROUPS_UNKNOWN_WORDS in report["notes"]


@pytest.mark.parametrize("bad_path", ["/etc/hostname", "../outside.tif", "sub/../../outside.tif", "link.tif"])
def test_hostile_table_paths_are_refused_and_nothing_is_written(tmp_path, bad_path):
    root = tmp_path / "crops"
    rows = make_folder(root)
    write_image(tmp_path / "outside.tif", seed=999)
    os.symlink(tmp_path / "outside.tif", root / "link.tif")
    table = write_table(root / "labels.csv", [*rows, {**rows[0], "path": bad_path}])
    out = tmp_path / "bps"
    with pytest.raises(SplitError, match=r"absolute path|climbs out|outside .*a link"):
        prepare_data(args(source="table", table=str(table), output_dir=str(out), split_by="plate"))
    assert not out.exists()


def test_a_link_out_of_the_folder_refuses_the_folder(tmp_path):
    root = tmp_path / "crops"
    make_folder(root)
    write_image(tmp_path / "outside.tif", seed=999)
    os.symlink(tmp_path / "outside.tif", root / "ctrl" / "sneaky.tif")
    with pytest.raises(SplitError, match="outside .*a link"):
        prepare_data(args(source="folder", raw_dir=str(root), output_dir=str(tmp_path / "bps"), split_by="image"))
    assert not (tmp_path / "bps").exists()


def test_missing_column_is_named_with_the_columns_found(tmp_path):
    root = tmp_path / "crops"
    table = write_table(root / "labels.csv", [{"file": r["path"], "class": r["label"]} for r in make_folder(root)])
    with pytest.raises(SplitError, match=r"missing column\(s\) \['path', 'label'\]; found \['file', 'class'\]"):
        prepare_data(args(source="table", table=str(table), output_dir=str(tmp_path / "bps")))


def test_a_class_with_too_few_groups_is_refused_with_the_count(tmp_path):
    root = tmp_path / "crops"
    rows = make_folder(root)
    for row in rows:
        if row["label"] == "ctrl":
            row["plate"] = "only-two-" + str(int(row["field"]) % 2)
    table = write_table(root / "labels.csv", rows)
    with pytest.raises(SplitError, match=r"Class 'ctrl' has 2 plate group\(s\) \(12 images\).*at least 3"):
        prepare_data(args(source="table", table=str(table), output_dir=str(tmp_path / "bps"), split_by="plate"))
    assert not (tmp_path / "bps").exists()


def test_folder_metadata_csv_gives_groups_and_lists_what_it_leaves_out(tmp_path):
    root = tmp_path / "crops"
    rows = make_folder(root)
    write_table(root / "metadata.csv", [{"file_name": r["path"], "plate": r["plate"]} for r in rows[1:]])
    report = prepare_data(args(source="folder", raw_dir=str(root), output_dir=str(tmp_path / "bps"),
                               split_by="plate"))
    assert report["groups_known"] is True and report["unlisted_files"] == [rows[0]["path"]]
    assert report["num_images_written"] == len(rows) - 1


def test_an_all_zero_gy_class_is_a_class_and_zero_gy_of_irradiated_classes_is_sham(tmp_path):
    root = tmp_path / "crops"
    rows = make_folder(root)
    for row in rows:
        # ctrl: all 0 Gy (a class of its own); Alpha: 0 Gy on one plate (its sham arm), 1 Gy elsewhere
        row["dose_Gy"] = "0" if row["label"] == "ctrl" or row["plate"] == "plate10" else "1"
    table = write_table(root / "labels.csv", rows)
    report = prepare_data(args(source="table", table=str(table), output_dir=str(tmp_path / "bps"), split_by="plate"))
    assert report["labels"] == list(CLASSES)
    assert report["counts_by_label"]["sham"] == {"2 Gy protons": 0, "Alpha": 2, "ctrl": 0}


def test_bad_bps_filename_shows_the_pattern_and_suggests_a_table(tmp_path):
    raw = tmp_path / "raw"
    write_image(raw / "cell_000.tif", seed=1)
    (raw / "meta.csv").write_text("filename,dose_Gy,particle_type,hr_post_exposure\ncell_000.tif,1,Fe,4\n")
    with pytest.raises(SplitError) as caught:
        prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(tmp_path / "bps")))
    message = str(caught.value)
    assert "P<plate>_<acq>-<well>_<field>_<object>_proj.tif" in message and "--source table --table FILE.csv" in message


def test_cli_exit_code_and_one_error_line(tmp_path, capsys):
    from importlib import util

    spec = util.spec_from_file_location("prepare_script", REPO / "scripts" /
                                        "prepare_data.py")
    script = util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = tmp_path / "crops"
    table = write_table(root / "labels.csv", [*make_folder(root), {"path": "/etc/hostname", "label": "x"}])
    assert script.main(["--source", "table", "--table", str(table), "--output_dir", str(tmp_path / "bps")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "labels.csv:38" in err[0]


SPELLINGS = {"Fe": "FE", "X-ray": "X-Ray"}


def _respelled_raw(tmp_path: Path, spell) -> Path:
    from tests.support.folders import design_rows, make_raw_folder, write_meta

    raw = tmp_path / "raw"
    rows = design_rows()
    make_raw_folder(raw, rows)
    write_meta(raw / "meta.csv", [(name, dose, spell(particle), hour) for name, dose, particle, hour in rows])
    return raw


def test_obvious_particle_spellings_are_read_with_a_note(tmp_path):
    """Issue 23 item 6: `X-Ray` rejected every X-ray row and the hint blamed the filters."""
    raw = _respelled_raw(tmp_path, lambda particle: SPELLINGS[particle])
    report = prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(tmp_path / "bps"),
                               particles=["fe", "xray"]))
    assert report["labels"] == ["Fe", "X-ray"] and report["num_rejected_rows"] == 0
    assert any("'FE' as Fe" in note and "'X-Ray' as X-ray" in note for note in report["notes"])
    assert any("--particles read 'fe' as Fe, 'xray' as X-ray" in note for note in report["notes"])


def test_an_unknown_particle_names_the_cause_not_the_filters(tmp_path):
    raw = _respelled_raw(tmp_path, lambda particle: "protons" if particle == "X-ray" else particle)
    with pytest.raises(SplitError) as caught:
        prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(tmp_path / "bps")))
    message = str(caught.value)
    assert "rejected for their particle_type" in message and "'protons'" in message
    assert "--source table" in message and "Widen" not in message
    assert not (tmp_path / "bps").exists()
