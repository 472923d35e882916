"""Sample inputs for `./rezcty demo`: a few ideas and procedurally painted test images.

The images are made here (numpy + Pillow, seeded), so the repo ships no binary and no licence
question arises. Clean ones are 2048 x 2048 (4.19 MP, Adobe's >= 4 MP); the others carry one defect
each that Adobe reviewers reject (blur, noise, too small, overexposed, a duplicate), so the QC
line has something to catch. Each image gets NAME.txt with the prompt it "was made from".
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

IDEAS = [
    "a lighthouse on a cliff",
    "sunrise over mountain",
    "a quiet harbour at dusk",
]

PALETTES = [  # sky top, sky horizon, sun, ridge far, ridge near
    ((32, 58, 110), (250, 170, 110), (255, 236, 190), (96, 82, 120), (30, 28, 48)),
    ((20, 90, 140), (170, 215, 230), (255, 250, 225), (70, 110, 120), (24, 52, 50)),
    ((60, 30, 80), (240, 120, 90), (255, 210, 150), (110, 60, 90), (40, 20, 40)),
]
PROMPTS = [
    "sunrise over layered mountain ridges with an orange sky and a bright sun",
    "clear morning over green mountain ridges under a pale blue sky",
    "purple dusk over mountain silhouettes with a low warm sun",
]


def _ridge(rng: np.random.Generator, width: int, base: float, rough: float) -> np.ndarray:
    steps = rng.normal(0, 1, width // 16 + 2).cumsum()
    steps = (steps - steps.mean()) / (np.abs(steps).max() + 1e-6)
    line = np.interp(np.arange(width), np.linspace(0, width, len(steps)), steps)
    return base + rough * line


def landscape(seed: int, size: int = 2048) -> np.ndarray:
    """A clean stylised landscape: sky gradient, sun, three ridges, a touch of film grain."""
    rng = np.random.default_rng(seed)
    top, horizon, sun, far, near = (np.array(c, dtype=np.float32) for c in PALETTES[seed % len(PALETTES)])
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = top * (1 - y) + horizon * y
    img = np.broadcast_to(img, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy, r = size * rng.uniform(0.3, 0.7), size * rng.uniform(0.35, 0.5), size * 0.07
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    glow = np.clip(1.6 - dist / (r * 2.5), 0, 1)[..., None] ** 2
    img = img * (1 - 0.5 * glow) + sun * 0.5 * glow
    disc = np.clip((r - dist) / 3.0, 0, 1)[..., None]
    img = img * (1 - disc) + sun * disc
    for depth, (base, rough) in enumerate([(0.55, 0.08), (0.68, 0.07), (0.82, 0.05)]):
        colour = far * (1 - depth / 2) + near * (depth / 2)
        ridge = _ridge(rng, size, base * size, rough * size)
        mask = np.clip((yy - ridge[None, :]) / 2.0, 0, 1)[..., None]
        shade = 1.0 - 0.15 * (yy - ridge[None, :]).clip(0, size * 0.3)[..., None] / (size * 0.3)
        img = img * (1 - mask) + colour * shade * mask
    img += rng.normal(0, 1.2, img.shape).astype(np.float32)  # fine grain, far below "noisy"
    return np.clip(img, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=2)
def _land(seed: int) -> np.ndarray:
    """landscape(seed), painted once per write_samples (clean_1 and its duplicate), read-only."""
    arr = landscape(seed)
    arr.flags.writeable = False
    return arr


def _noisy(seed: int) -> Image.Image:
    rng = np.random.default_rng(7)
    base = landscape(seed)
    noisy = base.astype(np.float32) + rng.normal(0, 28, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _bright(seed: int) -> Image.Image:
    bright = landscape(seed).astype(np.float32) * 1.9 + 60
    return Image.fromarray(np.clip(bright, 0, 255).astype(np.uint8))


# name -> (how it is painted, its prompt); each defect on a landscape of its own, so the only duplicate is the one
# meant as such
SAMPLES = {
    "clean_1.png": (lambda: Image.fromarray(_land(0)), PROMPTS[0]),
    "clean_2.png": (lambda: Image.fromarray(landscape(1)), PROMPTS[1]),
    "clean_3.png": (lambda: Image.fromarray(landscape(2)), PROMPTS[2]),
    "defect_blurry.png": (lambda: Image.fromarray(landscape(3)).filter(ImageFilter.GaussianBlur(8)), PROMPTS[0]),
    "defect_noisy.png": (lambda: _noisy(4), PROMPTS[1]),
    "defect_small.png": (lambda: Image.fromarray(landscape(5)).resize((640, 640), Image.LANCZOS), PROMPTS[2]),
    "defect_overexposed.png": (lambda: _bright(6), PROMPTS[0]),
    "duplicate_of_clean_1.png": (lambda: Image.fromarray(_land(0)), PROMPTS[0]),
}


def write_samples(folder: Path, only: list[str] | None = None) -> list[Path]:
    """Write the sample images (+ NAME.txt prompts), all or the `only` names, and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in only or list(SAMPLES):
        paint, prompt = SAMPLES[name]
        path = folder / name
        paint().save(path, compress_level=1)
        path.with_suffix(".txt").write_text(prompt + "\n", encoding="utf-8")
        paths.append(path)
    _land.cache_clear()
    return paths


def write_ideas(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(IDEAS) + "\n", encoding="utf-8")
    return path
