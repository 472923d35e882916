"""Compression: JPEG block artefacts and the quality the image was last saved at.

* `jpeg_blockiness`: mean step across 8x8 block borders / mean step elsewhere (1.0 = none)
* `jpeg_quality`: the libjpeg-equivalent quality (1-100) the image was last saved at, estimated from the
  quantisation steps left in its 8x8 DCT coefficients; None when no quantisation is found (never a JPEG,
  or saved at about 90+)
"""
from __future__ import annotations

import math

import numpy as np

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
