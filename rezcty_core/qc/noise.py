"""Noise: luma grain in the flattest blocks, told apart from fine texture (8-bit levels).

* `noise_sigma`: luma noise std (Immerkaer residual) in the flattest blocks, discounted when the residual does
  not halve at half resolution (fine texture such as grass, not grain); `noise_scale_ratio` is that test
"""
from __future__ import annotations

import math

import numpy as np

_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)  # the kernel that _immerkaer() applies, written out
NOISE_BLOCK_PERCENTILE = 10  # flattest 10 % of 16x16 blocks
NOISE_WHITE_RATIO = 0.65  # half-resolution / full-resolution residual up to which the grain counts in full as noise
NOISE_TEXTURE_MIN = 0.5  # below this raw sigma the texture test is skipped (nothing to discount)


def _immerkaer(x: np.ndarray) -> np.ndarray:
    """|Laplacian-difference| response (Immerkaer 1996) on the interior; removes ramps, keeps noise."""
    c = x[1:-1, 1:-1]
    edges = x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]
    corners = x[:-2, :-2] + x[:-2, 2:] + x[2:, :-2] + x[2:, 2:]
    return np.abs(4 * c - 2 * edges + corners)


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
