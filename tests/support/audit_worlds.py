"""Tiny synthetic worlds laid out like the real experiment (one plate per condition) and a tiny audit configuration.

Six irradiated conditions are kept (Fe 0.82 Gy 4 h, 0.3 Gy 4 h, 0.82 Gy 24 h; X-ray 1 Gy 4 h, 0.1 Gy 4 h, 1 Gy 24 h:
3 plates per label, the fewest plate-held-out cross-validation accepts) and the two 4 h sham plates: crops of 40-56
px and a ViT at 32 px keep a fold to seconds. The training is long enough (30 epochs, asinh transfer, which lifts
the plates' background levels) for the tiny ViT to learn the plates of a strong plate_effect.
"""

from __future__ import annotations

from pathlib import Path

from .tiny_models import TINY_CONFIG

CONDITIONS = {("Fe", 0.82, 4), ("Fe", 0.3, 4), ("Fe", 0.82, 24), ("X-ray", 1.0, 4), ("X-ray", 0.1, 4),
              ("X-ray", 1.0, 24), ("Fe", 0.0, 4), ("X-ray", 0.0, 4)}

#: Training flags of every audit in the tests (scripts/train.py flags; the audit passes them through).
TINY_TRAINING = [
    "--config_name", TINY_CONFIG, "--image_size", "32", "--stretch_mode", "dataset", "--intensity_transfer", "asinh",
    "--num_train_epochs", "30", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "128",
    "--learning_rate", "0.002", "--weight_decay", "0.05", "--warmup_steps", "0.1", "--lr_scheduler_type", "cosine",
    "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "40", "--save_steps", "40",
    "--logging_steps", "40", "--early_stopping_patience", "20", "--seed", "1", "--report_to", "none",
    "--disable_tqdm", "true", "--use_cpu", "true", "--bootstrap_resamples", "1000",
]


def make_world(root: Path, *, difficulty: float, plate_effect: float = 0.0, campaign_effect: float = 0.0,
               num_images: int = 680, seed: int = 4) -> Path:
    """A prepared folder (field-grouped split, sham held out, masks) of a synthetic world; returns its path."""
    from bps_vit.bps import read_meta_csv
    from bps_vit.prepared_folder import write_split
    from bps_vit.split import SplitConfig
    from bps_vit.synthetic import SyntheticConfig, generate_dataset

    raw = root / "raw"
    config = SyntheticConfig(num_images=num_images, seed=seed, difficulty=difficulty, plate_effect=plate_effect,
                             campaign_effect=campaign_effect, plates_per_condition=1, wells_per_plate=4,
                             min_size=40, max_size=56)
    generate_dataset(raw, config, progress=False)
    rows = [row for row in read_meta_csv(raw / "meta.csv").rows
            if (row.particle_type, row.dose_Gy, row.hr_post_exposure) in CONDITIONS]
    out = root / "bps"
    write_split(rows, {row.filename: raw / row.filename for row in rows}, out, SplitConfig(seed=0),
                masks_dir=raw / "masks", disable_tqdm=True)
    return out


def audit_argv(data_dir: Path, output_dir: Path, *flags: str) -> list[str]:
    return [*TINY_TRAINING, "--data_dir", str(data_dir), "--output_dir", str(output_dir), *flags]


def run_audit_in_process(argv: list[str]):
    """`scripts/audit.py` without its logging setup (which would outlive the test and mute other tests' caplog)."""
    from bps_vit.audit import AuditArguments, run_audit
    from bps_vit.cli import parse_args
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    return run_audit(*parse_args((ModelArguments, DataArguments, BPSTrainingArguments, AuditArguments), argv))
