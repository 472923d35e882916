"""All technical measurements of one image, and those the profile asks for besides (text, people).

`measure(rgb)` returns plain numbers; `measure_with_profile(rgb, profile)` adds the detectors' (docs/qc.md).
Each measurement lives in the module named for what it looks at (all in 8-bit levels or pixels of the image
as given):
* resolution (here): width, height, megapixels, `upscale_needed` (linear factor to reach the profile's minimum)
* sharpness.py: `blur_sigma_px`, `motion_blur_px`
* noise.py: `noise_sigma`, `noise_scale_ratio`
* tone.py: exposure (`mean_luma`, clipping), contrast (`dynamic_range`, `channel_range`, `rms_contrast`),
  colour (`color_cast`, `saturated_pct`, `colourfulness`, `colour_clip_pct`), banding (`banding_ratio`,
  `banding_edge_pct`)
* compression.py: `jpeg_blockiness`, `jpeg_quality`
* brisque.py: `brisque`: BRISQUE score on a copy of at most `brisque_max_megapixels`
* upsampling.py: `upsample_detail_db`, `upsample_factor`: detail left above 1/2, 1/3 or 1/4 of Nyquist, dB over
  the 8-bit rounding floor in the most detailed tiles (a plain interpolated enlargement has none)
* text.py (text and watermarks) and people.py (faces, hands), through `measure_with_profile`
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from rezcty_core.qc.brisque import BrisqueUnavailable, measure_brisque
from rezcty_core.qc.compression import measure_jpeg
from rezcty_core.qc.noise import measure_noise
from rezcty_core.qc.pixels import LUMA, STAT_SAMPLES, as_rgb, sample_step
from rezcty_core.qc.sharpness import measure_blur_any
from rezcty_core.qc.tone import measure_banding, measure_colour, measure_exposure
from rezcty_core.qc.upsampling import measure_upsampling

MEASURE_THREADS = 2  # the costly checks run side by side (numpy and scipy release the GIL)

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
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    luma = rgb.astype(np.float32) @ LUMA
    m: dict[str, Any] = {"width": int(w), "height": int(h), "megapixels": round(w * h / 1e6, 3),
                         "upscale_needed": round(max(1.0, math.sqrt(min_pixels / (w * h))), 3)}
    parallel = (threads if threads is not None else MEASURE_THREADS) > 1 and h * w >= 250_000
    blur = _pool().submit(measure_blur_any, rgb, luma) if parallel else None
    if blur is None:
        m.update(measure_blur_any(rgb, luma))
    m.update(measure_noise(luma))
    step = sample_step(h * w, STAT_SAMPLES)
    m.update(measure_exposure(rgb[::step, ::step], luma[::step, ::step]))
    m.update(measure_colour(rgb[::step, ::step]))
    m.update(measure_jpeg(luma))
    m.update(measure_banding(rgb))
    try:
        m.update(measure_brisque(rgb, brisque_max_megapixels))
    except BrisqueUnavailable as e:  # the check that reads it fails closed (qc/verdict.py), the others still measure
        m.setdefault("checks_not_run", []).append({"check": "brisque", "reason": str(e), "measures": ["brisque"]})
    m.update(measure_upsampling(rgb, luma))
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
    not_run = m.pop("checks_not_run", []) + seen.pop("checks_not_run", [])
    m.update(seen)
    if not_run:
        m["checks_not_run"] = not_run
    return m
