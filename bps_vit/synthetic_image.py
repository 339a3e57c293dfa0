"""One synthetic BPS crop: the foci physics and the renderer (`render_image`), with its ground-truth mask.

The physics, in one paragraph (details and numbers in docs/synthetic.md). 53BP1 marks DNA
double-strand breaks as foci. Low-LET X-rays deposit dose uniformly, so breaks are isolated:
many small, dim foci scattered over the nucleus, their number roughly proportional to dose and
falling over hours as breaks are repaired. High-LET Fe ions deposit dose along a few particle
tracks, so breaks cluster: fewer, larger, brighter foci, sometimes in a line along a track,
repaired more slowly. Every nucleus also carries a few endogenous ("background") foci whatever
its treatment; that is all a sham (0 Gy) nucleus has, so sham images of both branches are
identically distributed.

The class signal lives only in the foci. Everything else (crop size, camera offset, background
haze, nucleus size, shape, brightness and texture, neighbouring nuclei, noise) is drawn from
distributions that do not depend on the label, so a classifier blind to the foci is at chance
(tests/test_synthetic.py checks it). `difficulty` moves the Fe and X-ray foci laws towards one
shared law; at 1.0 they are identical and nothing beats chance.

Every draw comes from `random_stream(seed, *key)`, keyed by what it is for (0 the dataset
layout, 1 an image, 2 a field of view), so an image is a pure function of its arguments.
The dataset around the crops (plates, names, files, workers) is `synthetic.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

from .synthetic_config import SyntheticConfig

MASK_BACKGROUND, MASK_NUCLEUS, MASK_FOCI, MASK_NEIGHBOUR = 0, 1, 2, 3
_REFERENCE_AREA = math.pi * 60.0**2  # a nucleus of radius 60 px gets the nominal foci counts
_MASK_THRESHOLD = 0.02  # a pixel is "focus" where foci add > 2% of the nucleus level
_FOCUS_EXTENT = 2.5  # foci end at 2.5 sigma (no faint tails outside the mask to leak the class)
_FOCUS_FLOOR = math.exp(-0.5 * _FOCUS_EXTENT**2)
_INDUCED_SPREAD = 0.85  # foci centres lie within 85% of the nucleus radius


def random_stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per (seed, key): images do not depend on the order or process they are drawn in."""
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


# ----------------------------------------------------------------------------- foci physics


@dataclass(frozen=True)
class FociLaw:
    """How one kind of damage looks: sizes in px (Gaussian sigma), brightness as a multiple of the nucleus level."""

    sigma: float  # median focus sigma
    amplitude: float  # median peak, x nucleus level above background
    satellites: float  # mean sub-foci per focus (clustered damage makes lumpy foci)
    foci_per_track: float  # mean extra foci per particle track, aligned along it (0 = isolated foci)
    track_spacing: float  # distance between foci along a track, in sigmas


# Laws at difficulty 0. Numbers are chosen for visibility, in the direction the biology gives
# (see docs/synthetic.md): Fe foci ~2.7x wider and ~5x brighter than X-ray foci.
FE_LAW = FociLaw(sigma=4.0, amplitude=4.0, satellites=1.0, foci_per_track=1.5, track_spacing=3.0)
XRAY_LAW = FociLaw(sigma=1.1, amplitude=0.55, satellites=0.0, foci_per_track=0.0, track_spacing=3.0)
#: Where both laws end at difficulty 1 (identical: no information in the foci).
SHARED_LAW = FociLaw(sigma=1.8, amplitude=1.2, satellites=0.4, foci_per_track=0.35, track_spacing=3.0)
#: Endogenous foci every nucleus has (replication stress etc.), identical for all conditions.
BACKGROUND_LAW = FociLaw(sigma=1.4, amplitude=0.7, satellites=0.0, foci_per_track=0.0, track_spacing=3.0)
BACKGROUND_FOCI_PER_NUCLEUS = 1.5
SHARED_TRACKS_PER_NUCLEUS = 6.0

#: Fraction of the 4 h foci left after repair (high-LET clustered damage is repaired more slowly).
_REMAINING = {"Fe": {4: 1.0, 24: 0.8, 48: 0.65}, "X-ray": {4: 1.0, 24: 0.55, 48: 0.35}}


