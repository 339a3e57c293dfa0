"""Synthetic BPS-like microscopy: the embedded default dataset, with known ground truth.

We cannot ship NASA's 77,177 images, so this module writes look-alikes that go through exactly
the same fetch -> split -> train path: the same flat folder (`meta.csv` + uint16 Deflate TIFFs
named `P<plate>_<acq>-<well>_<field>_<object>_proj.tif`), the same experimental design (17
conditions, one condition per plate, wells > fields > nuclei), plus what the real data lacks:
a per-image label mask (0 background, 1 central nucleus, 2 foci, 3 neighbouring nuclei) so
explanations can be scored against the truth.

This file is the dataset: the plate/well/field layout, the plates' looks and the files. How one
crop is drawn (the foci physics, in which alone the class signal lives) is `synthetic_image.py`;
statistics measured against the masks are `synthetic_stats.py`; the knobs are `synthetic_config.py`.
Three knobs make the task harder or confounded:

- `difficulty` moves the Fe and X-ray foci laws (size, brightness, count, clustering, track
  alignment) towards one shared law; at 1.0 they are identical and nothing beats chance.
- `campaign_effect` shifts every plate of a branch the same way (the Fe and the X-ray plates
  were imaged in separate campaigns, as in the real experiment): the sham control (0 Gy images,
  Fe vs X-ray) then scores far above 0.5, and holding plates out does not reveal it.
- `plate_effect` gives each plate its own signature (brightness, background, haze, focus blur,
  noise), independent of its branch: a model can learn plates instead of damage, a field split
  then overstates accuracy, and only plates never seen in training show it.

Every image draws from its own random stream, derived from (seed, image index), so the output
is byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np
import tifffile
from tqdm.auto import tqdm

from .bps import LABELS, MetaRow, parse_filename, write_meta_csv
from .synthetic_config import CONDITIONS, WELL_NAMES, SyntheticConfig
from .synthetic_image import PlateLook, random_stream, render_image

MASKS_DIRNAME = "masks"
CONFIG_FILENAME = "synthetic_config.json"
GENERATOR_VERSION = 3  # bump when the same seed would draw different images (3: plate looks, real layout)

_FIRST_PLATE = 901  # real plates are P242-P288; synthetic ones are recognisably different

#: The real layout, as quantiles at 0, 5, ..., 100% (measured from shared/bps_real/meta.csv, 77,177 crops; the tests
#: check them against it): fields imaged per well (135 wells) and nuclei cropped per field (3,595 fields).
REAL_FIELDS_PER_WELL = (1, 15.7, 18, 18.1, 19, 19.5, 20.2, 21, 22.6, 23, 24, 26, 28, 31, 32, 34, 38.2, 40, 40, 40, 40)
REAL_NUCLEI_PER_FIELD = (1, 3, 5, 7, 8, 9, 11, 12, 14, 17, 19, 22, 25, 28, 30, 33, 35, 37, 40, 44, 77)

#: What campaign_effect 1 does to every plate of a branch (+ for Fe, - for X-ray): the old batch_effect's campaign
#: term, unchanged.
CAMPAIGN_LOOK = PlateLook(brightness=0.25, background=70.0, haze=1.5)
#: The standard deviation of each dimension of a plate's own signature at plate_effect 1 (defocus: of a
#: half-normal), drawn per plate from its own stream, independently of its branch and of the other dimensions.
PLATE_LOOK_SCALE = PlateLook(brightness=0.25, background=70.0, haze=0.5, defocus=1.0, noise=0.35)


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Plate:
    index: int
    number: int
    acquisition: int
    particle: str
    dose_Gy: float
    hours: int
    look: PlateLook  # its acquisition signature: campaign part + its own part


def plate_look(config: SyntheticConfig, particle: str, plate_index: int) -> PlateLook:
    """A plate's acquisition signature: its branch's campaign shift plus its own draw, from its own stream.

    The own draw depends only on (seed, plate index), never on the branch or the condition.
    """
    sign = 1.0 if particle == LABELS[0] else -1.0
    look = CAMPAIGN_LOOK.scaled(sign * config.campaign_effect)
    if config.plate_effect > 0:
        z = random_stream(config.seed, 3, plate_index).standard_normal(len(fields(PlateLook)))
        own = PLATE_LOOK_SCALE.scaled(config.plate_effect * z)
        look = look + replace(own, defocus=abs(own.defocus))  # a blur has no sign: half-normal
    return look


@dataclass(frozen=True)
class _Field:
    well: str
    number: int
    objects: tuple[int, ...]  # the object ids of its nuclei
    seed: int  # its crops share acquisition conditions (offset, haze)


@dataclass(frozen=True)
class _ImageSpec:
    index: int
    filename: str
    plate: _Plate
    field_seed: int  # fields share acquisition conditions (offset, haze)


def _draw_count(rng: np.random.Generator, quantiles: tuple[float, ...]) -> int:
    """One count from a distribution given by its quantiles at 0, 5, ..., 100% (inverse CDF, linear in between)."""
    levels = np.linspace(0.0, 1.0, len(quantiles))
    return max(1, int(round(float(np.interp(rng.random(), levels, quantiles)))))


def _plate_fields(rng: np.random.Generator, wells: tuple[str, ...], needed: int) -> list[_Field]:
    """Every field of one plate at the real experiment's size: fields per well and nuclei per field drawn from the
    real distributions; when the plate must hold more than the ~4,500 nuclei drawn, every field grows in proportion
    (so fields per well keep the real law)."""
    sizes = {well: [_draw_count(rng, REAL_NUCLEI_PER_FIELD) for _ in range(_draw_count(rng, REAL_FIELDS_PER_WELL))]
             for well in wells}
    held = sum(sum(well_sizes) for well_sizes in sizes.values())
    if held < needed:
        sizes = {well: [math.ceil(size * needed / held) for size in well_sizes] for well, well_sizes in sizes.items()}
    fields = []
    for well in wells:
        numbers = np.sort(rng.choice(max(40, len(sizes[well])), size=len(sizes[well]), replace=False)) + 1
        for number, size in zip(numbers, sizes[well]):
            objects = tuple(int(k) for k in np.sort(rng.choice(max(60, size), size=size, replace=False)) + 1)
            fields.append(_Field(well, int(number), objects, int(rng.integers(0, 2**31))))
    return fields


def _plate_specs(plate: _Plate, config: SyntheticConfig, n_images: int, first_index: int) -> list[_ImageSpec]:
    """`n_images` crops drawn uniformly from the plate's nuclei, in plate > well > field > object order."""
    rng = random_stream(config.seed, 0, plate.index)
    fields = _plate_fields(rng, WELL_NAMES[: config.wells_per_plate], n_images)
    nuclei = [(field, object_id) for field in fields for object_id in field.objects]
    specs = []
    for slot in np.sort(rng.choice(len(nuclei), size=n_images, replace=False)):
        field, object_id = nuclei[slot]
        name = f"P{plate.number}_{plate.acquisition}-{field.well}_{field.number:03d}_{object_id:03d}_proj.tif"
        parse_filename(name)  # the generator must honour the grammar it imitates
        specs.append(_ImageSpec(first_index + len(specs), name, plate, field.seed))
    return specs


