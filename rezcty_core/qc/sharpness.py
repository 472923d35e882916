"""Sharpness: Gaussian blur and motion blur of the strongest step edges (in pixels of the image as given).

* `blur_sigma_px`: Gaussian blur sigma of the strongest step edges (gradient ratio at two smoothing
  scales, so noise does not read as detail; a third scale drops texture and lines); None when the image
  has no step edges (a smooth gradient cannot be "out of focus"); `motion_blur_px`: the same per edge
  orientation (4 bins), the softest orientation (motion blur and camera shake smear one direction only)
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from rezcty_core.qc.pixels import STAT_SAMPLES, sample_step

BLUR_SCALES = (1.5, 3.0, 6.0)  # smoothing scales (px): two give an edge's blur sigma, the third checks it is a step
EDGE_MIN_GRADIENT = 0.5  # levels/px at the middle scale: a 15-level step blurred to sigma 5 still counts
STEP_TOLERANCE = 0.15  # |log| gap allowed between the widest-scale gradient and a blurred step's prediction
SHARP_TOP_FRACTION, SHARP_TOP_MIN = 0.05, 200  # judge the strongest 5 % of step edges (at least 200 px) ...
SHARP_PERCENTILE = 10  # ... by the sigma that their sharpest 10 % reach: some strong edges must be in focus
MOTION_MIN_EDGES = 100  # step edges an orientation needs before its own sharpness counts for motion blur


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


def measure_blur_any(rgb: np.ndarray, luma: np.ndarray) -> dict:
    """Blur on the luma; where the luma has no step edges (shapes of one brightness in other hues), on the
    colour channel with the widest spread instead."""
    found = measure_blur(luma)
    if found["blur_sigma_px"] is None and min(luma.shape) >= 16:
        step = sample_step(luma.size, STAT_SAMPLES)
        sample = rgb[::step, ::step].reshape(-1, 3)
        channel = int(np.argmax(sample.max(axis=0).astype(np.int16) - sample.min(axis=0)))
        other = measure_blur(rgb[..., channel].astype(np.float32))
        if other["blur_sigma_px"] is not None:
            found = {**other, "blur_channel": "RGB"[channel]}
    return found
