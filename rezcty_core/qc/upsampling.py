"""Plain-upscale detection: is there any detail above 1/2, 1/3 or 1/4 of Nyquist that a plain enlargement
could not have left there?

An interpolated enlargement by an integer factor k (Lanczos, bicubic) holds above 1/k of Nyquist only what its
kernel lets through of the spectral images of the source, plus the 8-bit rounding of its pixels. Both are known:
the kernel's gain at each frequency is computed from the kernel itself, and the spectral image there is a copy of
the spectrum at the frequency it folds onto (f minus a multiple of 2/k), which the image shows. Native photos,
renders with sharp edges and model upscales (Real-ESRGAN invents the missing detail) have far more there. The
first version compared that band with the rounding floor alone: hard-edged content (lit windows, a fine checker
floor, flat-colour illustrations) leaks through a Lanczos or bicubic kernel well above that floor, and its
enlargements passed (issue 28).

Measurement: the luma's power spectrum on up to TILES_MAX Hann-windowed 128 px tiles spread over the frame. For
each factor k, per tile:
* `content`: the power just below the cutoff (BELOW x 1/k of Nyquist), in dB over the rounding floor: the detail
  an enlargement would have had to lose. Tiles under CONTENT_MIN_DB[k] (sky, flat fills, smooth gradients) are not
  judged: an image without such tiles has nothing to judge for that k (None).
* `detail`: the power in HIGH_BANDS[k] (above 1.4x the cutoff, clear of the spectral images' centres at
  multiples of 2/k of Nyquist and of the 8x8 JPEG block lines) in dB over what a plain enlargement by k would
  hold there: the rounding floor (computed: 1/12 per channel through the luma weights, times the window's
  energy; PIL rounds to 8 bits between its two passes too) plus, bin by bin, the kernel's gain times the power
  at the folded frequency. The lowest over the kernels modelled for k is kept (FACTOR_KERNELS: Lanczos-3 and Keys
  cubic a = -0.5 as PIL, a = -0.75 as torch, ComfyUI and OpenCV; Lanczos alone for k = 3, 4): "is this image
  explained by some plain enlargement?".
`upsample_detail_db_xK` = the DETAIL_RANK-th highest `detail` among the judged tiles: one natively sharp region
(an edge, a texture, grain) is enough to be native, a single odd tile is not. `upsample_detail_db` = the lowest
over k (the profile rejects under its `min`), `upsample_factor` = among the k whose detail is under
FACTOR_MAX_DB, the one with the steepest cliff (median content below the cutoff over the detail above).
Calibration (bench/qc_sees_calibration.py, docs/qc.md): native photos, clean renders, hard-edged scenes, flat
illustrations and Real-ESRGAN outputs against their Lanczos and bicubic x2, x3, x4 enlargements.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import fft as _fft

FACTORS = (2, 3, 4)
TILE = 128  # tile side (px); frequency resolution 1/64 of Nyquist
TILES_MAX = 64  # tiles read (spread over the frame)
MIN_SIDE = 256  # smaller images are not measured (a few tiles of a thumbnail say little)
# Nyquist units: above 1.4x the cutoff 1/k, away from the spectral images at 2/k (k = 3: 0.67; k = 4: 0.5); for k = 2
# under 0.86, where the a = -0.75 cubic leaks most (-32 dB at 0.9: a strong grating in a native render would predict a
# copy there that only an enlargement has)
HIGH_BANDS = {2: ((0.74, 0.86),), 3: ((0.47, 0.58), (0.76, 0.92)), 4: ((0.36, 0.44), (0.58, 0.88))}
BELOW = (0.55, 0.90)  # fraction of the cutoff: the content band just below it
# a tile is judged when its content band is at least this far over the floor; for k = 2 that band (0.28-0.45 of
# Nyquist) lies in a bicubic x2's passband droop (-1 to -4.5 dB), so 3 dB less
CONTENT_MIN_DB = {2: 17.0, 3: 20.0, 4: 20.0}
TILES_MIN = 3  # ... and at least this many tiles must be judged (else that factor is None)
DETAIL_RANK = 2  # the 2nd-highest judged tile decides
FACTOR_MAX_DB = 4.0  # upsample_factor names a k whose detail is under this (the profile's default limit)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def _keys_cubic(a: float):
    def kernel(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        near = (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        far = a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
        return np.where(x < 1, near, np.where(x < 2, far, 0.0))
    return kernel


# The plain enlargements modelled: kernel, support (input px), weights normalised per output pixel, 8-bit rounding
# between the horizontal and the vertical pass. PIL (ComfyUI's "lanczos", Pillow, most image tools) normalises and
# rounds; torch's bicubic (ComfyUI's "bicubic") and OpenCV's INTER_CUBIC use a = -0.75 in float.
KERNELS = {
    "lanczos3": (_lanczos3, 3.0, True, True),
    "cubic_a-0.5": (_keys_cubic(-0.5), 2.0, True, True),
    "cubic_a-0.75": (_keys_cubic(-0.75), 2.0, False, False),
}
# The kernels each factor's reading models. For k = 3 and 4 Lanczos only: the cubics' stopbands there are leakier
# (-40 to -50 dB) and read a smooth render texture crossed by a few sharp edges as an enlargement; a cubic x3 or x4
# enlargement empties the k = 2 band as well, where all three are modelled (bench/qc_sees_calibration.py).
FACTOR_KERNELS = {2: tuple(KERNELS), 3: ("lanczos3",), 4: ("lanczos3",)}


def kernel_gain(k: int, kernel: str, nu: np.ndarray) -> np.ndarray:
    """|H(nu)|^2 / k^2 of an enlargement by k with `kernel` (1 at DC), nu in units of the output's Nyquist: the
    DTFT of its impulse response on the output grid (output pixel centres at (n + 0.5) / k - 0.5 of the input)."""
    fn, support, normalise, _ = KERNELS[kernel]
    taps: dict[int, float] = {}
    for p in range(k):
        centre = (p + 0.5) / k - 0.5
        m = np.arange(int(np.floor(centre - support)) - 1, int(np.ceil(centre + support)) + 2)
        w = fn(centre - m)
        if normalise:
            w = w / w.sum()
        for mm, ww in zip(m, w):  # output k*q + p reads input q + mm: an impulse at input 0 reaches output p - k*mm
            taps[p - k * int(mm)] = taps.get(p - k * int(mm), 0.0) + float(ww)
    j = np.array(sorted(taps), dtype=np.float64)
    g = np.array([taps[int(i)] for i in j])
    nu = np.asarray(nu, dtype=np.float64)
    return (np.abs(np.exp(-1j * np.pi * np.outer(nu.ravel(), j)) @ g) ** 2).reshape(nu.shape) / k ** 2


def _fold(nu: np.ndarray, k: int) -> np.ndarray:
    """The frequency in the band |nu| <= 1/k that nu's spectral image is a copy of (period 2/k of Nyquist)."""
    period = 2.0 / k
    return nu - period * np.round(nu / period)


