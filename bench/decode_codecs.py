#!/usr/bin/env python
"""16-bit Deflate decode: tifffile with imagecodecs (libdeflate, the default now) against the standard library's zlib.

    python bench/decode_codecs.py            # 600 synthetic crops, 7 interleaved rounds
    python bench/decode_codecs.py --quick    # 200 crops, 3 rounds

Both paths run `bps_vit.imaging.read_image`, the decode every step uses (training's cache, predict,
explain, the app); only tifffile's Deflate codec differs. Rounds alternate the two codecs in one
process and the medians are reported with CPU seconds beside wall seconds, so a neighbour's load
moves the ratio little.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


@contextmanager
def stdlib_zlib_codec():
    """tifffile's Deflate entries pointed at `zlib.decompress`, as they are without imagecodecs."""
    import tifffile

    codecs = tifffile.TIFF.DECOMPRESSORS
    saved = {key: codecs[key] for key in (8, 32946)}

    def zlib_decode(data, out=None):
        return zlib.decompress(data)

    try:
        for key in saved:
            codecs._codecs[key] = zlib_decode
        yield
    finally:
        for key, codec in saved.items():
            codecs._codecs[key] = codec


def decode_all(paths) -> tuple[float, float]:
    from bps_vit.imaging import read_image

    wall, cpu = common.now(), common.cpu_now()
    for path in paths:
        read_image(path)
    return common.now() - wall, common.cpu_now() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    opts = parser.parse_args(argv)
    ctx = common.start(opts)
    n, rounds = common.run_size(opts, smoke=(8, 1), quick=(200, 3), full=(600, 7))
    paths = sorted(common.synthetic_raw(max(n, common.SMOKE_IMAGES)).glob("*.tif"))[:n]
    decode_all(paths)  # page cache and imports warm for both
    times = {"imagecodecs": [], "zlib": []}
    for _ in range(rounds):
        times["imagecodecs"].append(decode_all(paths))
        with stdlib_zlib_codec():
            times["zlib"].append(decode_all(paths))
    ms = {name: 1000 * common.median(w for w, _ in values) / len(paths) for name, values in times.items()}
    cpu_ms = {name: 1000 * common.median(c for _, c in values) / len(paths) for name, values in times.items()}
    rows = [[name, f"{ms[name]:.3f}", f"{cpu_ms[name]:.3f}", common.spread([w for w, _ in times[name]])]
            for name in ("zlib", "imagecodecs")]
    body = (common.markdown_table(["Deflate codec", "ms per crop (wall, median)", "ms per crop (CPU)", "spread"], rows)
            + f"\n\n{len(paths)} synthetic crops, {rounds} interleaved rounds; imagecodecs is "
            f"{ms['zlib'] / ms['imagecodecs']:.2f}x faster (wall), "
            f"{cpu_ms['zlib'] / cpu_ms['imagecodecs']:.2f}x (CPU).\n")
    print(body)
    common.publish(opts, "decode_codecs", "Decode: imagecodecs (libdeflate) vs zlib", body,
                   {"ms_per_crop": ms, "cpu_ms_per_crop": cpu_ms, "n": len(paths), "rounds": rounds}, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