def _remaining(particle: str, hours: int) -> float:
    table = _REMAINING[particle]
    if hours in table:
        return table[hours]
    # hours outside the design: exponential repair through the tabulated points
    rate = -math.log(table[48]) / 48.0
    return math.exp(-rate * hours)


def expected_tracks(particle: str, dose_Gy: float, hours: int) -> float:
    """Mean damage tracks per reference nucleus at difficulty 0 (an X-ray "track" is one isolated focus).

    Fe: ~8 traversals/Gy (fluence 6.24 D / LET per um^2, LET ~150 keV/um, nucleus ~200 um^2).
    X-ray: ~24 foci at 1 Gy 4 h,
    growing as sqrt(dose) rather than linearly, so that 0.1 Gy still shows a few foci (a deliberate
    departure from the linear law, for visibility; see docs/synthetic.md).
    """
    if dose_Gy <= 0:
        return 0.0
    if particle == "Fe":
        return 8.0 * dose_Gy * _remaining(particle, hours)
    return 24.0 * math.sqrt(dose_Gy) * _remaining(particle, hours)


def _blend(value0: float, shared: float, difficulty: float, geometric: bool) -> float:
    if geometric:
        return math.exp((1 - difficulty) * math.log(value0) + difficulty * math.log(shared))
    return (1 - difficulty) * value0 + difficulty * shared


def foci_law(particle: str, difficulty: float) -> FociLaw:
    """The induced-foci law of `particle` at `difficulty` (geometric blend towards SHARED_LAW)."""
    law0 = FE_LAW if particle == "Fe" else XRAY_LAW
    return FociLaw(
        sigma=_blend(law0.sigma, SHARED_LAW.sigma, difficulty, True),
        amplitude=_blend(law0.amplitude, SHARED_LAW.amplitude, difficulty, True),
        satellites=_blend(law0.satellites, SHARED_LAW.satellites, difficulty, False),
        foci_per_track=_blend(law0.foci_per_track, SHARED_LAW.foci_per_track, difficulty, False),
        track_spacing=law0.track_spacing,
    )


def tracks_per_nucleus(particle: str, dose_Gy: float, hours: int, difficulty: float) -> float:
    """Mean induced tracks for a reference nucleus; at difficulty 1 the same for every irradiated condition."""
    if dose_Gy <= 0:
        return 0.0
    return _blend(expected_tracks(particle, dose_Gy, hours), SHARED_TRACKS_PER_NUCLEUS, difficulty, True)



