"""prepare_data end to end: local, s3 (loopback), hf-shaped and synthetic sources; bad input; the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter, namedtuple
from pathlib import Path

import numpy as np
import pytest

from bps_vit.bps import MetadataError, read_meta_csv
from bps_vit.fetch import FetchError, InsufficientSpaceError
from bps_vit.prepare import PrepareDataArguments, prepare_data
from bps_vit.split import SplitError
from tests.support.folders import bps_name, design_rows, make_raw_folder, sha256, write_meta
from tests.support.images import bps_like_image, png_bytes, tiff_bytes
from tests.support.loopback_s3 import LoopbackS3
from tests.support.paths import REPO

SPLITS = ("train", "validation", "test")
DiskUsage = namedtuple("DiskUsage", "total used free")


def read_manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def args(**kwargs) -> PrepareDataArguments:
    kwargs.setdefault("disable_tqdm", True)
    kwargs.setdefault("num_workers", 4)
    return PrepareDataArguments(**kwargs)


@pytest.fixture()
def raw(tmp_path) -> Path:
    folder = tmp_path / "raw"
    make_raw_folder(folder, masks=True)
    return folder


def test_local_folder_end_to_end(raw, tmp_path):
    out = tmp_path / "bps"
    report = prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out)))
    rows = read_manifest(out)
    assert list(rows[0]) == ["filename", "split", "label", "dose_Gy", "hr_post_exposure", "plate", "well", "field",
                             "sha256", "path", "particle_type"]
    assert len(rows) == len(design_rows()) == 288
    by_split = Counter(r["split"] for r in rows)
    assert by_split["sham"] == 72 and sum(by_split[s] for s in SPLITS) == 216
    for row in rows:
        placed = out / row["path"]
        assert placed.parent.name == row["label"] and placed.parent.parent.name == row["split"]
        assert placed.read_bytes() == (raw / row["filename"]).read_bytes()  # original uint16 bytes, not converted
        assert sha256(placed) == row["sha256"]
        assert os.stat(placed).st_ino == os.stat(raw / row["filename"]).st_ino  # hard link: no extra space
        assert (out / "masks" / row["filename"]).is_file()
        if row["split"] == "sham":
            assert float(row["dose_Gy"]) == 0.0
    assert report["group_overlap_total"] == 0 and report["num_skipped_files"] == 0
    assert report["masks"]["copied"] == 288
    fields = {s: {r["field"] for r in rows if r["split"] == s} for s in SPLITS}
    assert not (fields["train"] & fields["validation"]) and not (fields["train"] & fields["test"])
    on_disk = json.loads((out / "split_report.json").read_text())
    assert on_disk["counts"] == report["counts"] and on_disk["split_by"] == "field"
    from bps_vit.data import check_prepared_folder  # the loader accepts what we wrote

    counts = check_prepared_folder(out)
    assert sum(counts["train"].values()) == report["counts"]["train"]["total"]


def test_same_seed_same_manifest_and_rerun_replaces_the_folder(raw, tmp_path):
    out = tmp_path / "bps"
    prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out), seed=5))
    first = (out / "manifest.csv").read_bytes()
    (out / "train" / "Fe" / "stale.tif").write_bytes(b"left over")
    prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out), seed=5, link_mode="copy"))
    assert (out / "manifest.csv").read_bytes() == first
    assert not (out / "train" / "Fe" / "stale.tif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bps")]  # no staging/old folders left
    prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out), seed=6))
    assert (out / "manifest.csv").read_bytes() != first


def test_test_hours_and_include_sham_through_prepare(raw, tmp_path):
    out = tmp_path / "bps"
    report = prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out), test_hours=[48]))
    rows = read_manifest(out)
    assert {r["filename"] for r in rows if r["split"] == "test"} == {
        r["filename"] for r in rows if r["hr_post_exposure"] == "48" and float(r["dose_Gy"]) > 0}
    assert report["config"]["test_hours"] == [48]
    out2 = tmp_path / "bps2"
    report = prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out2), include_sham=True,
                               split_by="image"))
    assert report["counts"]["sham"]["total"] == 0 and not (out2 / "sham").exists()
    assert sum(report["counts"][s]["total"] for s in SPLITS) == 288


def test_filters_and_max_per_condition(raw, tmp_path):
    report = prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(tmp_path / "bps"), hours=[4],
                               max_per_condition=20, split_by="image"))
    selected = report["provenance"]["selection"]["selected_per_condition"]
    assert set(selected.values()) == {20} and all(c.endswith(" 4h") for c in selected)
    assert report["num_images_written"] == 6 * 20


def make_bad_folder(raw: Path) -> dict[str, str]:
    """Add every kind of bad input to a good raw folder; returns name -> kind."""
    good_rows = design_rows()
    names = {kind: bps_name(901, "H9", i + 1, 1) for i, kind in enumerate(
        ["corrupt_truncated", "corrupt_payload", "zero", "html", "png8", "rgba", "tiny", "missing", "copy"])}
    image = bps_like_image(99, 48)
    (raw / names["corrupt_truncated"]).write_bytes(tiff_bytes(image)[:120])
    payload = bytearray(tiff_bytes(image))
    payload[200:600] = os.urandom(400)
    (raw / names["corrupt_payload"]).write_bytes(bytes(payload))
    (raw / names["zero"]).write_bytes(b"")
    (raw / names["html"]).write_bytes(b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>")
    (raw / names["png8"]).write_bytes(png_bytes((image // 16).astype(np.uint8)))  # an 8-bit PNG named .tif
    rgba = np.dstack([(image // 16).astype(np.uint8)] * 3 + [np.full(image.shape, 255, np.uint8)])
    (raw / names["rgba"]).write_bytes(png_bytes(rgba))
    (raw / names["tiny"]).write_bytes(tiff_bytes(image[:4, :4]))
    (raw / names["copy"]).write_bytes((raw / good_rows[0][0]).read_bytes())  # same bytes, other name
    stray = bps_name(999, "A1", 1, 1)
    (raw / stray).write_bytes(tiff_bytes(image))
    bad_meta = [
        (bps_name(905, "A1", 1, 1), 1.0, "Proton", 4),
        (bps_name(905, "A1", 2, 1), "abc", "Fe", 4),
        (bps_name(905, "A1", 3, 1), -1, "Fe", 4),
        ("../x.tif", 0.82, "Fe", 4),
        ("/etc/passwd", 0.82, "Fe", 4),
        (good_rows[5][0], 0.82, "Fe", 4),  # duplicated row
    ]
    extra = [(name, 0.82, "Fe", 4) for name in names.values()]
    write_meta(raw / "meta.csv", good_rows + extra + bad_meta)
    return {**{v: k for k, v in names.items()}, stray: "stray"}


def test_bad_folder_is_skipped_and_reported_with_counts_and_names(raw, tmp_path):
    kinds = make_bad_folder(raw)
    name_of = {k: n for n, k in kinds.items()}
    out = tmp_path / "bps"
    report = prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out)))

    assert report["skipped_by_reason"] == {"corrupt": 2, "missing": 1, "not-an-image": 1, "too-small": 1,
                                           "zero-byte": 1}
    skipped = {s["filename"]: s for s in report["skipped_files"]}
    assert skipped[name_of["zero"]]["category"] == "zero-byte"
    assert skipped[name_of["html"]]["category"] == "not-an-image"
    assert {skipped[name_of["corrupt_truncated"]]["category"], skipped[name_of["corrupt_payload"]]["category"]} == {
        "corrupt"}
    assert skipped[name_of["tiny"]]["category"] == "too-small" and "4x4" in skipped[name_of["tiny"]]["reason"]
    assert skipped[name_of["missing"]]["category"] == "missing"

    rejected = {r["filename"]: r["reason"] for r in report["rejected_rows"]}
    assert report["num_rejected_rows"] == 6
    assert "unknown particle_type 'Proton'" in rejected[bps_name(905, "A1", 1, 1)]
    assert "'abc'" in rejected[bps_name(905, "A1", 2, 1)]
    assert "bad dose_Gy" in rejected[bps_name(905, "A1", 3, 1)]
    assert "not a BPS image filename" in rejected["../x.tif"] and "/etc/passwd" in rejected
    assert "duplicate filename" in rejected[design_rows()[5][0]]
    assert report["unlisted_files"] == [name_of["stray"]]

    odd = {o["filename"]: o["format"] for o in report["non_standard_images"]}
    assert odd == {name_of["png8"]: "PNG uint8 gray 48x48", name_of["rgba"]: "PNG uint8 4ch 48x48"}
    assert [sorted(d["filenames"]) for d in report["duplicate_content"]] == [sorted([design_rows()[0][0],
                                                                                    name_of["copy"]])]
    rows = read_manifest(out)
    assert {r["filename"] for r in rows if r["split"] == "skipped"} == set(skipped)
    assert all(r["path"] == "" for r in rows if r["split"] == "skipped")
    written = [r for r in rows if r["split"] != "skipped"]
    assert len(written) == 288 + 3 and report["num_images_written"] == 291
    assert not (tmp_path / "x.tif").exists()
    from bps_vit.data import check_prepared_folder

    check_prepared_folder(out)  # the rest is a usable dataset


def test_missing_columns_and_missing_folder_stop_with_the_fix(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_meta(raw / "meta.csv", [(bps_name(901, "A1", 1, 1), 0.82, "Fe")], header="filename,dose_Gy,particle_type")
    with pytest.raises(MetadataError, match=r"missing column\(s\) \['hr_post_exposure'\]"):
        prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(tmp_path / "bps")))
    with pytest.raises(SplitError, match="does not exist"):
        prepare_data(args(source="local", raw_dir=str(tmp_path / "nope"), output_dir=str(tmp_path / "bps")))
    with pytest.raises(ValueError, match="--raw_dir"):
        PrepareDataArguments(source="local")


def test_empty_split_and_single_class_stop_with_the_fix(tmp_path):
    raw = tmp_path / "raw"
    make_raw_folder(raw, design_rows(wells=("A1",), fields=1, objects=2))  # one field per condition
    with pytest.raises(SplitError, match="split has no"):
        prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(tmp_path / "bps")))
    with pytest.raises(SplitError, match="needs at least two"):
        prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(tmp_path / "bps"), particles=["Fe"],
                          split_by="image"))
    assert not (tmp_path / "bps").exists()


def test_output_folder_that_is_not_ours_is_never_replaced(raw, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    with pytest.raises(SplitError, match="refusing to replace"):
        prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(out)))
    with pytest.raises(SplitError, match="overlap"):
        prepare_data(args(source="local", raw_dir=str(raw), output_dir=str(raw / "bps")))
    assert (out / "thesis.txt").read_text() == "do not delete"


def make_hf_snapshot(root: Path) -> dict[str, str]:
    labels = {"High_Energy_Ion_Fe_Nuclei": "Fe", "XRay_irradiated_Nuclei": "X-ray"}
    expected = {}
    for folder, (plate, label) in zip(labels, [(242, "Fe"), (280, "X-ray")]):
        for index, name in enumerate(r[0] for r in design_rows([(plate, label, 1.0, 4)], wells=("A1", "B2"))):
            path = root / folder / ("batch2" if index % 5 == 0 else "") / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tiff_bytes(bps_like_image(index + plate, 40)))
            expected[name] = label
    (root / "High_Energy_Ion_Fe_Nuclei" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "README.md").write_text("# mirror\n")
    dup = next(n for n, label in expected.items() if label == "Fe")
    (root / "XRay_irradiated_Nuclei" / dup).write_bytes(b"x")  # same name under both labels: ambiguous
    del expected[dup]
    return expected | {"__dup__": dup}


def test_hf_shaped_snapshot_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "snapshot"
    expected = make_hf_snapshot(snapshot)
    dup = expected.pop("__dup__")
    out = tmp_path / "bps"
    report = prepare_data(args(source="hf", raw_dir=str(snapshot), output_dir=str(out), split_by="field"))
    rows = read_manifest(out)
    assert {r["filename"]: r["label"] for r in rows} == expected
    assert all(r["dose_Gy"] == "nan" and r["hr_post_exposure"] == "-1" for r in rows)
    assert report["counts"]["sham"]["total"] == 0
    assert any("Sham (0 Gy) images cannot be identified" in note for note in report["notes"])
    reasons = {r["filename"]: r["reason"] for r in report["rejected_rows"]}
    assert "duplicated filename" in reasons[dup] and "hidden file" in reasons["High_Energy_Ion_Fe_Nuclei/.DS_Store"]
    assert report["group_overlap_total"] == 0
    with pytest.raises(SplitError, match="--test_hours needs"):
        prepare_data(args(source="hf", raw_dir=str(snapshot), output_dir=str(out), test_hours=[48]))


def test_hf_offline_without_snapshot_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FetchError, match="point --raw_dir at an existing snapshot"):
        prepare_data(args(source="hf", raw_dir=str(tmp_path / "empty"), output_dir=str(tmp_path / "bps")))


def test_hf_download_is_injectable_and_meta_csv_recovers_doses(tmp_path):
    mirror = tmp_path / "mirror"
    expected = make_hf_snapshot(mirror)
    expected.pop("__dup__")
    calls = []

    def fake_snapshot_download(**kwargs):
        import shutil

        calls.append(kwargs)
        shutil.copytree(mirror, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]

    names = sorted(expected)
    meta = tmp_path / "meta.csv"  # plate 242 is sham in this made-up meta.csv; 280 irradiated
    write_meta(meta, [(n, 0 if expected[n] == "Fe" and n.endswith("1_proj.tif") else 1.0, expected[n], 4)
                      for n in names])
    report = prepare_data(args(source="hf", raw_dir=str(tmp_path / "raw_hf"), output_dir=str(tmp_path / "bps"),
                               meta_csv=str(meta), split_by="image"), hf_download=fake_snapshot_download)
    assert calls and calls[0]["repo_id"] == "kenobi/GeneLab_BPS_BenchmarkData"
    assert calls[0]["repo_type"] == "dataset"
    assert sorted(calls[0]["allow_patterns"]) == ["High_Energy_Ion_Fe_Nuclei/*", "XRay_irradiated_Nuclei/*"]
    rows = read_manifest(tmp_path / "bps")
    assert all(r["dose_Gy"] != "nan" for r in rows)
    assert report["counts"]["sham"]["total"] == sum(1 for n in names if expected[n] == "Fe" and
                                                    n.endswith("1_proj.tif"))


def test_s3_source_through_loopback_fetches_only_the_selection_and_rejects_traversal(tmp_path):
    rows = design_rows(wells=("A1", "B2"), fields=3, objects=2)
    files = {name: tiff_bytes(bps_like_image(i, 40)) for i, (name, *_r) in enumerate(rows)}
    evil = [("../x.tif", 0.82, "Fe", 4), ("/etc/passwd", 0.82, "Fe", 4), ("%2e%2e/y.tif", 0.82, "Fe", 4)]
    meta_lines = ["filename,dose_Gy,particle_type,hr_post_exposure"] + [",".join(map(str, r)) for r in rows + evil]
    files["meta.csv"] = ("\n".join(meta_lines) + "\n").encode()
    files["../x.tif"] = b"should never be requested"
    raw, out = tmp_path / "raw", tmp_path / "bps"
    with LoopbackS3(files) as server:
        server.faults[rows[0][0]] = ["503", "drop"]
        report = prepare_data(args(source="s3", base_url=server.base_url, raw_dir=str(raw), output_dir=str(out),
                                   hours=[4], max_per_condition=10, split_by="image", retry_backoff=0.01))
        requested = set(server.gets())
        selected = {r["filename"] for r in read_manifest(out)}
        assert requested == selected | {"meta.csv"}
        assert len(selected) == 6 * 10
        assert not any(".." in n or n.startswith("/") for n in requested)
        server.log.clear()
        again = prepare_data(args(source="s3", base_url=server.base_url, raw_dir=str(raw), output_dir=str(out),
                                  hours=[4], max_per_condition=10, split_by="image"))
        assert server.gets() == ["meta.csv"]  # resume: every image already complete
        assert again["provenance"]["fetch"]["already_present"] == 60
    assert {r["filename"] for r in report["rejected_rows"]} == {"../x.tif", "/etc/passwd", "%2e%2e/y.tif"}
    assert not (tmp_path / "x.tif").exists()
    assert report["provenance"]["fetch"]["failed"] == 0


def test_s3_failed_downloads_are_reported_and_free_space_is_checked(tmp_path, monkeypatch):
    rows = design_rows(wells=("A1", "B2"), fields=3, objects=2)
    files = {name: tiff_bytes(bps_like_image(i, 40)) for i, (name, *_r) in enumerate(rows)}
    files["meta.csv"] = ("filename,dose_Gy,particle_type,hr_post_exposure\n" +
                         "".join(",".join(map(str, r)) + "\n" for r in rows)).encode()
    raw, out = tmp_path / "raw", tmp_path / "bps"
    broken = rows[1][0]
    with LoopbackS3(files) as server:
        server.always[broken] = "truncate"
        report = prepare_data(args(source="s3", base_url=server.base_url, raw_dir=str(raw), output_dir=str(out),
                                   max_retries=2, retry_backoff=0.01, split_by="image"))
    assert report["provenance"]["fetch"]["failed"] == 1
    assert report["skipped_by_reason"] == {"download-failed": 1}
    assert report["skipped_files"][0]["filename"] == broken
    assert any("re-run" in note for note in report["notes"])

    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10**12, 10**12 - 10, 10))
    with LoopbackS3(files) as server:
        with pytest.raises(InsufficientSpaceError, match="needs about"):
            prepare_data(args(source="s3", base_url=server.base_url, raw_dir=str(tmp_path / "raw2"),
                              output_dir=str(tmp_path / "bps2"), split_by="image"))
        assert server.gets() == ["meta.csv"]


def test_synthetic_source_generates_then_reuses(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "bps"
    knobs = dict(difficulty=0.5, campaign_effect=0.5, plate_effect=0.25, plates_per_condition=1, wells_per_plate=2)
    report = prepare_data(args(source="synthetic", num_images=60, raw_dir=str(raw), output_dir=str(out),
                               split_by="image", **knobs))
    settings = report["provenance"]["synthetic"]
    assert settings["num_images"] == 60 and {k: settings[k] for k in knobs} == knobs
    names = [row.filename for row in read_meta_csv(raw / "meta.csv").rows]
    wells = {name.split("-")[1].split("_")[0] for name in names}
    assert len({name.split("_")[0] for name in names}) == 17 and len(wells) == 2  # the layout knobs reached it
    assert report["masks"]["copied"] == report["num_images_written"] > 0
    before = {p.name: p.stat().st_mtime_ns for p in raw.glob("*.tif")}
    prepare_data(args(source="synthetic", num_images=60, raw_dir=str(raw), output_dir=str(out), split_by="image",
                      **knobs))
    assert {p.name: p.stat().st_mtime_ns for p in raw.glob("*.tif")} == before  # same settings: reused
    mine = tmp_path / "my_real_images"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SplitError, match="not written by --source synthetic"):
        prepare_data(args(source="synthetic", num_images=60, raw_dir=str(mine), output_dir=str(tmp_path / "o")))
    assert (mine / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_cli_flags_and_yaml_file(raw, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "cli_out"
    flags = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--source", "local", "--raw_dir", str(raw),
             "--output_dir", str(out), "--split_by", "well", "--seed", "3", "--disable_tqdm"]
    result = subprocess.run(flags, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "group overlap 0" in result.stdout and "train" in result.stdout
    config = tmp_path / "prepare.yaml"
    config.write_text(f"source: local\nraw_dir: {raw}\noutput_dir: {tmp_path / 'yaml_out'}\nsplit_by: well\n"
                      "seed: 3\ndisable_tqdm: true\n")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), str(config)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "yaml_out" / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    bad = subprocess.run(flags[:2] + ["--source", "local", "--raw_dir", str(raw), "--output_dir", str(out),
                                      "--train_fraction", "0.9"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "error: --train_fraction" in bad.stderr and "Traceback" not in bad.stderr
    override = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), str(config), "--seed", "4",
                               "--output_dir", str(tmp_path / "yaml_seed4")], capture_output=True, text=True, env=env,
                              timeout=120)
    assert override.returncode == 0, override.stderr
    assert json.loads((tmp_path / "yaml_seed4" / "split_report.json").read_text())["seed"] == 4


def test_non_standard_images_are_printed_in_the_console_summary(raw, tmp_path, capsys):
    """An 8-bit RGB TIFF put into a split is named on the console, not only inside split_report.json."""
    import importlib.util

    import tifffile

    rgb = bps_name(907, "A1", 1, 1)
    tifffile.imwrite(raw / rgb, np.random.default_rng(2).integers(0, 255, (60, 60, 3), dtype=np.uint8))
    with (raw / "meta.csv").open("a") as handle:
        handle.write(f"{rgb},0.82,Fe,4\n")
    spec = importlib.util.spec_from_file_location("prepare_script", REPO / "scripts" / "prepare_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "bps"
    assert script.main(["--source", "local", "--raw_dir", str(raw), "--output_dir", str(out),
                        "--disable_tqdm", "true"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "split_report.json").read_text())
    (entry,) = report["non_standard_images"]
    assert entry["filename"] == rgb and "colour image" in entry["warning"] and "8-bit" in entry["warning"]
    assert "1 non-standard image(s) were put into the splits" in printed
    assert f"{entry['split']}/{rgb} (TIFF uint8 3ch 60x60): a colour image (3 channels)" in printed


def test_failed_downloads_are_told_once_on_the_console(tmp_path, capsys):
    """The re-run advice for failed downloads is one note in the report, printed once, not repeated by the script."""
    import importlib.util

    rows = design_rows(wells=("A1", "B2"), fields=3, objects=2)
    files = {name: tiff_bytes(bps_like_image(i, 40)) for i, (name, *_r) in enumerate(rows)}
    files["meta.csv"] = ("filename,dose_Gy,particle_type,hr_post_exposure\n" +
                         "".join(",".join(map(str, r)) + "\n" for r in rows)).encode()
    spec = importlib.util.spec_from_file_location("prepare_script", REPO / "scripts" / "prepare_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with LoopbackS3(files) as server:
        server.always[rows[1][0]] = "truncate"
        assert script.main(["--source", "s3", "--base_url", server.base_url, "--raw_dir", str(tmp_path / "raw"),
                            "--output_dir", str(tmp_path / "bps"), "--split_by", "image", "--max_retries", "2",
                            "--retry_backoff", "0.01", "--num_workers", "4", "--disable_tqdm", "true"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("download(s) failed") == 1
    assert "note: 1 download(s) failed after retries (listed in skipped_files); re-run the same command" in printed


@pytest.mark.slow
def test_unknown_split_by_is_refused_before_any_download(tmp_path):
    """SplitConfig is the one --split_by check: prepare_data builds it before fetching anything."""
    files = {"meta.csv": b"filename,dose_Gy,particle_type,hr_post_exposure\n"}
    with LoopbackS3(files) as server:
        refused = r"--split_by 'object': choose one of \['image', 'field', 'well', 'plate'\]"
        with pytest.raises(SplitError, match=refused):
            prepare_data(args(source="s3", base_url=server.base_url, raw_dir=str(tmp_path / "raw"),
                              output_dir=str(tmp_path / "bps"), split_by="object"))
        assert server.gets() == []
    assert not (tmp_path / "raw").exists() and not (tmp_path / "bps").exists()
    script = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--source", "synthetic",
              "--split_by", "object", "--raw_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "bps")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "--split_by" in result.stderr and "Traceback" not in result.stderr
    for flag, value, says in (("--batch_effect", "1", "retired"), ("--plate_effect", "4", "plate_effect must lie")):
        result = subprocess.run(script[:2] + ["--raw_dir", str(tmp_path / "raw"), flag, value], capture_output=True,
                                text=True, env=env, timeout=120)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {flag}")
    assert not (tmp_path / "raw").exists()


HUB_OFFLINE_VALUES = ("1", "ON", "yes", "True", "true", "0", "", "false", "False", "no", "off", "2")


@pytest.mark.parametrize("value", HUB_OFFLINE_VALUES)
def test_hub_offline_follows_a_runtime_change(monkeypatch, value):
    from bps_vit.hf_env import hub_offline

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is (value.upper() in {"1", "ON", "YES", "TRUE"})
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub_offline() is False


def test_hub_offline_parses_as_huggingface_hub_does():
    """Each value gives what huggingface_hub itself reads from it at import (its constants.HF_HUB_OFFLINE)."""
    code = (
        "import importlib, json, os, sys\n"
        "import huggingface_hub.constants as constants\n"
        "from bps_vit.hf_env import hub_offline\n"
        "os.environ.pop('TRANSFORMERS_OFFLINE', None)\n"
        "out = {}\n"
        "for value in json.loads(sys.argv[1]):\n"
        "    os.environ['HF_HUB_OFFLINE'] = value\n"
        "    out[value] = [hub_offline(), importlib.reload(constants).HF_HUB_OFFLINE]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(HUB_OFFLINE_VALUES)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert all(ours == theirs for ours, theirs in seen.values()), seen
    assert sum(ours for ours, _ in seen.values()) == 5  # 1, ON, yes, True, true


def test_paths_are_printed_as_the_user_gave_them(raw, tmp_path, monkeypatch, capsys, caplog):
    """Issue 23 item 15: `Prepared /<somewhere>/data/bps` showed the machine's own path for `--output_dir data/bps`."""
    import importlib.util
    import logging

    spec = importlib.util.spec_from_file_location("prepare_script", REPO / "scripts" / "prepare_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    assert script.main(["--source", "local", "--raw_dir", "raw", "--output_dir", "data/bps",
                        "--disable_tqdm", "true"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Prepared data/bps (split by") and str(tmp_path) not in printed
    assert "Wrote data/bps: train" in caplog.text and str(tmp_path) not in caplog.text
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert script.main(["--source", "local", "--raw_dir", "raw", "--output_dir", "notes"]) == 2
    assert capsys.readouterr().err.startswith("error: --output_dir notes is not empty")
