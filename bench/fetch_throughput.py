#!/usr/bin/env python
"""Download throughput of `bps_vit.fetch.download_files` from a loopback server with 50 ms of latency.

    python bench/fetch_throughput.py           # 400 files, 3 alternating repeats: ~1.5 min
    python bench/fetch_throughput.py --quick   # 200 files, 1 repeat: ~20 s

The bucket is 77,177 small files, so a fetch is latency-bound: one request at a time spends its
time waiting. The server (tests/support/loopback_s3.py, the fetch tests' server) binds 127.0.0.1
only, serves BPS-like TIFFs (the synthetic generator's, ~25-30 KB) with Content-Length and an MD5
ETag like S3 over keep-alive connections, sleeps 50 ms before every answer (GET and HEAD) and logs
requests. It is bounded: a fixed file set, daemon threads, shut down at the end.

Measured: the real `download_files` with its default concurrency against `num_workers=1`
(both with the real free-space check, whose size estimate HEADs 8 files at once), alternated,
medians; target >= 8x. Then resuming: (1) a run that finds every file present makes no request
at all; (2) after a run in which some files failed (the server answered 503 for them, one try),
the re-run requests exactly the missing files and no file is fetched twice.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.support.loopback_s3 import LoopbackS3  # noqa: E402

TARGET = 8.0
LATENCY_S = 0.050


def bps_files(count: int, pool: int) -> dict[str, bytes]:
    """Real-shaped payloads: `count` of the synthetic generator's TIFFs under their BPS names, from the raw folder
    of max(pool, count) images (the other benches share it)."""
    raw = common.synthetic_raw(max(pool, count))
    names = sorted(p.name for p in raw.glob("*.tif"))[:count]
    return {name: (raw / name).read_bytes() for name in names}


def timed_download(server: LoopbackS3, names: list[str], workers: int | None) -> tuple[float, object, int]:
    from bps_vit.fetch import download_files

    target = Path(tempfile.mkdtemp(prefix="fetch_", dir=common.BENCH_DIR))
    try:
        server.reset_counts()
        kwargs = {"disable_tqdm": True}
        if workers is not None:
            kwargs["num_workers"] = workers
        start = common.now()
        summary = download_files(server.base_url, names, target, **kwargs)
        seconds = common.now() - start
        assert not summary.failed and len(summary.downloaded) == len(names), summary.describe()
        return seconds, summary, server.count()
    finally:
        shutil.rmtree(target, ignore_errors=True)


def resume_checks(server: LoopbackS3, names: list[str]) -> dict:
    from bps_vit.fetch import RetryPolicy, download_files

    target = Path(tempfile.mkdtemp(prefix="fetch_resume_", dir=common.BENCH_DIR))
    try:
        # 1) interrupted run: a quarter of the files fail (503, one try), the rest arrive
        failing = set(names[::4])
        server.always = dict.fromkeys(failing, "503")
        server.reset_counts()
        first = download_files(server.base_url, names, target, disable_tqdm=True, policy=RetryPolicy(max_attempts=1))
        first_gets = server.get_counts()
        server.always = {}
        # 2) the same command again: only the missing files may be requested
        server.reset_counts()
        second = download_files(server.base_url, names, target, disable_tqdm=True)
        second_gets = server.get_counts()
        second_heads = server.count("HEAD")
        # 3) and once more on the complete folder: nothing at all
        server.reset_counts()
        third = download_files(server.base_url, names, target, disable_tqdm=True)
        third_requests = server.count()
        successful_gets = Counter({n: c for n, c in first_gets.items() if n not in failing}) + second_gets
        intact = all((target / n).read_bytes() == server.files[n] for n in names)
        return {
            "files": len(names),
            "first_failed": len(first.failed),
            "second_gets": sum(second_gets.values()),
            "second_gets_of_present_files": sum(c for n, c in second_gets.items() if n not in failing),
            "second_heads": second_heads,
            "second_already_present": len(second.already_present),
            "max_successful_gets_per_file": max(successful_gets.values()),
            "third_requests": third_requests,
            "third_already_present": len(third.already_present),
            "all_files_intact": intact,
        }
    finally:
        server.always = {}
        shutil.rmtree(target, ignore_errors=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--latency", type=float, default=LATENCY_S)
    opts = parser.parse_args(argv)
    opts.files = opts.files or common.run_size(opts, smoke=8, quick=200, full=400)
    opts.repeats = opts.repeats or (1 if opts.quick else 3)
    return opts


def main(argv=None) -> dict:
    import inspect

    from bps_vit.fetch import download_files

    opts = parse_args(argv)
    ctx = common.RunContext(opts)
    info = ctx.info
    default_workers = inspect.signature(download_files).parameters["num_workers"].default
    files = bps_files(opts.files, common.run_size(opts, smoke=common.SMOKE_IMAGES, quick=400, full=400))
    names = sorted(files)
    total_mb = sum(len(b) for b in files.values()) / 1e6
    print(f"# {len(names)} files, {total_mb:.1f} MB, {opts.latency * 1000:.0f} ms latency; {ctx.describe()}",
          flush=True)
    concurrent, serial, requests = [], [], {}
    with LoopbackS3(files, latency=opts.latency, keep_alive=True) as server:
        for _ in range(opts.repeats):
            seconds, _, requests["concurrent"] = timed_download(server, names, None)
            concurrent.append(seconds)
            seconds, _, requests["serial"] = timed_download(server, names, 1)
            serial.append(seconds)
        resume = resume_checks(server, names)
    speedup = common.median(serial) / common.median(concurrent)
    n = len(names)
    table = common.markdown_table(
        ["mode", "workers", "seconds", "files/s", "MB/s", "requests (GET+HEAD)", "speed-up", "target"],
        [["concurrent (default)", default_workers, f"{common.median(concurrent):.2f}",
          f"{n / common.median(concurrent):.0f}", f"{total_mb / common.median(concurrent):.1f}",
          requests["concurrent"], f"**{speedup:.1f}x**",
          f">= {TARGET:.0f}x" + (" ok" if speedup >= TARGET else " MISSED")],
         ["one at a time", 1, f"{common.median(serial):.2f}", f"{n / common.median(serial):.0f}",
          f"{total_mb / common.median(serial):.2f}", requests["serial"], "1x", ""]])
    ideal = (1 + n) / (1 + n / default_workers)  # in latencies: the concurrent HEADs cost one in both modes
    notes = [
        f"- {n} BPS-like TIFFs ({total_mb:.1f} MB) from a 127.0.0.1 server adding {opts.latency * 1000:.0f} ms per "
        f"request; {opts.repeats} alternating repeats, medians. Each run includes the free-space check "
        f"(8 HEADs sent at once = {opts.latency:.2f} s of latency); latency alone would allow {ideal:.1f}x.",
        f"- Resume after a run where {resume['first_failed']} of {resume['files']} files failed (503, one try): "
        f"the re-run sent {resume['second_gets']} GETs, all for the missing files "
        f"({resume['second_gets_of_present_files']} for files already present; plus {resume['second_heads']} HEADs "
        f"for the size estimate); no file was fetched successfully more than "
        f"{resume['max_successful_gets_per_file']} time; all files byte-identical: {resume['all_files_intact']}.",
        f"- A re-run on the complete folder sent **{resume['third_requests']} requests** "
        f"({resume['third_already_present']} files reported already present).",
    ]
    body = table + "\n\n" + "\n".join(notes) + "\n"
    print()
    print(body)
    ok_resume = (resume["second_gets"] == resume["first_failed"] and resume["second_gets_of_present_files"] == 0
                 and resume["third_requests"] == 0 and resume["max_successful_gets_per_file"] == 1
                 and resume["all_files_intact"])
    print(f"RATIOS: concurrent / one-at-a-time speed-up {speedup:.1f}x (target >= {TARGET:.0f}x); "
          f"resume re-downloads nothing: {'yes' if ok_resume else 'NO'}")
    payload = {"opts": vars(opts), "machine": info, "context": ctx.as_dict(), "concurrent_s": concurrent,
               "serial_s": serial,
               "speedup": speedup, "requests": requests, "resume": resume}
    common.publish(opts, "fetch_throughput", "Data fetch: concurrent vs one at a time, and resume", body, payload,
                   ctx, section="fetch")
    if not ok_resume:
        raise SystemExit("resume check failed: a resumed fetch requested files it already had")
    return payload


if __name__ == "__main__":
    main()
