"""Procedural clean images and defect injectors, for calibrating and testing the QC judge.

`clean_image(seed, width, height)` renders a noise-free, anti-aliased scene (gradient sky or backdrop,
shapes, smooth textures, gratings, a horizon) that a stock reviewer would not reject on technical
grounds. `inject(rgb, defect, strength)` applies one defect at a known strength; `DEFECTS` lists the
strengths a reviewer would reject and the reason code the judge must give.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

# defect -> (reason code expected, strengths a reviewer would reject (target >= 95 % detection),
#            borderline strengths (reported, no target), mild strengths that should pass)
DEFECTS: dict[str, tuple[str, tuple, tuple, tuple]] = {
    "blur": ("blurry", (3.0, 5.0), (2.0,), (0.5,)),
    "motion": ("blurry", (), (15, 25), ()),  # the motion_blur check is off by default: reported, no target
    "noise": ("noisy", (6.0, 10.0, 20.0), (), (1.0,)),
    "jpeg": ("jpeg_artifacts", (10, 20, 30), (), (92,)),
    "overexpose": ("overexposed", (10.0, 25.0), (), ()),
    "underexpose": ("underexposed", (10.0, 25.0), (), ()),
    "contrast": ("low_contrast", (0.2,), (0.3,), ()),
    "banding": ("banding", (32, 24, 16), (), ()),
    "downscale": ("low_resolution", (0.9, 0.75, 0.5), (), ()),
    "saturation": ("oversaturated", (3.5,), (2.5,), ()),
    "color_cast": ("color_cast", (), (35.0, 50.0), ()),
}


def _rand_colour(rng: np.random.Generator, lo: int = 40, hi: int = 215) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _gradient(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = np.array(_rand_colour(rng), np.float32), np.array(_rand_colour(rng), np.float32)
    if rng.random() < 0.5:
        ang = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(ang) + yy * math.sin(ang))
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    return a + (b - a) * t[..., None]


def _smooth_texture(rng: np.random.Generator, w: int, h: int, scale: float) -> np.ndarray:
    tex = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), scale)
    return tex / max(float(tex.std()), 1e-6)


def clean_image(seed: int, width: int = 1024, height: int = 768) -> np.ndarray:
    """A varied, noise-free procedural render (uint8 HxWx3), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    ss = 2  # supersampling for anti-aliased shapes
    w2, h2 = width * ss, height * ss
    base = _gradient(rng, width, height)
    kind = seed % 4
    if kind == 1:  # smooth texture over the whole frame (stone, clouds)
        tex = _smooth_texture(rng, width, height, rng.uniform(2.5, 8.0))
        base = base + tex[..., None] * rng.uniform(12, 30) * np.array(_rand_colour(rng, 60, 200), np.float32) / 128
    elif kind == 2:  # horizon: sky gradient above, textured ground below
        horizon = (height * rng.uniform(0.4, 0.7) + np.cumsum(rng.normal(0, 1.5, width))).astype(np.float32)
        ground = _gradient(rng, width, height) + _smooth_texture(rng, width, height, 3.0)[..., None] * 18
        mask = np.clip(np.arange(height, dtype=np.float32)[:, None] - horizon[None, :] + 0.5, 0, 1)[..., None]
        base = base * (1 - mask) + ground * mask
    elif kind == 3:  # a grating patch (fabric, architecture)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        period = rng.uniform(11, 40)
        ang = rng.uniform(0, math.pi)
        grating = np.sin(2 * math.pi * (xx * math.cos(ang) + yy * math.sin(ang)) / period)
        region = np.zeros((height, width), np.float32)
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        region[y0:y0 + height // 2, x0:x0 + width // 2] = 1
        region = ndimage.gaussian_filter(region, 1.0)
        base = base + (grating * region)[..., None] * rng.uniform(25, 50)
    img = Image.fromarray(np.clip(np.round(base), 0, 255).astype(np.uint8)).resize((w2, h2), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 10))):
        cx, cy = rng.uniform(0, w2), rng.uniform(0, h2)
        r = rng.uniform(0.04, 0.2) * min(w2, h2)
        colour = _rand_colour(rng, 20, 235)
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=colour)
        elif shape == 1:
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles], fill=colour)
        else:
            draw.line([(cx - r, cy - r), (cx + r, cy + r * rng.uniform(-1, 1))], fill=colour,
                      width=int(rng.integers(2, 16)) * ss)
    return np.asarray(img.resize((width, height), Image.LANCZOS).convert("RGB"))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The image as it reads back after saving it as a JPEG at `quality`."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def enlarge(rgb: np.ndarray, factor: int, source: int | None = 256, method=Image.LANCZOS) -> np.ndarray:
    """A plain interpolated enlargement (the `upsampled` calibration): reduced to `source` px, then x`factor`."""
    im = Image.fromarray(rgb)
    if source:
        im.thumbnail((source, source), Image.LANCZOS)
    return np.asarray(im.resize((im.width * factor, im.height * factor), method))


