"""Aspect-ratio bucketing (kohya style): every image trains near its own aspect ratio.

An image is only ever scaled down (never up) to fit `resolution**2` pixels and `max_reso` per side,
then assigned the bucket (sides multiples of `step`) closest to its aspect ratio that fits inside
the scaled image. It is resized with its aspect ratio kept and centre-cropped: no stretching, and the
crop is less than one bucket step on one side.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BucketSpec:
    resolution: int = 512  # target area is resolution**2 (SD 1.5: 512)
    min_reso: int = 256
    max_reso: int = 1024
    step: int = 64

    def __post_init__(self) -> None:
        if self.step <= 0 or self.min_reso % self.step or self.max_reso % self.step:
            raise ValueError(f"bucket sides must be multiples of the step {self.step} (min {self.min_reso}, max {self.max_reso})")
        if not self.step <= self.min_reso <= self.max_reso:
            raise ValueError(f"need step <= min_reso <= max_reso, got {self.step}, {self.min_reso}, {self.max_reso}")


def _floor(x: float, step: int) -> int:
    return int((x + 1e-6) // step) * step  # 1023.9999 from a float scale still floors to 1024


def _round(x: float, step: int) -> int:
    return max(step, int(round(x / step)) * step)


def bucket_for(width: int, height: int, spec: BucketSpec = BucketSpec()) -> tuple[int, int] | None:
    """The (width, height) bucket for an image, or None when it is too small for `min_reso` without upscaling."""
    if width <= 0 or height <= 0:
        return None
    aspect = width / height
    scale = min(1.0, math.sqrt(spec.resolution ** 2 / (width * height)), spec.max_reso / width, spec.max_reso / height)
    sw, sh = width * scale, height * scale
    cap_w = min(_floor(width, spec.step), spec.max_reso)  # never wider/taller than the image itself
    cap_h = min(_floor(height, spec.step), spec.max_reso)
    candidates = []
    for bw in {min(_floor(sw, spec.step), cap_w), min(_round(sw, spec.step), cap_w)}:  # width-led
        candidates.append((bw, min(_round(bw / aspect, spec.step), cap_h)))
    for bh in {min(_floor(sh, spec.step), cap_h), min(_round(sh, spec.step), cap_h)}:  # height-led
        candidates.append((min(_round(bh * aspect, spec.step), cap_w), bh))
    candidates = [(w, h) for w, h in candidates if w * h <= spec.resolution ** 2]
    candidates = [(w, h) for w, h in candidates
                  if spec.min_reso <= w <= spec.max_reso and spec.min_reso <= h <= spec.max_reso]
    if not candidates:
        return None
    return min(candidates, key=lambda b: (abs(math.log(b[0] / b[1] / aspect)), -b[0] * b[1]))


def resize_plan(width: int, height: int, bucket: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resized size, centre-crop box) that turns the image into the bucket with its aspect ratio kept."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    rw, rh = max(bw, math.ceil(width * scale - 1e-6)), max(bh, math.ceil(height * scale - 1e-6))
    left, top = (rw - bw) // 2, (rh - bh) // 2
    return (rw, rh), (left, top, left + bw, top + bh)


def distortion(width: int, height: int, bucket: tuple[int, int]) -> dict:
    """How far training at `bucket` is from the image: aspect-ratio error (log), cropped fraction and pixels."""
    (rw, rh), _ = resize_plan(width, height, bucket)
    return {
        "aspect_error": abs(math.log((bucket[0] / bucket[1]) / (width / height))),
        "crop_fraction": 1.0 - bucket[0] * bucket[1] / (rw * rh),
        "crop_px": max(rw - bucket[0], rh - bucket[1]),
        "upscale": max(rw / width, rh / height),
    }


def fit_to_bucket(image: np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
    """Resize (down, Lanczos) and centre-crop an HWC uint8 image to the bucket; no stretching."""
    from PIL import Image

    h, w = image.shape[:2]
    size, box = resize_plan(w, h, bucket)
    pil = Image.fromarray(image)
    if size != (w, h):
        pil = pil.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(pil.crop(box))


def group_by_bucket(sizes: dict, spec: BucketSpec = BucketSpec()) -> tuple[dict[tuple[int, int], list], list]:
    """{key: (w, h)} -> ({bucket: [keys]}, [keys too small to train without upscaling])."""
    buckets: dict[tuple[int, int], list] = defaultdict(list)
    skipped = []
    for key, (w, h) in sizes.items():
        b = bucket_for(w, h, spec)
        if b is None:
            skipped.append(key)
        else:
            buckets[b].append(key)
    return dict(buckets), skipped


def batches(buckets: dict[tuple[int, int], list], batch_size: int, rng: np.random.Generator) -> list[list]:
    """One epoch of batches: items shuffled within their bucket, batches never mix buckets, batch order shuffled."""
    out = []
    for key in sorted(buckets):
        items = list(buckets[key])
        rng.shuffle(items)
        out.extend(items[i:i + batch_size] for i in range(0, len(items), batch_size))
    order = rng.permutation(len(out))
    return [out[i] for i in order]
