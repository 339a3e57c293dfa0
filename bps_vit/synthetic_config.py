"""What the synthetic BPS world draws: `SyntheticConfig`, the BPS design it imitates, and its knobs.

A module of its own so that the layout (`synthetic.py`), the renderer (`synthetic_image.py`) and the
scripts that expose the knobs (`prepare.py`) all read one definition without importing each other.
It needs only the BPS domain (`bps.py`), so a script can show the knobs' help without loading OpenCV.

Two confounds, each its own knob, because each needs its own check:

- `campaign_effect`: one shift shared by every plate of a branch (the Fe and the X-ray plates were
  imaged in separate campaigns). No split can see it, since every held-out plate carries it too;
  the sham control (Fe vs X-ray on 0 Gy images) does.
- `plate_effect`: an independent signature per plate (brightness, background, haze, focus blur,
  noise), drawn per plate whatever its branch. A field split puts every plate in train and in test,
  so a model that recognises plates scores as if it recognised damage; only a model that has never
  seen the test plate shows the difference.
"""

from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass, field

from .bps import KNOWN_DOSES, KNOWN_HOURS, LABELS

#: The BPS design: 17 conditions (no Fe 0.3 Gy at 48 h), each imaged on its own plates.
CONDITIONS: tuple[tuple[str, float, int], ...] = tuple(
    (particle, dose, hours)
    for particle in LABELS
    for hours in KNOWN_HOURS
    for dose in sorted(KNOWN_DOSES[particle], reverse=True)
    if not (particle == "Fe" and dose == 0.3 and hours == 48)
)

#: Well names a synthetic plate uses, in order (B2, B3, ...).
WELL_NAMES: tuple[str, ...] = tuple(f"{row}{col}" for row in "BCDEFG" for col in range(2, 12))

#: The largest confound knob: at 3 a plate's offset moves by ~200 grey levels per standard deviation.
MAX_EFFECT = 3.0

BATCH_EFFECT_RETIRED = (
    "batch_effect was retired in synthetic generator v3: it mixed a branch-wide shift with a small plate jitter on "
    "the same axis, so no world could hold one confound without the other. Use campaign_effect for the shift shared "
    "by every plate of a branch (the old knob's main term: campaign_effect=B gives it without the jitter) and "
    "plate_effect for an independent signature per plate (docs/synthetic.md)."
)


class SyntheticConfigError(ValueError):
    """A setting the generator cannot use; `setting` names it, `reason` says what it must be."""

    def __init__(self, setting: str, reason: str, config: dict) -> None:
        super().__init__(f"SyntheticConfig: {reason}; got {config}")
        self.setting, self.reason = setting, reason


@dataclass
class SyntheticConfig:
    """What to draw. Defaults give the embedded demo dataset (`make demo`).

    Each field's help is in its metadata (the HfArgumentParser convention), so a script that exposes a knob can
    reuse the text instead of paraphrasing it.
    """

    num_images: int = field(default=2400, metadata={"help": "Images to draw, dealt evenly over the 17 conditions."})
    seed: int = field(default=0, metadata={"help": "Same seed, same bytes (whatever num_workers is)."})
    difficulty: float = field(default=0.2, metadata={
        "help": "0 = Fe and X-ray foci clearly different; 1 = identically distributed (chance). See docs/synthetic.md."
    })
    campaign_effect: float = field(default=0.0, metadata={
        "help": "Branch-wide acquisition shift shared by every plate of a branch (0 = none; 1 = strong): brighter "
                "background, more haze and brighter nuclei on every Fe plate, the opposite on every X-ray plate. "
                "Held-out plates carry it too; the sham control detects it."
    })
    plate_effect: float = field(default=0.0, metadata={
        "help": "Independent signature per plate (0 = none; 1 = strong): brightness, background offset, haze, focus "
                "blur and noise, drawn per plate whatever its branch, so plates can be told apart. A field split "
                "then overstates accuracy on new plates; a plate-held-out split shows it."
    })
    min_size: int = field(default=100, metadata={"help": "Smallest crop side, px."})
    max_size: int = field(default=280, metadata={"help": "Largest crop side, px."})
    plates_per_condition: int = field(default=1, metadata={
        "help": "Plates per condition (1 = the real experiment: 17 plates, each holding one condition)."
    })
    wells_per_plate: int = field(default=8, metadata={
        "help": "Wells imaged per plate (B2, B3, ...; 8 in the real experiment). Fields per well and nuclei per field "
                "follow the real distributions; num_images is a uniform draw of the nuclei (docs/synthetic.md)."
    })
    min_induced_foci: int = field(default=2, metadata={
        "help": "Every irradiated nucleus gets at least this many damage foci (Fe: particle tracks). Real Fe at "
                "0.3 Gy misses ~15% of nuclei entirely; 0 reproduces that (and caps the reachable accuracy below 1)."
    })
    num_workers: int = field(default=0, metadata={
        "help": "Worker processes (0 = automatic: up to 4 for large jobs); the output does not depend on it."
    })
    batch_effect: InitVar[float | None] = None  # retired: passing it raises BATCH_EFFECT_RETIRED

    def __post_init__(self, batch_effect: float | None) -> None:
        if batch_effect is not None:
            raise SyntheticConfigError("batch_effect", BATCH_EFFECT_RETIRED, asdict(self))
        checks = [
            ("num_images", self.num_images >= len(CONDITIONS), f"must be >= {len(CONDITIONS)} (one per condition)"),
            ("difficulty", 0.0 <= self.difficulty <= 1.0, "must lie in [0, 1]"),
            ("campaign_effect", 0.0 <= self.campaign_effect <= MAX_EFFECT, f"must lie in [0, {MAX_EFFECT:g}]"),
            ("plate_effect", 0.0 <= self.plate_effect <= MAX_EFFECT, f"must lie in [0, {MAX_EFFECT:g}]"),
            ("min_size", 32 <= self.min_size <= self.max_size <= 2048, "needs 32 <= min_size <= max_size <= 2048"),
            ("plates_per_condition", self.plates_per_condition >= 1, "must be >= 1"),
            ("wells_per_plate", 1 <= self.wells_per_plate <= len(WELL_NAMES), f"must be in 1..{len(WELL_NAMES)}"),
            ("min_induced_foci", self.min_induced_foci >= 0, "must be >= 0"),
            ("num_workers", self.num_workers >= 0, "must be >= 0 (0 = automatic)"),
        ]
        for setting, ok, rule in checks:
            if not ok:
                reason = rule if rule.startswith("needs") else f"{setting} {rule}"
                raise SyntheticConfigError(setting, reason, asdict(self))


def knob_help(name: str) -> str:
    """The help text of a `SyntheticConfig` field, for a script that exposes the knob."""
    return SyntheticConfig.__dataclass_fields__[name].metadata["help"]
