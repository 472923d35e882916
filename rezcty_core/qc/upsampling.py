"""Plain-upscale detection: is there any detail above 1/2, 1/3 or 1/4 of Nyquist, anywhere in the frame?

An interpolated enlargement by a factor k (Lanczos, bicubic, bilinear) holds no detail above 1/k of the
Nyquist frequency: the interpolation kernel removes the spectral images above its cutoff, and what is left there
is the 8-bit rounding of the enlarged pixels (white, of a known power) plus the kernel's small leaks. Native
photos, renders with sharp edges and model upscales (Real-ESRGAN invents the missing detail) have regions whose
spectrum goes on well above that floor.

Measurement: the luma's power spectrum on up to TILES_MAX Hann-windowed 128 px tiles spread over the frame. For
each factor k, per tile:
* `content`: the power just below the cutoff (BELOW x 1/k of Nyquist), in dB over the rounding floor: the detail
  an enlargement would have had to lose. Tiles under CONTENT_MIN_DB (sky, flat fills, smooth gradients) are not
  judged: an image without such tiles has nothing to judge for that k (None).
* `detail`: the power in HIGH_BANDS[k], above 1.4x the cutoff and clear of the spectral images an integer
  enlargement leaves around multiples of 2/k of Nyquist (and of the 8x8 JPEG block lines), in dB over the same
  floor. The floor is computed, not estimated: the variance of rounding to 8 bits (1/12 per channel) through the
  luma weights (1/12 for a grey image), times the window's energy, so a detailed image cannot take its own
  detail for the floor.
`upsample_detail_db_xK` = the DETAIL_RANK-th highest `detail` among the judged tiles: one natively sharp region
(an edge, a texture, grain) is enough to be native, a single odd tile is not. `upsample_detail_db` = the lowest
over k (the profile rejects under its `min`), `upsample_factor` = among the k whose detail is under
FACTOR_MAX_DB, the one with the steepest cliff (median content below the cutoff over the detail above). Measured (bench/qc_sees_calibration.py, docs/qc.md): native photos 13.3 dB and up, clean renders
8.5 and up, Real-ESRGAN x4 outputs 13.4 and up; Lanczos x4 5.6 at most.
"""
from __future__ import annotations

import numpy as np
from scipy import fft as _fft

