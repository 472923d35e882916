"""Tone: exposure, contrast, colour and banding (8-bit levels of the image as given).

* exposure: `mean_luma`, `highlight_clip_pct` (pixels blown to white), `shadow_clip_pct` (crushed to black),
  per-channel clipping `clip_high_pct_rgb` / `clip_low_pct_rgb`
* contrast: `dynamic_range` (luma p99 - p1), `channel_range` (the widest R, G or B p99 - p1: a colourful
  gradient of one brightness is not flat), `rms_contrast`
* colour: `color_cast` (grey-world mean chroma offset, YCbCr), `saturated_pct` (HSV saturation > 0.9),
  `colourfulness` (Hasler-Suesstrunk M; above ~110 reads as "extremely colourful"), `colour_clip_pct`
  (strong colours with a channel pinned at 255, or at 0 in a bright pixel, outside flat fills: saturation
  pushed past the gamut)
* banding: `banding_ratio` (share of isolated plateau steps that jump >= 2 levels), `banding_edge_pct`
"""
from __future__ import annotations

import math

import numpy as np

from rezcty_core.qc.pixels import STAT_SAMPLES, sample_step

BANDING_SAMPLES = 1_000_000  # banding reads every n-th line so that about this many pixels are compared


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
    step = sample_step(rgb.shape[0] * rgb.shape[1], STAT_SAMPLES)  # global statistics: a sample is plenty
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


def measure_banding(rgb: np.ndarray) -> dict:
    """Posterised gradients: steps between flat plateaus (>= 3 px each side) that jump >= 2 levels."""
    step = sample_step(rgb.shape[0] * rgb.shape[1], BANDING_SAMPLES)
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
