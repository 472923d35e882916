"""Plain-upscale detection: is the image's spectrum empty above 1/2, 1/3 or 1/4 of Nyquist?

An interpolated enlargement by a factor k (Lanczos, bicubic, bilinear) holds no detail above 1/k of the
Nyquist frequency: the interpolation kernel removes the spectral images above its cutoff. Native photos,
renders with sharp edges and model upscales (Real-ESRGAN invents the missing detail) keep a spectrum that
goes on falling smoothly past that frequency.

Measurement: the luma's power spectrum on up to TILES_MAX windowed 128 px tiles. Bands are squares in
frequency (a separable resize cuts |fx| and |fy| on their own), in units of Nyquist, with the lines where
8x8 JPEG blocks put their power left out. For each factor k the power just above the cutoff 1/k
(1.4-1.8x it) is compared with what the two bands below it predict (their log-log slope continued across
the cutoff), all above the white floor (8-bit rounding, grain) that fills what interpolation left empty.
Two readings: pooled over the most detailed quarter of the tiles (strong, but a render whose textures
are band-limited by construction reads like an upscale), and per tile, where the 25th percentile of the
tiles with detail to lose is taken (one natively sharp region is enough). `upsample_missing_db_xK` =
min(pooled, per tile + TILE_OFFSET); `upsample_missing_db` the largest over k, `upsample_factor` its k
(None below UPSAMPLE_MIN_DB). Measured figures: bench/qc_sees_calibration.py, docs/qc.md.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import fft as _fft

FACTORS = (2, 3, 4)
TILE = 128  # tile side (px); frequency resolution 1/64 of Nyquist
TILES_MAX = 64  # tiles averaged (spread over the frame)
LOW_BANDS = ((0.45, 0.7), (0.7, 0.95))  # fractions of the cutoff 1/k: the two bands below it
HIGH_BAND = (1.4, 1.8)  # fraction of the cutoff: the band just above it (clamped to Nyquist)
UPSAMPLE_MIN_DB = 6.0  # a shortfall under this is not reported as a factor
MIN_SIDE = 64  # smaller images are not measured
DETAIL_SHARE, DETAIL_MIN_TILES = 0.25, 4  # the pooled reading: the most detailed quarter of the tiles
TILE_OFFSET = 5.0  # dB: the per-tile reading + this caps the pooled one
TAIL_BAND = (0.58, 0.88)  # reported only: power far above a 4x cutoff, between its spectral images
TILE_MIN_EXCESS = 10.0  # a tile counts when the bands below predict at least 3x the floor above the cutoff
TILES_MIN = 3  # ... and at least this many tiles (or all there are) must count
TILE_PERCENTILE = 25  # the shortfall read at this percentile of those tiles: one sharp region is native
SLOPE_MAX = 6.0  # steepest log-log fall (power per octave / 3 dB) the bands below may predict
ABOVE_MIN = 0.25  # power above the cutoff counted as at least this share of the floor (bounds the dB)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _tiles(luma: np.ndarray, size: int, limit: int) -> np.ndarray:
    h, w = luma.shape
    ny, nx = h // size, w // size
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


def power_spectrum(luma: np.ndarray, size: int = TILE, limit: int = TILES_MAX) -> np.ndarray:
    """Mean power spectrum of the tiles (Welch)."""
    return tile_spectra(luma, size, limit).mean(axis=0)




def detailed_spectrum(spectra: np.ndarray, size: int) -> np.ndarray:
    """Mean spectrum of the DETAIL_SHARE of tiles with the most power between 1/10 and 1/2 of Nyquist
    (an edge or texture, not sky): there the detail an enlargement lacks would show most."""
    c = _band_grid(size)
    mid = spectra[:, (c >= 0.1) & (c < 0.5)].mean(axis=1)
    n = max(min(DETAIL_MIN_TILES, len(mid)), int(round(DETAIL_SHARE * len(mid))))
    return spectra[np.argsort(-mid)[:n]].mean(axis=0)


def _band_grid(size: int) -> np.ndarray:
    """Chebyshev frequency max(|fx|, |fy|) of each rfft2 bin, in units of Nyquist (0..1)."""
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


def band_powers(power: np.ndarray, size: int, edges: list[tuple[float, float]]) -> list[float]:
    """Mean power in each square band [a, b) of Chebyshev frequency (Nyquist units), JPEG lines left out."""
    c = _band_grid(size)
    keep = ~_jpeg_lines(size)
    out = []
    for a, b in edges:
        sel = (c >= a) & (c < b) & keep
        out.append(float(power[sel].mean()) if sel.any() else float("nan"))
    return out


def noise_floor(rgb_or_luma: np.ndarray, power: np.ndarray, size: int) -> float:
    """White floor of the spectrum: the top band's power, at most 1.5x what 8-bit rounding alone adds (an
    image with real detail up to Nyquist would otherwise take its detail for the floor)."""
    arr = np.asarray(rgb_or_luma)
    grey = arr.ndim == 2 or bool(np.array_equal(arr[::7, ::7, 0], arr[::7, ::7, 1]) and
                                 np.array_equal(arr[::7, ::7, 1], arr[::7, ::7, 2]))
    var = 1.0 / 12.0 if grey else float((LUMA ** 2).sum()) / 12.0
    win = float((np.hanning(size) ** 2).sum()) ** 2
    top = float(np.median(power[_band_grid(size) > 0.9]))
    return max(min(top, 1.5 * var * win), 0.25 * var * win)  # never 0 (an all-black frame)


def measure_upsampling(rgb: np.ndarray, luma: np.ndarray | None = None) -> dict:
    """`upsample_missing_db`: how far (dB) the detail above a cutoff 1/k of Nyquist falls short of what the
    bands below predict, the largest over k = 2, 3, 4; `upsample_factor`: that k when the shortfall reaches
    UPSAMPLE_MIN_DB; `upsample_missing_db_x2/x3/x4` each. None on images under MIN_SIDE px."""
    arr = np.asarray(rgb)
    if luma is None:
        luma = arr.astype(np.float32) @ LUMA if arr.ndim == 3 else arr.astype(np.float32)
    h, w = luma.shape[:2]
    out: dict = {"upsample_missing_db": None, "upsample_factor": None}
    if min(h, w) < MIN_SIDE:
        return out
    size = TILE if min(h, w) >= TILE else MIN_SIDE
    spectra = tile_spectra(luma, size)
    floor = noise_floor(arr, spectra.mean(axis=0), size)
    grid, keep = _band_grid(size), ~_jpeg_lines(size)
    detailed = detailed_spectrum(spectra, size)
    # far above a 4x cutoff, between its spectral images (0.5, 1.0 of Nyquist), an enlargement sits at the floor
    # (reported; band-limited render textures sit there too, so it decides nothing)
    tail = float(detailed[(grid >= TAIL_BAND[0]) & (grid < TAIL_BAND[1]) & keep].mean())
    out["upsample_tail_db"] = round(10.0 * math.log10(max(tail, 1e-12) / floor), 2)
    best, best_k = -math.inf, None
    for k in FACTORS:
        cut = 1.0 / k
        edges = [(a * cut, b * cut) for a, b in LOW_BANDS] + [(HIGH_BAND[0] * cut, min(HIGH_BAND[1] * cut, 0.95))]
        masks = [(grid >= a) & (grid < b) & keep for a, b in edges]
        if not all(mk.any() for mk in masks):
            continue
        pooled = detailed[None]  # the pooled detailed tiles as one more "tile"
        both = np.concatenate([spectra, pooled])
        p1, p2, p3 = (both[:, mk].mean(axis=1) - floor for mk in masks)  # per tile, above the floor
        centres = [math.sqrt(a * b) for a, b in edges]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.clip(np.log(p2 / p1) / math.log(centres[1] / centres[0]), -SLOPE_MAX, 0.0)
            predicted = p2 * (centres[2] / centres[1]) ** slope
            short = 10.0 * np.log10(predicted / np.maximum(p3, ABOVE_MIN * floor))
        if not (p1[-1] > 0 and p2[-1] > 0 and math.isfinite(short[-1])):
            continue
        pooled_db = float(short[-1])
        seen = (p1[:-1] > 0) & (p2[:-1] > 0) & np.isfinite(short[:-1]) & (predicted[:-1] >= TILE_MIN_EXCESS * floor)
        # one natively sharp region is enough to be native: a low percentile of the tiles with detail to lose
        tile_db = float(np.percentile(short[:-1][seen], TILE_PERCENTILE)) if int(seen.sum()) >= TILES_MIN else None
        missing = pooled_db if tile_db is None else min(pooled_db, tile_db + TILE_OFFSET)
        out[f"upsample_pooled_db_x{k}"] = round(pooled_db, 2)
        out[f"upsample_tile_db_x{k}"] = None if tile_db is None else round(tile_db, 2)
        out[f"upsample_missing_db_x{k}"] = round(missing, 2)
        if missing > best:
            best, best_k = missing, k
    if best_k is not None:
        out["upsample_missing_db"] = round(best, 2)
        out["upsample_factor"] = best_k if best >= UPSAMPLE_MIN_DB else None
    return out
