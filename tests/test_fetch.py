"""Downloading against a faulty loopback server: concurrency, retries, resume, integrity, traversal, disk space."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from bps_vit.bps import MetadataError
from bps_vit.fetch import (
    InsufficientSpaceError,
    RetryPolicy,
    download_files,
    estimate_download_bytes,
    fetch_meta_csv,
    safe_destination,
)
from tests.support.folders import bps_name
from tests.support.images import bps_like_image, tiff_bytes
from tests.support.loopback_s3 import LoopbackS3

FAST = RetryPolicy(max_attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.05, connect_timeout=2, read_timeout=2)
NAMES = [bps_name(950 + i // 8, "A1", i % 8 + 1, 1) for i in range(24)]


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {name: tiff_bytes(bps_like_image(i, 32)) for i, name in enumerate(NAMES)}


def visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def assert_no_partials(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("bad", ["../x.tif", "/etc/passwd", "sub/" + NAMES[0], "..\\x.tif", NAMES[0] + "/../../x.tif",
                                 "P1_1-A1_1_1_proj.tif\n", ""])
def test_traversal_and_foreign_names_are_rejected(tmp_path, bad):
    with pytest.raises(MetadataError):
        safe_destination(tmp_path, bad)


def test_symlink_under_a_valid_name_cannot_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / NAMES[0]).symlink_to(outside / "target.tif")
    with pytest.raises(MetadataError, match="outside"):
        safe_destination(raw, NAMES[0])
    assert safe_destination(raw, NAMES[1]) == raw.resolve() / NAMES[1]


def test_downloads_concurrently_and_completely(tmp_path, files):
    with LoopbackS3(files, latency=0.15) as server:
        start = time.perf_counter()
        summary = download_files(server.base_url, NAMES, tmp_path, num_workers=8, policy=FAST, disable_tqdm=True)
        elapsed = time.perf_counter() - start
    assert summary.failed == {} and sorted(summary.downloaded) == sorted(NAMES)
    assert summary.bytes_downloaded == sum(len(b) for b in files.values())
    for name in NAMES:
        assert (tmp_path / name).read_bytes() == files[name]
    assert server.max_in_flight >= 4, server.max_in_flight
    assert elapsed < 0.15 * len(NAMES) * 0.75  # one at a time would take >= 3.6 s
    assert_no_partials(tmp_path)


def test_5xx_drops_truncation_slowness_and_corruption_are_retried(tmp_path, files):
    faults = {NAMES[0]: ["500", "503"], NAMES[1]: ["truncate"], NAMES[2]: ["drop", "drop"], NAMES[3]: ["slow"],
              NAMES[4]: ["corrupt"], NAMES[5]: ["503", "truncate", "500"]}
    policy = RetryPolicy(max_attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.05, read_timeout=1.0)
    with LoopbackS3(files, slow_seconds=3.0) as server:
        for name, actions in faults.items():
            server.faults[name] = list(actions)
        summary = download_files(server.base_url, NAMES[:8], tmp_path, num_workers=4, policy=policy, disable_tqdm=True)
        counts = server.get_counts()
    assert summary.failed == {}
    for name in NAMES[:8]:
        assert (tmp_path / name).read_bytes() == files[name], name
    for name, actions in faults.items():
        assert counts[name] == len(actions) + 1, (name, counts[name])
    assert counts[NAMES[6]] == 1
    assert_no_partials(tmp_path)


def test_server_that_keeps_dropping_is_reported_then_resumed(tmp_path, files):
    policy = RetryPolicy(max_attempts=3, backoff_seconds=0.01, max_backoff_seconds=0.02)
    broken, missing = NAMES[3], NAMES[10]
    with LoopbackS3({n: b for n, b in files.items() if n != missing}) as server:
        server.always[broken] = "drop"
        first = download_files(server.base_url, NAMES, tmp_path, num_workers=6, policy=policy, disable_tqdm=True)
        assert set(first.failed) == {broken, missing}
        assert "gave up after 3 attempts" in first.failed[broken] and "truncated" in first.failed[broken]
        assert "HTTP 404" in first.failed[missing] and server.gets(missing) == 1  # a 404 is not retried
        assert server.gets(broken) == 3
        assert broken not in visible(tmp_path) and missing not in visible(tmp_path)
        assert_no_partials(tmp_path)
        assert "Re-run the same command" in first.describe()

        # The server recovers; the re-run asks only for what is missing.
        del server.always[broken]
        server.files[missing] = files[missing]
        server.log.clear()
        second = download_files(server.base_url, NAMES, tmp_path, num_workers=6, policy=policy, disable_tqdm=True)
        assert sorted(second.downloaded) == sorted([broken, missing]) and second.failed == {}
        assert len(second.already_present) == len(NAMES) - 2
        assert sorted(server.gets()) == sorted([broken, missing])

        server.log.clear()
        third = download_files(server.base_url, NAMES, tmp_path, num_workers=6, policy=policy, disable_tqdm=True)
        assert third.downloaded == [] and len(third.already_present) == len(NAMES)
        assert server.log == []  # not even a HEAD
    for name in NAMES:
        assert (tmp_path / name).read_bytes() == files[name]


def test_leftover_partial_from_a_killed_run_is_never_taken_as_complete(tmp_path, files):
    stale = tmp_path / f".{NAMES[0]}.k1ll3d.part"
    stale.write_bytes(files[NAMES[0]][:100])
    with LoopbackS3(files) as server:
        summary = download_files(server.base_url, NAMES[:2], tmp_path, num_workers=2, policy=FAST, disable_tqdm=True)
    assert sorted(summary.downloaded) == sorted(NAMES[:2])
    assert not stale.exists()
    assert (tmp_path / NAMES[0]).read_bytes() == files[NAMES[0]]


def test_an_empty_file_under_a_valid_name_is_fetched_again(tmp_path, files):
    """A 0-byte file (a crash between create and write, a full disk) is not a complete download: it is fetched and
    replaced, while a complete one beside it is not fetched twice."""
    (tmp_path / NAMES[0]).write_bytes(b"")
    (tmp_path / NAMES[1]).write_bytes(files[NAMES[1]])
    with LoopbackS3(files) as server:
        summary = download_files(server.base_url, NAMES[:2], tmp_path, num_workers=2, policy=FAST, disable_tqdm=True)
        assert server.gets(NAMES[0]) == 1 and server.gets(NAMES[1]) == 0
    assert summary.downloaded == [NAMES[0]] and summary.already_present == [NAMES[1]]
    assert (tmp_path / NAMES[0]).read_bytes() == files[NAMES[0]]


def test_wrong_checksum_is_detected_and_never_kept(tmp_path, files):
    with LoopbackS3(files) as server:
        server.always[NAMES[0]] = "corrupt"
        summary = download_files(server.base_url, NAMES[:1], tmp_path, num_workers=1, policy=FAST, disable_tqdm=True)
    assert "checksum mismatch" in summary.failed[NAMES[0]]
    assert visible(tmp_path) == set()


def test_invalid_name_is_refused_before_any_request(tmp_path, files):
    with LoopbackS3(files) as server:
        with pytest.raises(MetadataError):
            download_files(server.base_url, [NAMES[0], "../evil.tif"], tmp_path, policy=FAST, disable_tqdm=True)
        assert server.log == []
    assert not (tmp_path.parent / "evil.tif").exists()


def test_free_space_check_stops_a_large_fetch_before_downloading(tmp_path, files, monkeypatch):
    real_usage = shutil.disk_usage

    def tiny_disk(path):
        usage = real_usage(path)
        return type(usage)(usage.total, usage.total - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    raw = tmp_path / "raw"
    with LoopbackS3(files) as server:
        with pytest.raises(InsufficientSpaceError) as info:
            download_files(server.base_url, NAMES, raw, policy=FAST, disable_tqdm=True)
        assert server.gets() == []  # only HEADs for the estimate
        assert 0 < len([m for m, _ in server.log if m == "HEAD"]) <= 8
    message = str(info.value)
    assert str(raw) in message and "needs about" in message and "--max_per_condition" in message
    assert list(raw.iterdir()) == []


def test_size_estimate_heads_a_sample_concurrently(files):
    """The free-space estimate costs one round trip of latency, not one per sampled file."""
    with LoopbackS3(files, latency=0.4) as server:
        start = time.perf_counter()
        estimate = estimate_download_bytes(server.base_url, NAMES, policy=FAST)
        elapsed = time.perf_counter() - start
        heads = [name for method, name in server.log if method == "HEAD"]
    assert len(heads) == 8 and set(heads) <= set(NAMES)
    assert elapsed < 8 * 0.4 / 2, f"8 HEADs at 0.4 s latency took {elapsed:.1f} s: not concurrent"
    mean = sum(len(files[name]) for name in heads) / 8
    assert estimate == int(mean * len(NAMES))


def test_meta_csv_download_and_offline_fallback(tmp_path):
    body = b"filename,dose_Gy,particle_type,hr_post_exposure\n" + f"{NAMES[0]},0.82,Fe,4\n".encode()
    with LoopbackS3({"meta.csv": body}) as server:
        server.faults["meta.csv"] = ["503", "truncate"]
        path = fetch_meta_csv(server.base_url, tmp_path, policy=FAST)
        assert path.read_bytes() == body and server.gets("meta.csv") == 3
        server.always["meta.csv"] = "500"
        assert fetch_meta_csv(server.base_url, tmp_path, policy=FAST).read_bytes() == body  # keeps the good copy
    assert sorted(os.listdir(tmp_path)) == ["meta.csv"]
