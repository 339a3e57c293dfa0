#!/usr/bin/env python
"""How separable the synthetic Fe and X-ray images are at each `difficulty`: an oracle on the ground truth.

For each difficulty, generate a synthetic bucket, compute `bps_vit.synthetic_stats.image_statistics`
from the ground-truth masks of the irradiated (non-sham) images, and report ROC-AUCs (Fe = positive):
single foci statistics, a cross-validated logistic regression on all foci statistics (the oracle),
its cross-validated accuracy, and the same regression on the foci-blind statistics (the control:
it must stay near 0.5 at every difficulty, because the class signal lives only in the foci).
Prints the Markdown table that docs/synthetic.md quotes.

    python bench/synthetic_separability.py                 # 1020 images per difficulty, 0..1 by 0.1
    python bench/synthetic_separability.py --quick         # 340 images, 0 / 0.2 / 0.5 / 0.8 / 1
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bps_vit.bps import LABELS
from bps_vit.synthetic import SyntheticConfig, generate_dataset
from bps_vit.synthetic_image import foci_law
from bps_vit.synthetic_stats import FOCI_BLIND_STATISTICS, FOCI_STATISTICS, dataset_statistics


def cross_validated(stats: list[dict], keys: tuple[str, ...], labels: np.ndarray, seed: int) -> tuple[float, float]:
    """(ROC-AUC, accuracy) of a 5-fold cross-validated logistic regression on `keys`."""
    features = np.array([[s[k] for k in keys] for s in stats])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores)), float(np.mean((scores > 0.5) == labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=None,
                        help="images per difficulty (sham included); default 1020 (--quick: 340)")
    parser.add_argument("--difficulties", type=float, nargs="+", default=None,
                        help="default 0 to 1 by 0.1 (--quick: 0, 0.2, 0.5, 0.8, 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="340 images at difficulties 0, 0.2, 0.5, 0.8, 1")
    args = parser.parse_args()
    args.num_images = args.num_images or (340 if args.quick else 1020)
    args.difficulties = args.difficulties or ([0.0, 0.2, 0.5, 0.8, 1.0] if args.quick
                                              else [round(0.1 * k, 1) for k in range(11)])

    print(f"{args.num_images} synthetic images per difficulty (seed {args.seed}); AUCs with Fe as the positive class.")
    print("Single statistics are raw AUCs (below 0.5: lower for Fe); the regressions are 5-fold cross-validated.\n")
    print("| difficulty | Fe / X-ray focus sigma (px) | Fe / X-ray focus peak (x nucleus) | irradiated images "
          "| AUC mean focus area | AUC mean focus contrast | AUC foci count | oracle AUC (all foci statistics) "
          "| oracle accuracy | control AUC (foci-blind statistics) |")
    print("|---" * 10 + "|")
    start = time.perf_counter()
    for difficulty in args.difficulties:
        fe, xray = (foci_law(particle, difficulty) for particle in LABELS)
        with tempfile.TemporaryDirectory() as raw:
            config = SyntheticConfig(num_images=args.num_images, seed=args.seed, difficulty=difficulty)
            rows = [row for row in generate_dataset(raw, config, progress=False) if not row.is_sham]
            stats = dataset_statistics(raw, rows)
        labels = np.array([row.particle_type == LABELS[0] for row in rows], dtype=int)
        single = {key: roc_auc_score(labels, [s[key] for s in stats])
                  for key in ("focus_mean_area", "focus_mean_contrast", "foci_count")}
        oracle_auc, oracle_accuracy = cross_validated(stats, FOCI_STATISTICS, labels, args.seed)
        control_auc, _ = cross_validated(stats, FOCI_BLIND_STATISTICS, labels, args.seed)
        print(f"| {difficulty:g} | {fe.sigma:.2f} / {xray.sigma:.2f} | {fe.amplitude:.2f} / {xray.amplitude:.2f} "
              f"| {len(rows)} | {single['focus_mean_area']:.3f} | {single['focus_mean_contrast']:.3f} "
              f"| {single['foci_count']:.3f} | {oracle_auc:.3f} | {oracle_accuracy:.3f} | {control_auc:.3f} |",
              flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
