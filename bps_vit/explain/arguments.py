"""The explain step's command-line arguments (`scripts/explain.py`, or one .yaml/.json file).

Checked before any model is loaded (`validate`), so a typo fails in a second with the flag's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..cli import ProgressArguments
from . import perturbation as pert
from .methods.registry import METHODS as REGISTERED
from .methods.rollout import HEAD_FUSIONS, HeadFusion
from .metrics import deletion, randomization

METHODS = tuple(REGISTERED)


@dataclass
class ExplainArguments(ProgressArguments):
    """Arguments of `scripts/explain.py` (also accepted from a single .yaml/.json file)."""

    model: str = field(metadata={"help": "Saved model folder (outputs/<run>) or Hub id of a fine-tuned BPS model."})
    data_dir: str = field(
        default="data/bps", metadata={"help": "Prepared data folder (train|validation|test/{Fe,X-ray}/*.tif, masks/)."}
    )
    split: str = field(default="test", metadata={"help": "Split folder of --data_dir to take images from."})
    images: list[str] | None = field(
        default=None,
        metadata={"help": "Explain these image files (TIFF, PNG, JPEG, as predict) or folders of them instead of a "
                  "split (labels from a class-named parent folder or a meta.csv beside them; masks from a masks/ "
                  "folder beside them)."},
    )
    num_images: int = field(
        default=8, metadata={"help": "How many images (balanced over classes, seeded); <= 0 = all."}
    )
    methods: str = field(
        default="rollout,grad_rollout,shap", metadata={"help": f"Comma-separated, from {', '.join(METHODS)}."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where figures/ and the JSON files go (default <model>/explain)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Images per explanation batch."})
    head_fusion: HeadFusion = field(default="mean", metadata={"help": "Attention rollout: how heads are fused."})
    discard_ratio: float = field(default=0.0, metadata={"help": "Rollout: lowest attentions dropped per layer [0, 1)."})
    perturbation_space: pert.Space = field(
        default="raw",
        metadata={"help": "Where deletion/insertion and SHAP remove pixels: raw (the 16-bit image before the stretch, "
                  "then the model's preprocessing) or model (the normalised model input)."},
    )
    shap_masker: str = field(
        default="opening",
        metadata={"help": 'SHAP masker: "opening" (raw space); model space: "blur", "blur(h,w)", '
                  '"inpaint_telea", "inpaint_ns", "constant(v)".'},
    )
    shap_output: Literal["log_odds", "probability"] = field(
        default="log_odds",
        metadata={"help": "What SHAP explains: log_odds (default; stays informative for confident models) "
                  "or probability."},
    )
    shap_max_evals: int = field(default=500, metadata={"help": "SHAP model evaluations per image."})
    shap_batch_size: int = field(default=64, metadata={"help": "Masked images per SHAP forward batch."})
    faithfulness_steps: int = field(default=32, metadata={"help": "Deletion/insertion steps per curve."})
    faithfulness_batch_size: int = field(default=64, metadata={"help": "Images per forward batch of the curves."})
    faithfulness_baseline: deletion.Baseline = field(
        default="opening",
        metadata={"help": "What removed pixels become: opening (foci-free local level; raw or model space), "
                  "blur or mean (model space only)."},
    )
    causal_dilation: int = field(default=2, metadata={"help": "Causal foci test: foci dilated by this many raw px."})
    randomization: randomization.Randomization = field(
        default="all", metadata={"help": "Model-randomisation check (Adebayo et al. 2018): which weights are "
                                  "re-initialised; cascade = the top k blocks for every k."}
    )
    max_figures: int = field(
        default=16, metadata={"help": "Per-image figures to draw (the metrics use every image); <0 = all."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for image choice, random baselines and SHAP."})

    def method_list(self) -> list[str]:
        methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown or not methods:
            raise ValueError(
                f"--methods {self.methods!r}: unknown {unknown or 'empty list'}; choose from {', '.join(METHODS)}"
            )
        return list(dict.fromkeys(methods))

    def validate(self) -> None:
        self.method_list()
        if self.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"--head_fusion must be one of {HEAD_FUSIONS}; got {self.head_fusion!r}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError(f"--discard_ratio must be in [0, 1); got {self.discard_ratio}")
        if self.perturbation_space not in pert.SPACES:
            raise ValueError(f"--perturbation_space must be one of {pert.SPACES}; got {self.perturbation_space!r}")
        allowed = ("opening",) if self.perturbation_space == "raw" else deletion.BASELINES
        if self.faithfulness_baseline not in allowed:
            raise ValueError(f"--faithfulness_baseline in {self.perturbation_space} space must be one of {allowed}; "
                             f"got {self.faithfulness_baseline!r}")
        if self.perturbation_space == "raw" and self.shap_masker not in ("opening",):
            raise ValueError(f"--shap_masker {self.shap_masker!r} masks the model input; in raw space use opening "
                             "(or pass --perturbation_space model)")
        if self.randomization not in randomization.RANDOMIZATIONS:
            raise ValueError(f"--randomization must be one of {randomization.RANDOMIZATIONS}; "
                             f"got {self.randomization!r}")
        if self.batch_size < 1 or self.faithfulness_batch_size < 1 or self.faithfulness_steps < 2:
            raise ValueError("--batch_size and --faithfulness_batch_size must be >= 1, --faithfulness_steps >= 2")

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        if Path(self.model).is_dir():
            return Path(self.model) / "explain"
        return Path("outputs") / self.model.replace("/", "__") / "explain"

