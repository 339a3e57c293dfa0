"""Shared fixtures. Every test runs offline: a Hub call would burn ~20 s of retries per call."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO_ROOT.parent / "shared" / "bps_real"
REAL_IMAGE = SHARED_REAL / "P242_73665006707-A6_003_013_proj.tif"
REAL_META = SHARED_REAL / "meta.csv"


@pytest.fixture(scope="session")
def real_image() -> Path:
    if not REAL_IMAGE.is_file():
        pytest.skip(f"real BPS sample not found at {REAL_IMAGE} (shared/ is laid beside the repo in CI)")
    return REAL_IMAGE


@pytest.fixture(scope="session")
def real_meta() -> Path:
    if not REAL_META.is_file():
        pytest.skip(f"real BPS meta.csv not found at {REAL_META} (shared/ is laid beside the repo in CI)")
    return REAL_META