def _layout(config: SyntheticConfig) -> list[_ImageSpec]:
    """Condition -> plates -> wells -> fields -> objects, with BPS-style names.

    Each plate is laid out at the real experiment's size (~4,500 nuclei); `num_images` is a uniform draw of its
    crops per condition, as `--max_per_condition` draws from the real data, so a small dataset has the real
    data's subsample's layout: many fields per well, few crops per field.
    """
    base, extra = divmod(config.num_images, len(CONDITIONS))
    specs: list[_ImageSpec] = []
    plate_index = 0
    for cond_index, (particle, dose, hours) in enumerate(CONDITIONS):
        n_condition = base + (1 if cond_index < extra else 0)
        n_plates = max(1, min(config.plates_per_condition, n_condition))
        for k in range(n_plates):
            plate = _Plate(
                index=plate_index,
                number=_FIRST_PLATE + plate_index,
                acquisition=int(80_000_000_000 + plate_index * 98_765_431
                                + random_stream(config.seed, 0, plate_index, 1).integers(0, 90_000)),
                particle=particle,
                dose_Gy=dose,
                hours=hours,
                look=plate_look(config, particle, plate_index),
            )
            n_plate = n_condition // n_plates + (1 if k < n_condition % n_plates else 0)
            specs += _plate_specs(plate, config, n_plate, len(specs))
            plate_index += 1
    return specs


def _write_tiff(path: Path, array: np.ndarray) -> None:
    """Deflate-compressed single-page TIFF like the BPS bucket's, without timestamps (byte-identical per seed)."""
    tifffile.imwrite(path, array, compression=tifffile.COMPRESSION.DEFLATE, compressionargs={"level": 1},
                     metadata=None, software="bps_vit.synthetic")