@functools.lru_cache(maxsize=16)
def _leak_model(k: int, size: int) -> tuple:
    """For the HIGH_BANDS[k] bins of a size x size rfft2 tile (JPEG lines left out): their flat indices, and per
    kernel (gain relative to the folded bin, rounding-floor factor, the folded bins' flat indices and weights)."""
    grid, keep = _band_grid(size), ~_jpeg_lines(size)
    high = np.zeros_like(keep)
    for a, b in HIGH_BANDS[k]:
        high |= (grid >= a) & (grid < b)
    high &= keep
    iy, ix = np.nonzero(high)
    fy = np.fft.fftfreq(size)[iy] * 2.0
    fx = np.fft.rfftfreq(size)[ix] * 2.0
    py, px = _fold(fy, k), _fold(fx, k)
    py, px = np.where(px < 0, -py, py), np.abs(px)  # a real image: P(fy, -fx) = P(-fy, fx)
    by, bx = (py / 2.0 * size) % size, px / 2.0 * size  # fractional bins (k = 3 folds between two)
    y0, x0 = np.floor(by).astype(int), np.floor(bx).astype(int)
    wy, wx = by - y0, bx - x0
    cols = size // 2 + 1
    idx = [((y0 + dy) % size) * cols + np.minimum(x0 + dx, cols - 1) for dy in (0, 1) for dx in (0, 1)]
    wts = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
    per_kernel = {}
    for name in FACTOR_KERNELS[k]:
        rounds_between = KERNELS[name][3]
        gy = kernel_gain(k, name, fy) / np.maximum(kernel_gain(k, name, _fold(fy, k)), 1e-12)
        gx = kernel_gain(k, name, fx) / np.maximum(kernel_gain(k, name, _fold(fx, k)), 1e-12)
        # PIL's 8-bit rounding after the horizontal pass, then enlarged vertically: k x the floor where fy passes
        floor_factor = 1.0 + (k * kernel_gain(k, name, fy) if rounds_between else np.zeros_like(fy))
        per_kernel[name] = (gy * gx, floor_factor, idx, wts)
    return iy * cols + ix, per_kernel


def leak_detail_db(spectra: np.ndarray, k: int, floor: float) -> dict[str, np.ndarray]:
    """Per tile and kernel: dB of the power in HIGH_BANDS[k] over what a plain enlargement by k with that kernel
    would hold there (rounding floor plus the kernel's gain times the power of the folded bins)."""
    n = len(spectra)
    flat = spectra.reshape(n, -1)
    high, per_kernel = _leak_model(k, spectra.shape[1])
    power = flat[:, high].sum(axis=1, dtype=np.float64)
    out = {}
    for name, (gain, floor_factor, idx, wts) in per_kernel.items():
        folded = sum(w[None] * flat[:, i] for i, w in zip(idx, wts))
        predicted = floor * floor_factor.sum() + (gain[None] * folded).sum(axis=1, dtype=np.float64)
        out[name] = 10.0 * np.log10(np.maximum(power, 1e-12) / predicted)
    return out


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
    Nyquist over what a plain enlargement by k would leave there, in the most detailed tiles; see the module
    docstring); `upsample_factor`:
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
        low = (grid >= BELOW[0] / k) & (grid < BELOW[1] / k) & keep
        with np.errstate(divide="ignore"):
            content = 10.0 * np.log10(spectra[:, low].mean(axis=1) / floor)
        sel = content >= CONTENT_MIN_DB[k]
        if int(sel.sum()) < min(TILES_MIN, len(spectra)) or not sel.any():
            out[f"upsample_detail_db_x{k}"] = None
            continue
        per_kernel = leak_detail_db(spectra[sel], k, floor)
        rank = min(DETAIL_RANK, int(sel.sum())) - 1
        by_kernel = {name: float(np.sort(d)[::-1][rank]) for name, d in per_kernel.items()}
        judged[k] = min(by_kernel.values())  # the plain enlargement that explains the image best
        out[f"upsample_detail_db_x{k}"] = round(judged[k], 2)
    if judged:
        out["upsample_detail_db"] = round(min(judged.values()), 2)
        if min(judged.values()) < FACTOR_MAX_DB:  # which k: the high bands overlap, the shortfall tells
            shortfall = shortfall_by_factor(spectra, grid, keep, floor)
            out["upsample_factor"] = max(shortfall, key=shortfall.get) if shortfall else min(judged)
    return out
