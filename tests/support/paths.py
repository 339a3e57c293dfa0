"""Where things are: the repository and the real BPS samples CI keeps in shared/ beside it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_REAL = REPO.parent / "shared" / "bps_real"
REAL_IMAGE = SHARED_REAL / "P242_73665006707-A6_003_013_proj.tif"
REAL_META = SHARED_REAL / "meta.csv"
SKIP_REASON = f"real BPS samples not found at {SHARED_REAL} (CI keeps shared/ beside the repository)"
