"""The 16-bit Deflate decode: libdeflate (imagecodecs) when installed, bit-identical to the standard library's zlib."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bps_vit.imaging import read_image


def _decode_with_stdlib_zlib(path: Path) -> np.ndarray:
    """Decode a one-page, strip-organised Deflate TIFF with `zlib` alone: an implementation independent of
    tifffile's codec choice, from the TIFF 6 layout (strips of RowsPerStrip rows, no predictor)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.compression in (8, 32946) and page.predictor == 1 and not page.is_tiled
        raw = b""
        with open(path, "rb") as handle:
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                handle.seek(offset)
                raw += zlib.decompress(handle.read(count))
        dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
        return np.frombuffer(raw, dtype=dtype)[: page.shape[0] * page.shape[1]].reshape(page.shape)


def test_tifffile_decodes_deflate_with_imagecodecs():
    imagecodecs = pytest.importorskip("imagecodecs", reason="imagecodecs is a dependency: pip install -e .")
    assert tifffile.TIFF.DECOMPRESSORS[32946] is imagecodecs.deflate_decode
    assert tifffile.TIFF.DECOMPRESSORS[8] is imagecodecs.deflate_decode


def test_real_crop_decode_is_bit_identical_to_zlib(real_image):
    fast = read_image(real_image)
    reference = _decode_with_stdlib_zlib(real_image)
    assert fast.dtype == np.uint16 and fast.shape == reference.shape
    assert np.array_equal(fast, reference)


def test_synthetic_crop_decode_is_bit_identical_to_zlib(tmp_path):
    from bps_vit.synthetic import SyntheticConfig, generate_dataset

    generate_dataset(tmp_path, SyntheticConfig(num_images=17, seed=3), progress=False)
    for path in sorted(tmp_path.glob("*.tif"))[:6]:
        assert np.array_equal(read_image(path), _decode_with_stdlib_zlib(path))