def inject(rgb: np.ndarray, defect: str, strength: float, seed: int = 0) -> np.ndarray:
    """Apply one defect at a known strength to a uint8 HxWx3 image (see DEFECTS for the units)."""
    f = rgb.astype(np.float32)
    rng = np.random.default_rng(seed)
    if defect == "blur":  # Gaussian blur, sigma in pixels
        return _u8(ndimage.gaussian_filter(f, (strength, strength, 0)))
    if defect == "motion":  # linear motion blur (camera shake) `strength` px long, at an angle drawn from `seed`
        length = max(1, int(strength))
        angle = rng.uniform(0, math.pi)
        kernel = np.zeros((length + 1, length + 1), np.float32)
        for t in np.linspace(-length / 2, length / 2, 4 * length + 1):
            kernel[int(round(length / 2 + t * math.sin(angle))), int(round(length / 2 + t * math.cos(angle)))] = 1
        kernel /= kernel.sum()
        return _u8(np.stack([ndimage.convolve(f[..., c], kernel, mode="nearest") for c in range(3)], axis=-1))
    if defect == "noise":  # additive Gaussian noise per channel, sigma in levels
        return _u8(f + rng.normal(0, strength, f.shape))
    if defect == "jpeg":  # JPEG round trip at this quality
        return jpeg_roundtrip(rgb, int(strength))
    if defect == "overexpose":  # gain until `strength` % of pixels blow to white
        lo = np.percentile(f.min(axis=2), 100 - strength)
        return _u8(f * (255.0 / max(lo, 1.0)))
    if defect == "underexpose":  # offset + gain until `strength` % of pixels crush to black
        hi = np.percentile(f.max(axis=2), strength)
        return _u8((f - hi) * (255.0 / max(255.0 - hi, 1.0)) * 0.6)
    if defect == "contrast":  # scale deviations from the mean by `strength`
        mean = f.mean(axis=(0, 1), keepdims=True)
        return _u8(mean + (f - mean) * strength)
    if defect == "banding":  # posterise to `strength` levels per channel
        step = 255.0 / (int(strength) - 1)
        return _u8(np.round(f / step) * step)
    if defect == "downscale":  # resize by a linear factor
        h, w = rgb.shape[:2]
        return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * strength)), max(1, round(h * strength))),
                                                      Image.LANCZOS))
    if defect == "color_cast":  # warm tint of `strength` levels (R up, B down)
        return _u8(f + np.array([strength, strength * 0.2, -strength], np.float32))
    if defect == "saturation":  # scale chroma around the grey value by `strength`
        grey = f.mean(axis=2, keepdims=True)
        return _u8(grey + (f - grey) * strength)
    raise ValueError(f"unknown defect '{defect}' (known: {', '.join(DEFECTS)})")
