"""Time to write one 4 MP stock image with metadata, against a plain PIL JPEG save of the same pixels.

The measured path is `rezcty_core.stock.writer.write_batch` for one image: metadata from the prompt
(deterministic path), JPEG quality 95 with the sRGB profile, XMP + IPTC via pyexiv2, the JSON
sidecar and one locked CSV append. The baseline is `Image.save(quality=95)` alone.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rezcty_core.stock import (  # noqa: E402
    rules,
    writer,
    xmp_iptc,
)

PROMPT = ("masterpiece, (a lone lighthouse on a rocky cliff:1.2) above a stormy sea at dusk, crashing waves, "
          "seagulls, art by greg rutkowski, rezcty_style, rezcty_structure, 8k")
SIDE = 2048  # 2048 x 2048 = 4.19 MP, the size an x4 upscale of SD 1.5 gives
REPEATS = 5


def test_image(side: int = SIDE) -> np.ndarray:
    """Smooth gradients plus mild noise: compresses like a rendered picture, not like flat colour."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.4 + 0.3 * np.cos(5 * y), 0.6 - 0.3 * x * y], -1)
    noisy = base * 255 + rng.normal(0, 6, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def timed(fn, repeats: int = REPEATS) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    pixels = test_image()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        baseline = timed(lambda i: Image.fromarray(pixels).save(root / f"plain_{i}.jpg", quality=95))
        rules.build_metadata(PROMPT, pixels)  # warm caches (blocklists, YAKE, ICC profile)
        build = timed(lambda i: rules.build_metadata(PROMPT, pixels))
        meta = rules.build_metadata(PROMPT, pixels)

        def save_and_embed(i: int) -> None:
            path = root / f"embed_{i}.jpg"
            xmp_iptc.save_jpeg(pixels, path)
            xmp_iptc.embed_metadata(path, meta.title, meta.description, meta.keywords, {"prompt": PROMPT})

        embed = timed(save_and_embed)
        opts = writer.WriteOptions(filename_prefix="stock/", csv_name="bench.csv")
        full = timed(lambda i: writer.write_batch([pixels], PROMPT, root, opts))
        size = max(p.stat().st_size for p in (root / "stock").glob("*.jpg"))
        plain_size = (root / "plain_0.jpg").stat().st_size
    print(f"image: {SIDE}x{SIDE} ({SIDE * SIDE / 1e6:.2f} MP), median of {REPEATS}")
    print(f"baseline  PIL JPEG save q95 (4:2:0)            {baseline * 1000:8.1f} ms   {plain_size / 2**20:.2f} MB")
    print(f"metadata  text only (clean, keywords, rules)   {build * 1000:8.1f} ms")
    print(f"metadata  JPEG q95 4:4:4 + sRGB ICC + XMP/IPTC {embed * 1000:8.1f} ms")
    print(f"metadata  full write (text, JPEG, XMP/IPTC, sidecar, CSV)  {full * 1000:8.1f} ms   {size / 2**20:.2f} MB")
    print(f"ratio full write / baseline: {full / baseline:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