FACTORS = (2, 3, 4)
TILE = 128  # tile side (px); frequency resolution 1/64 of Nyquist
TILES_MAX = 64  # tiles read (spread over the frame)
MIN_SIDE = 256  # smaller images are not measured (a few tiles of a thumbnail say little)
# Nyquist units: above 1.4x the cutoff 1/k, and away from the spectral images at 2/k (k = 3: 0.67; k = 4: 0.5)
HIGH_BANDS = {2: ((0.70, 0.90),), 3: ((0.47, 0.58), (0.76, 0.92)), 4: ((0.36, 0.44), (0.58, 0.88))}
BELOW = (0.55, 0.90)  # fraction of the cutoff: the content band just below it
CONTENT_MIN_DB = 20.0  # a tile is judged when its content band is at least this far over the floor
TILES_MIN = 3  # ... and at least this many tiles must be judged (else that factor is None)
DETAIL_RANK = 2  # the 2nd-highest judged tile decides
FACTOR_MAX_DB = 7.0  # upsample_factor names a k whose detail is under this (the profile's default limit)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _tiles(luma: np.ndarray, size: int, limit: int) -> np.ndarray:
    h, w = luma.shape
    ny, nx = h // size, w // size
    if ny * nx < limit:  # a small frame: tiles overlapping by half, so a sharp edge falls inside one
        ny, nx = max(1, 2 * ny - 1), max(1, 2 * nx - 1)
    ys = np.linspace(0, h - size, ny).astype(int) if ny > 1 else np.array([(h - size) // 2])
    xs = np.linspace(0, w - size, nx).astype(int) if nx > 1 else np.array([(w - size) // 2])
    coords = [(y, x) for y in ys for x in xs]
    if len(coords) > limit:
        coords = [coords[i] for i in np.linspace(0, len(coords) - 1, limit).astype(int)]
    return np.stack([luma[y:y + size, x:x + size] for y, x in coords])


def tile_spectra(luma: np.ndarray, size: int = TILE, limit: int = TILES_MAX) -> np.ndarray:
    """Power spectra (rfft2) of Hann-windowed, mean-removed tiles spread over the frame: (n, size, size//2+1)."""
    tiles = _tiles(np.asarray(luma, dtype=np.float32), size, limit)
    tiles = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    win = np.hanning(size).astype(np.float32)
    spec = _fft.rfft2(tiles * np.outer(win, win)[None])  # scipy keeps float32 (numpy's goes to float64)
    return spec.real ** 2 + spec.imag ** 2


def _band_grid(size: int) -> np.ndarray:
    """Chebyshev frequency max(|fx|, |fy|) of each rfft2 bin, in units of Nyquist (0..1): a separable resize
    cuts |fx| and |fy| on their own, so its empty region is the outside of a square."""
    fy = np.abs(np.fft.fftfreq(size)) * 2.0
    fx = np.fft.rfftfreq(size) * 2.0
    return np.maximum(fy[:, None], fx[None, :])


def _jpeg_lines(size: int) -> np.ndarray:
    """True on the bins next to the lines |fx| or |fy| = m/8 cycles/px where the 8x8 JPEG block edges put
    their power (an enlargement saved as a JPEG would otherwise seem to have detail above its cutoff)."""
    fy = np.abs(np.fft.fftfreq(size)) * 8.0
    fx = np.fft.rfftfreq(size) * 8.0
    near_y = (np.abs(fy - np.round(fy)) * size / 8.0 <= 1.01) & (np.round(fy) >= 1)
    near_x = (np.abs(fx - np.round(fx)) * size / 8.0 <= 1.01) & (np.round(fx) >= 1)
    return near_y[:, None] | near_x[None, :]


def rounding_floor(rgb_or_luma: np.ndarray, size: int) -> float:
    """Power per bin of 8-bit rounding noise in a Hann-windowed tile of the luma: 1/12 per channel through the
    luma weights (independent per channel), 1/12 for a grey image (one rounding)."""
    arr = np.asarray(rgb_or_luma)
    grey = arr.ndim == 2 or bool(np.array_equal(arr[::7, ::7, 0], arr[::7, ::7, 1]) and
                                 np.array_equal(arr[::7, ::7, 1], arr[::7, ::7, 2]))
    var = 1.0 / 12.0 if grey else float((LUMA.astype(np.float64) ** 2).sum()) / 12.0
    return var * float((np.hanning(size) ** 2).sum()) ** 2


# The factor. The detail bands above overlap (k = 3 and 4 also read 0.7-0.9 of Nyquist, the only band clear of
# every kernel's leaks), so they say "enlarged" but not by how much. The factor is the k whose cutoff the
# spectrum falls hardest across: the power at 1.4-1.8x the cutoff against what the two bands below predict
# (their log-log slope continued), over the floor, in the most detailed quarter of the tiles.
SHORT_LOW = ((0.45, 0.7), (0.7, 0.95))  # fractions of the cutoff
SHORT_HIGH = (1.4, 1.8)
SHORT_SLOPE_MAX = 6.0


def shortfall_by_factor(spectra: np.ndarray, grid: np.ndarray, keep: np.ndarray, floor: float) -> dict[int, float]:
    """dB by which the power just above each cutoff 1/k falls short of the bands below it (most detailed tiles)."""
    mid = spectra[:, (grid >= 0.1) & (grid < 0.5)].mean(axis=1)
    detailed = spectra[np.argsort(-mid)[:max(min(4, len(mid)), len(mid) // 4)]].mean(axis=0)
    out = {}
    for k in FACTORS:
        cut = 1.0 / k
        edges = [(a * cut, b * cut) for a, b in SHORT_LOW] + [(SHORT_HIGH[0] * cut, min(SHORT_HIGH[1] * cut, 0.95))]
        masks = [(grid >= a) & (grid < b) & keep for a, b in edges]
        if not all(mk.any() for mk in masks):
            continue
        p1, p2, p3 = (float(detailed[mk].mean()) - floor for mk in masks)
        if p1 <= 0 or p2 <= 0:
            continue
        centres = [(a * b) ** 0.5 for a, b in edges]
        slope = min(max(np.log(p2 / p1) / np.log(centres[1] / centres[0]), -SHORT_SLOPE_MAX), 0.0)
        predicted = p2 * (centres[2] / centres[1]) ** slope
        out[k] = float(10.0 * np.log10(predicted / max(p3, 0.25 * floor)))
    return out


def measure_upsampling(rgb: np.ndarray, luma: np.ndarray | None = None) -> dict:
    """`upsample_detail_db`: the lowest over k = 2, 3, 4 of `upsample_detail_db_xK` (dB of detail above 1/k of
    Nyquist over the rounding floor, in the most detailed tiles; see the module docstring); `upsample_factor`:
    the k the spectrum falls hardest across (`shortfall_by_factor`). None where nothing can be judged."""
    arr = np.asarray(rgb)
    if luma is None:
        luma = arr.astype(np.float32) @ LUMA if arr.ndim == 3 else arr.astype(np.float32)
    h, w = luma.shape[:2]
    out: dict = {"upsample_detail_db": None, "upsample_factor": None}
    if min(h, w) < MIN_SIDE:
        return out
    size = TILE if min(h, w) >= TILE else MIN_SIDE
    spectra = tile_spectra(luma, size)
    floor = rounding_floor(arr, size)
    grid, keep = _band_grid(size), ~_jpeg_lines(size)
    judged: dict[int, float] = {}
    for k in FACTORS:
        cut = 1.0 / k
        high = np.zeros_like(keep)
        for a, b in HIGH_BANDS[k]:
            high |= (grid >= a) & (grid < b)
        high &= keep
        low = (grid >= BELOW[0] * cut) & (grid < BELOW[1] * cut) & keep
        with np.errstate(divide="ignore"):
            content = 10.0 * np.log10(spectra[:, low].mean(axis=1) / floor)
            detail = 10.0 * np.log10(np.maximum(spectra[:, high].mean(axis=1), 1e-6 * floor) / floor)
        sel = content >= CONTENT_MIN_DB
        if int(sel.sum()) < min(TILES_MIN, len(spectra)) or not sel.any():
            out[f"upsample_detail_db_x{k}"] = None
            continue
        ranked = np.sort(detail[sel])[::-1]
        judged[k] = float(ranked[min(DETAIL_RANK, len(ranked)) - 1])
        out[f"upsample_detail_db_x{k}"] = round(judged[k], 2)
    if judged:
        out["upsample_detail_db"] = round(min(judged.values()), 2)
        if min(judged.values()) < FACTOR_MAX_DB:  # which k: the high bands overlap, the shortfall tells
            shortfall = shortfall_by_factor(spectra, grid, keep, floor)
            out["upsample_factor"] = max(shortfall, key=shortfall.get) if shortfall else min(judged)
    return out
