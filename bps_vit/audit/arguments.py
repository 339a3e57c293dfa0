"""The audit's own flags; every training flag (`train.py`'s three dataclasses) passes through beside them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .folds import STRATEGIES, AuditInputError


@dataclass
class AuditArguments:
    """How the images are held out, how validation is carved, and how the numbers are drawn."""

    strategies: str = field(
        default=",".join(STRATEGIES),
        metadata={"help": "Comma-separated: plate (leave one irradiated plate out; the honest estimate), field (K "
                          "folds grouped by field), image (K random folds; the leaky reference)."},
    )
    num_folds: int = field(default=5, metadata={"help": "K, the folds of the field and image strategies."})
    validation_fraction: float = field(
        default=0.15,
        metadata={"help": "Share of each fold's training images carved out, by the strategy's group, to pick the "
                          "best epoch (plate: at least one plate per label)."},
    )
    fold_seed: int = field(default=0, metadata={"help": "Seed of the fold assignment and the validation carve."})
    balance_labels: bool = field(
        default=True,
        metadata={"help": "Train each fold on as many images of each label (the larger subsampled): leaving a plate "
                          "out otherwise shifts the training prior against the held-out plate's label."},
    )
    bootstrap_resamples: int = field(
        default=2000, metadata={"help": "Cluster-bootstrap resamples (plates drawn with replacement within a label)."}
    )
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the cluster bootstrap."})
    causal_images: int = field(
        default=64,
        metadata={"help": "Causal foci test (synthetic data with masks): held-out images of each strategy's first "
                          "fold, half per label; 0 skips it."},
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={"help": "Keep each finished fold's checkpoint-* folders (only needed to resume a fold; each fold "
                          "keeps its best model)."},
    )

    def strategy_list(self) -> list[str]:
        """The strategies in the canonical order, checked (a usage error names the valid ones)."""
        asked = [name.strip() for name in self.strategies.split(",") if name.strip()]
        unknown = [name for name in asked if name not in STRATEGIES]
        if unknown or not asked:
            raise AuditInputError(f"--strategies {self.strategies!r}: choose one or more of {', '.join(STRATEGIES)}, "
                                  "comma-separated (e.g. plate,field,image).")
        return [name for name in STRATEGIES if name in asked]

    def check(self) -> None:
        self.strategy_list()
        if self.num_folds < 2:
            raise AuditInputError(f"--num_folds {self.num_folds}: cross-validation needs at least 2 folds.")
        if not 0.0 < self.validation_fraction < 0.5:
            raise AuditInputError(f"--validation_fraction {self.validation_fraction}: choose a share in (0, 0.5).")
        if self.bootstrap_resamples < 100:
            raise AuditInputError(f"--bootstrap_resamples {self.bootstrap_resamples}: use at least 100 (2000 gives "
                                  "stable 95% intervals).")
        if self.causal_images < 0:
            raise AuditInputError(f"--causal_images {self.causal_images}: use 0 (skip) or more.")