# ----------------------------------------------------------------------------- rendering


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length `sigma` px."""
    white = rng.standard_normal(shape, dtype=np.float32)
    blurred = cv2.GaussianBlur(white, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return blurred * np.float32(2.0 * sigma * math.sqrt(math.pi))  # blurred white noise has std 1/(2 sigma sqrt(pi))


def _wide_blur(array: np.ndarray, sigma: float, factor: int = 4) -> np.ndarray:
    """A Gaussian blur wide enough to compute at 1/factor resolution (10x cheaper, same result to <1%)."""
    height, width = array.shape
    small = cv2.resize(array, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass
class _Nucleus:
    cy: float
    cx: float
    a: float  # semi-axis along theta
    b: float
    theta: float
    harmonics: np.ndarray  # (k, amplitude, phase) boundary wobble
    level: float  # mean intensity above background
    edge: float  # soft edge width, px

    def rho(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside the (wobbly) boundary."""
        dy, dx = yy - np.float32(self.cy), xx - np.float32(self.cx)
        c, s = np.float32(math.cos(self.theta)), np.float32(math.sin(self.theta))
        u = (dx * c + dy * s) * np.float32(1.0 / self.a)
        v = (dy * c - dx * s) * np.float32(1.0 / self.b)
        rho = np.sqrt(u * u + v * v)
        # boundary wobble sum_k amp_k cos(k phi + phase_k), from cos/sin(phi) = (u, v) / rho by angle addition
        inv = np.float32(1.0) / np.maximum(rho, np.float32(1e-6))
        cos1, sin1 = u * inv, v * inv
        cos_k = cos1 * cos1 - sin1 * sin1  # k = 2
        sin_k = np.float32(2.0) * sin1 * cos1
        wobble = np.ones_like(rho)
        for _k, amp, phase in self.harmonics:  # k = 2, 3, 4, ...
            wobble += np.float32(amp * math.cos(phase)) * cos_k - np.float32(amp * math.sin(phase)) * sin_k
            cos_k, sin_k = cos_k * cos1 - sin_k * sin1, sin_k * cos1 + cos_k * sin1
        return rho / wobble

    def render(self, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(intensity above background without texture, inside-mask) on the grid, computed only near the nucleus."""
        body = np.zeros(yy.shape, dtype=np.float32)
        inside = np.zeros(yy.shape, dtype=bool)
        reach = max(self.a, self.b) * 1.2 + 6 * self.edge
        y0, y1 = max(0, int(self.cy - reach)), min(yy.shape[0], int(self.cy + reach) + 2)
        x0, x1 = max(0, int(self.cx - reach)), min(yy.shape[1], int(self.cx + reach) + 2)
        if y0 >= y1 or x0 >= x1:
            return body, inside
        rho = self.rho(yy[y0:y1, x0:x1], xx[y0:y1, x0:x1])
        radius = math.sqrt(self.a * self.b)
        shape = 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) * np.float32(radius / self.edge), -30, 30)))
        dome = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0))  # projected ellipsoid: thicker centre
        body[y0:y1, x0:x1] = np.float32(self.level) * dome * shape
        inside[y0:y1, x0:x1] = rho < 1.0
        return body, inside

    def sample_points(self, rng: np.random.Generator, n: int, spread: float = _INDUCED_SPREAD) -> np.ndarray:
        """n points uniform over the inner `spread` of the nucleus, as (y, x)."""
        r = spread * np.sqrt(rng.random(n))
        phi = rng.uniform(0, 2 * math.pi, n)
        u, v = r * np.cos(phi) * self.a, r * np.sin(phi) * self.b
        c, s = math.cos(self.theta), math.sin(self.theta)
        return np.stack([self.cy + u * s + v * c, self.cx + u * c - v * s], axis=1)

    def contains(self, points: np.ndarray, spread: float = _INDUCED_SPREAD + 0.05) -> np.ndarray:
        return self.rho(points[:, 0], points[:, 1]) < spread


def _draw_nucleus(rng: np.random.Generator, cy: float, cx: float, radius: float, level: float) -> _Nucleus:
    aspect = math.exp(rng.uniform(0.0, 0.25))
    n_harm = 3
    harmonics = np.stack(
        [np.arange(2, 2 + n_harm), rng.normal(0, 0.025, n_harm), rng.uniform(0, 2 * math.pi, n_harm)], axis=1
    )
    return _Nucleus(
        cy=cy, cx=cx, a=radius * math.sqrt(aspect), b=radius / math.sqrt(aspect),
        theta=rng.uniform(0, math.pi), harmonics=harmonics, level=level, edge=rng.uniform(2.0, 5.0),
    )


def _draw_foci(
    rng: np.random.Generator, nucleus: _Nucleus, law: FociLaw, n_tracks: int, aligned: bool
) -> list[tuple[float, float, float, float, float, float]]:
    """Foci as (y, x, sigma_y, sigma_x, angle, amplitude x level), with satellites for clustered damage."""
    foci = []
    if n_tracks <= 0:
        return foci
    # keep foci clear of the nucleus edge (no focus light on the background), with the same margin for every
    # kind of focus, so where foci sit says nothing about the class
    spread = float(np.clip(1.0 - 4.0 * FE_LAW.sigma / min(nucleus.a, nucleus.b), 0.3, _INDUCED_SPREAD))
    starts = nucleus.sample_points(rng, n_tracks, spread)
    for start in starts:
        sigma = law.sigma * math.exp(rng.normal(0, 0.15))
        amplitude = law.amplitude * math.exp(rng.normal(0, 0.22))
        centres = [start]
        n_extra = int(rng.poisson(law.foci_per_track)) if aligned else 0
        if n_extra:
            direction = rng.uniform(0, 2 * math.pi)
            step = np.array([math.sin(direction), math.cos(direction)])
            normal = np.array([step[1], -step[0]])
            for k in range(1, n_extra + 1):
                along = k * law.track_spacing * sigma * rng.uniform(0.8, 1.25)
                point = start + step * along + normal * rng.normal(0, 0.4 * sigma)
                centres.append(point)
            centres = [p for p in centres if nucleus.contains(p[None], spread + 0.03)[0]]
        for centre in centres:
            s = sigma * math.exp(rng.normal(0, 0.1))
            elong = math.exp(rng.normal(0, 0.15))
            amp = amplitude * math.exp(rng.normal(0, 0.12))
            foci.append((centre[0], centre[1], s * elong, s / elong, rng.uniform(0, math.pi), amp))
            for _ in range(int(rng.poisson(law.satellites))):
                offset = rng.normal(0, 0.9 * s, 2)
                foci.append((centre[0] + offset[0], centre[1] + offset[1], 0.6 * s, 0.6 * s, 0.0, 0.55 * amp))
    return foci


def _render_foci(shape: tuple[int, int], foci, level: float) -> np.ndarray:
    """Sum of anisotropic Gaussians, each drawn in a local window (fast for tens of foci)."""
    out = np.zeros(shape, dtype=np.float32)
    height, width = shape
    for y, x, sy, sx, angle, amp in foci:
        half = int(math.ceil(_FOCUS_EXTENT * max(sy, sx))) + 1
        y0, y1 = max(0, int(y) - half), min(height, int(y) + half + 2)
        x0, x1 = max(0, int(x) - half), min(width, int(x) + half + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - x
        c, s = math.cos(angle), math.sin(angle)
        u, v = dx * c + dy * s, -dx * s + dy * c
        gaussian = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
        # a Gaussian lowered to end at _FOCUS_EXTENT sigma: same look, compact support
        out[y0:y1, x0:x1] += np.float32(amp * level / (1 - _FOCUS_FLOOR)) * np.maximum(gaussian - _FOCUS_FLOOR, 0)
    return out


@dataclass(frozen=True)
class PlateLook:
    """How one plate's acquisition departs from the nominal one; all zeros (the default) is no confound.

    `synthetic.py` adds a branch-wide part (campaign_effect) and an independent per-plate part (plate_effect).
    """

    brightness: float = 0.0  # log-gain of every nucleus' brightness
    background: float = 0.0  # camera offset shift, grey levels
    haze: float = 0.0  # log-factor of the out-of-focus glow
    defocus: float = 0.0  # optical blur of the specimen, Gaussian sigma in px (>= 0)
    noise: float = 0.0  # log-factor of the camera noise

    def __add__(self, other: PlateLook) -> PlateLook:
        return PlateLook(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, factors) -> PlateLook:
        """Every dimension times `factors` (one number, or one per dimension in field order)."""
        factors = np.broadcast_to(np.asarray(factors, dtype=float), (len(fields(self)),))
        return PlateLook(*(getattr(self, f.name) * float(k) for f, k in zip(fields(self), factors)))


@dataclass(frozen=True)
class _Acquisition:
    """Camera settings of one field of view, shifted per plate by its look."""

    offset: float  # camera offset, grey levels
    haze_fraction: float  # out-of-focus glow, as a fraction of the nuclei's light
    gain: float  # multiplies every nucleus' brightness
    defocus: float  # optical blur sigma, px (0 = in focus)
    noise_factor: float  # multiplies the camera noise


def _draw_acquisition(rng: np.random.Generator, field_rng: np.random.Generator, look: PlateLook) -> _Acquisition:
    """Offset and haze come mostly from the field's stream: crops of one camera frame look alike."""
    offset = float(np.clip(field_rng.uniform(300, 470) + look.background + rng.normal(0, 6), 200, 900))
    haze_fraction = 0.30 * math.exp(field_rng.normal(0, 0.2) + look.haze)
    return _Acquisition(offset=offset, haze_fraction=haze_fraction, gain=math.exp(look.brightness),
                        defocus=max(0.0, look.defocus), noise_factor=math.exp(look.noise))


def _crop_size(rng: np.random.Generator, config: SyntheticConfig) -> tuple[int, int]:
    """(height, width): near-square crops between min_size and max_size, the same law for every class."""
    span = config.max_size - config.min_size
    height = int(round(config.min_size + span * rng.beta(2.2, 2.2)))
    width = int(np.clip(round(height * math.exp(rng.normal(0, 0.08))), config.min_size, config.max_size))
    return height, width


def _nucleus_level(rng: np.random.Generator, gain: float) -> float:
    """Mean brightness of a nucleus above background; the same law for the central nucleus and its neighbours."""
    return 470.0 * gain * math.exp(rng.normal(0, 0.22))


def _central_nucleus(rng: np.random.Generator, height: int, width: int, gain: float) -> _Nucleus:
    """The nucleus the crop is centred on, shrunk where needed so that its rotated ellipse stays inside the crop."""
    level = _nucleus_level(rng, gain)
    radius = min(height, width) * rng.uniform(0.30, 0.36)
    central = _draw_nucleus(rng, height / 2 + rng.normal(0, 3), width / 2 + rng.normal(0, 3), radius, level)
    c, s = math.cos(central.theta), math.sin(central.theta)
    half_y = math.hypot(central.a * s, central.b * c) * 1.06 + central.edge
    half_x = math.hypot(central.a * c, central.b * s) * 1.06 + central.edge
    fit = min(1.0, (height / 2 - 3) / half_y, (width / 2 - 3) / half_x)
    central.a *= fit
    central.b *= fit
    return central


def _draw_neighbour(rng: np.random.Generator, central: _Nucleus, height: int, width: int, gain: float) -> _Nucleus:
    """A nucleus just beyond the central one's boundary, in a random direction (so usually cut by the crop edge)."""
    direction = rng.uniform(0, 2 * math.pi)
    radius = min(height, width) * rng.uniform(0.28, 0.40)
    reach = central.rho(
        np.float32(central.cy + math.sin(direction)), np.float32(central.cx + math.cos(direction))
    )  # rho one px out -> local radius
    local_radius = 1.0 / max(float(reach), 1e-3)
    distance = local_radius + radius + rng.uniform(4, 16)
    cy, cx = central.cy + distance * math.sin(direction), central.cx + distance * math.cos(direction)
    level = _nucleus_level(rng, gain)
    return _draw_nucleus(rng, cy, cx, radius, level)


def _render_neighbours(rng: np.random.Generator, central: _Nucleus, yy: np.ndarray, xx: np.ndarray, gain: float):
    """(intensity, inside-mask, foci) of 0-3 neighbouring nuclei; they carry only endogenous foci, never the class."""
    height, width = yy.shape
    neighbours = np.zeros(yy.shape, dtype=np.float32)
    neighbour_mask = np.zeros(yy.shape, dtype=bool)
    neighbour_foci = []
    for _ in range(int(rng.choice(4, p=[0.15, 0.35, 0.35, 0.15]))):
        other = _draw_neighbour(rng, central, height, width, gain)
        other_body, other_inside = other.render(yy, xx)
        neighbours += other_body
        neighbour_mask |= other_inside
        n_bg = int(rng.poisson(BACKGROUND_FOCI_PER_NUCLEUS * other.a * other.b * math.pi / _REFERENCE_AREA))
        neighbour_foci.append(_render_foci(yy.shape, _draw_foci(rng, other, BACKGROUND_LAW, n_bg, False), other.level))
    return neighbours, neighbour_mask, sum(neighbour_foci) if neighbour_foci else 0.0


def _chromatin(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Texture factor of all nuclei: smooth mottling plus fine nucleoplasmic speckles (one field for all)."""
    height, width = shape
    texture = 1.0 + 0.10 * _smooth_noise(rng, shape, 5.0) + 0.06 * _smooth_noise(rng, shape, 1.5)
    np.clip(texture, 0.4, None, out=texture)
    speckles = np.zeros(shape, dtype=np.float32)
    n_speckles = int(rng.poisson(height * width / 110.0))
    sy, sx = rng.integers(0, height, n_speckles), rng.integers(0, width, n_speckles)
    np.add.at(speckles, (sy, sx), rng.uniform(0.0, 1.0, n_speckles).astype(np.float32))
    speckles = cv2.GaussianBlur(speckles, (0, 0), 0.9) * np.float32(2 * math.pi * 0.81 * 0.3)
    return texture + speckles


def _central_foci(rng: np.random.Generator, central: _Nucleus, particle: str, dose_Gy: float, hours: int,
                  config: SyntheticConfig) -> list:
    """Foci of the central nucleus: endogenous (all images) + radiation-induced (the class signal)."""
    area_factor = central.a * central.b * math.pi / _REFERENCE_AREA
    foci = _draw_foci(rng, central, BACKGROUND_LAW, int(rng.poisson(BACKGROUND_FOCI_PER_NUCLEUS * area_factor)), False)
    if dose_Gy > 0:
        law = foci_law(particle, config.difficulty)
        n_tracks = int(rng.poisson(tracks_per_nucleus(particle, dose_Gy, hours, config.difficulty) * area_factor))
        n_tracks = max(n_tracks, config.min_induced_foci)
        foci += _draw_foci(rng, central, law, n_tracks, aligned=True)
    return foci


def _camera_image(rng: np.random.Generator, clean: np.ndarray, nuclei: np.ndarray, acquisition: _Acquisition):
    """What the camera records of `clean`: out-of-focus glow around the `nuclei`, noise, optical blur, offset."""
    haze = _wide_blur(nuclei, 16.0) * np.float32(acquisition.haze_fraction)
    clean = clean + haze + np.float32(8.0)
    if acquisition.defocus > 0.05:  # a plate imaged out of focus: the specimen's light spreads before the camera
        clean = cv2.GaussianBlur(clean, (0, 0), acquisition.defocus, borderType=cv2.BORDER_REFLECT)
    # shot noise (4 grey levels per photon) + read noise, as one Gaussian (>= tens of photons where it matters)
    sigma = np.sqrt(clean * np.float32(4.0) + np.float32(22.0**2))
    if acquisition.noise_factor != 1.0:
        sigma *= np.float32(acquisition.noise_factor)
    noisy = clean + sigma * rng.standard_normal(clean.shape, np.float32)
    noisy = cv2.GaussianBlur(noisy, (0, 0), 0.45)
    return np.clip(np.rint(noisy + acquisition.offset), 1, 65535).astype(np.uint16)


def _ground_truth_mask(inside: np.ndarray, neighbour_mask: np.ndarray, focus_pixels: np.ndarray) -> np.ndarray:
    """0 background, 1 central nucleus, 2 its foci, 3 neighbouring nuclei (the central nucleus wins overlaps)."""
    mask = np.zeros(inside.shape, dtype=np.uint8)
    mask[neighbour_mask & ~inside] = MASK_NEIGHBOUR
    mask[inside] = MASK_NUCLEUS
    mask[inside & focus_pixels] = MASK_FOCI
    return mask


def render_image(spec_index: int, seed: int, particle: str, dose_Gy: float, hours: int, look: PlateLook,
                 field_seed: int, config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """One crop: (uint16 image, uint8 mask). Pure function of its arguments.

    The steps draw from the image's stream in this fixed order; reordering them changes every image
    (then bump GENERATOR_VERSION).
    """
    rng = random_stream(seed, 1, spec_index)
    acquisition = _draw_acquisition(rng, random_stream(seed, 2, field_seed), look)
    height, width = _crop_size(rng, config)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    central = _central_nucleus(rng, height, width, acquisition.gain)
    body, inside = central.render(yy, xx)
    neighbours, neighbour_mask, neighbour_foci_signal = _render_neighbours(rng, central, yy, xx, acquisition.gain)
    specimen = (body + neighbours) * _chromatin(rng, body.shape)
    foci_signal = _render_foci(body.shape, _central_foci(rng, central, particle, dose_Gy, hours, config), central.level)
    clean = specimen + foci_signal + neighbour_foci_signal
    image = _camera_image(rng, clean, body + neighbours, acquisition)
    return image, _ground_truth_mask(inside, neighbour_mask, foci_signal > _MASK_THRESHOLD * central.level)