def _make_one(spec: _ImageSpec, config: SyntheticConfig, raw_dir: Path) -> None:
    image, mask = render_image(
        spec.index, config.seed, spec.plate.particle, spec.plate.dose_Gy, spec.plate.hours,
        spec.plate.look, spec.field_seed, config,
    )
    _write_tiff(raw_dir / spec.filename, image)
    _write_tiff(raw_dir / MASKS_DIRNAME / spec.filename, mask)


def _run_in_subprocesses(raw_dir: Path, config: SyntheticConfig, workers: int, bar) -> None:
    """Render shards in fresh interpreters (`python -m bps_vit.synthetic --worker ...`).

    Not multiprocessing: fork inherits OpenCV/BLAS thread pools (children can deadlock) and spawn
    re-runs a caller's script that lacks `if __name__ == "__main__"`. Every image draws from its own
    (seed, index) stream, so the shards add up to exactly the serial output.
    """
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    payload = json.dumps(asdict(config))
    processes, logs, readers = [], [], []
    lock = threading.Lock()

    def follow(stream) -> None:
        for _line in stream:
            with lock:
                bar.update(1)

    try:
        for shard in range(workers):
            log = tempfile.TemporaryFile(mode="w+")
            command = [sys.executable, "-m", "bps_vit.synthetic", "--worker", str(raw_dir), str(shard), str(workers),
                       payload]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            reader = threading.Thread(target=follow, args=(process.stdout,), daemon=True)
            reader.start()
            processes.append(process), logs.append(log), readers.append(reader)
        for process, reader in zip(processes, readers):
            process.wait()
            reader.join()
        for shard, (process, log) in enumerate(zip(processes, logs)):
            if process.returncode != 0:
                log.seek(0)
                raise RuntimeError(
                    f"synthetic worker {shard}/{workers} failed (exit {process.returncode}) writing to {raw_dir}:\n"
                    f"{log.read()[-3000:]}\nRetry with num_workers=1 to see the error in this process."
                )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for log in logs:
            log.close()


def _worker_main(argv: list[str]) -> int:
    """Entry point of one shard: renders images shard, shard + workers, ... and prints one line per image."""
    raw_dir, shard, workers, payload = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    config = SyntheticConfig(**json.loads(payload))
    cv2.setNumThreads(1)  # one process per core already
    for spec in _layout(config)[shard::workers]:
        _make_one(spec, config, raw_dir)
        print(spec.index, flush=True)
    return 0


def _rows(specs: list[_ImageSpec]) -> list[MetaRow]:
    """The meta.csv rows of laid-out images: one definition for `plan_rows` and `generate_dataset`."""
    return [MetaRow(s.filename, s.plate.dose_Gy, s.plate.particle, s.plate.hours) for s in specs]


def plan_rows(config: SyntheticConfig) -> list[MetaRow]:
    """The meta.csv rows `generate_dataset(config)` would write, without drawing any image."""
    return _rows(_layout(config))


def generate_dataset(raw_dir: str | Path, config: SyntheticConfig, progress: bool = True) -> list[MetaRow]:
    """Write a synthetic BPS bucket to `raw_dir`: meta.csv, <name>.tif (uint16) and masks/<name>.tif (uint8).

    Returns the meta.csv rows. Existing files of the same names are overwritten; others are left alone
    (downstream steps read only what meta.csv lists).
    """
    raw_dir = Path(raw_dir)
    (raw_dir / MASKS_DIRNAME).mkdir(parents=True, exist_ok=True)
    specs = _layout(config)
    # automatic: one process per core (at most 4) for jobs big enough to repay ~1 s of start-up
    workers = config.num_workers or (min(4, os.cpu_count() or 1) if len(specs) >= 300 else 1)
    with tqdm(total=len(specs), desc="synthesising BPS images", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for spec in specs:
                _make_one(spec, config, raw_dir)
                bar.update(1)
        else:
            _run_in_subprocesses(raw_dir, config, workers, bar)
    rows = _rows(specs)
    write_meta_csv(raw_dir / "meta.csv", rows)
    provenance = {"generator": "bps_vit.synthetic", "version": GENERATOR_VERSION, "config": asdict(config)}
    (raw_dir / CONFIG_FILENAME).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit("usage: python scripts/prepare_data.py --source synthetic ...  "
             "(this module's own entry point is internal)")
