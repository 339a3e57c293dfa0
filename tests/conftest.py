"""Shared fixtures. Every test runs offline (tests/support/env.py): a Hub call would burn ~20 s of retries per call.
The helpers the tests share with bench/ live in tests/support/ (its __init__ maps them)."""

from __future__ import annotations

from tests.support.env import use_offline_environment

use_offline_environment()  # before any Hugging Face import

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.support.paths import REAL_IMAGE, REAL_META  # noqa: E402


@pytest.fixture(autouse=True)
def logging_as_before():
    """A script's `main` run in-process configures logging (the root handler, the `bps_vit` level) for a process;
    put both back so that a later test's caplog still sees the package's records."""
    root, package = logging.getLogger(), logging.getLogger("bps_vit")
    handlers, root_level, package_level = list(root.handlers), root.level, package.level
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    package.setLevel(package_level)


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


@pytest.fixture(scope="session")
def synthetic_raw_dir(tmp_path_factory) -> Path:
    """A small synthetic raw folder (flat TIFFs + meta.csv + masks), easy difficulty so tiny models learn fast."""
    from bps_vit.synthetic import SyntheticConfig, generate_dataset

    raw = tmp_path_factory.mktemp("synthetic_raw")
    generate_dataset(raw, SyntheticConfig(num_images=720, seed=11, difficulty=0.0), progress=False)
    return raw


@pytest.fixture(scope="session")
def prepared_dir(synthetic_raw_dir, tmp_path_factory) -> Path:
    """`data/bps`-shaped folder made by the real split code from the synthetic raw folder."""
    from bps_vit.bps import read_meta_csv
    from bps_vit.prepared_folder import write_split
    from bps_vit.split import SplitConfig

    rows = read_meta_csv(synthetic_raw_dir / "meta.csv").rows
    out = tmp_path_factory.mktemp("prepared") / "bps"
    write_split(rows, {r.filename: synthetic_raw_dir / r.filename for r in rows}, out, SplitConfig(seed=0),
                masks_dir=synthetic_raw_dir / "masks", disable_tqdm=True)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning OpenMP threads
    make them ~20x slower; restore the setting for the rest of the suite."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
