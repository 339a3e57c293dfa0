#!/usr/bin/env python
"""The real BPS layout (plates, wells per plate, fields per well, nuclei per field) against the synthetic default's.

Prints the Markdown table that docs/synthetic.md quotes; tests/test_synthetic.py rebuilds it from the same
meta.csv and fails when the two differ.

    python bench/synthetic_layout.py                       # reads ../shared/bps_real/meta.csv
    python bench/synthetic_layout.py --meta path/to/meta.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402, F401  (the repository on sys.path, for tests.support)

from bps_vit.bps import read_meta_csv  # noqa: E402
from bps_vit.synthetic_stats import layout_comparison  # noqa: E402
from tests.support.paths import REAL_META  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meta", type=Path, default=REAL_META, help="the real BPS meta.csv")
    parser.add_argument("--per_condition", type=int, default=176, help="the small comparison: crops per condition")
    args = parser.parse_args()
    print(layout_comparison(read_meta_csv(args.meta).rows, per_condition=args.per_condition))


if __name__ == "__main__":
    main()
