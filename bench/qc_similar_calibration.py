"""The similar-content budget's threshold (issue 28): DINOv2 cosine between variations of one photo vs different photos.

    .venv/bin/python bench/qc_similar_calibration.py [--renders N]

The embedded DINOv2 (dinov2-small, CLS pooling, as the DINOv2 Embed node's default) embeds each native scikit-image /
scikit-learn photo (tests/fixtures/qc_reviewer.py) and VARIATIONS of it: what N renders of one prompt look like to
a reviewer (other framings, a mirror, a small turn, a colour shift, a zoom) and near-exact copies (JPEG q75, a
resize), which the duplicate check (cosine >= 0.97) already catches. Printed: the cosine quantiles within one
photo's variations and between different photos (and between procedural clean renders of different seeds, which
share one style), and for each candidate threshold the share of variation pairs it calls similar and of
different-photo pairs it wrongly calls similar. The profile's `duplicate.similar_min_cosine` is the lowest
threshold (0.01 steps) that calls at most 0.1 % of the different-photo pairs similar: the budget also holds against
every accepted image of earlier runs, so a false rate p gives each new image p x (history size) false neighbours.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("REZCTY_EMBEDDED_DIR", str(REPO / ".comfyui" / "embedded"))

import numpy as np  # noqa: E402
from fixtures import qc_reviewer, qc_synth  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402


def _crop(im: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = im.size
    return im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h))).resize((w, h), Image.LANCZOS)


VARIATIONS = {  # name -> (kind, function of the PIL image)
    "crop 80 % top-left": ("variation", lambda im: _crop(im, (0.0, 0.0, 0.8, 0.8))),
    "crop 80 % bottom-right": ("variation", lambda im: _crop(im, (0.2, 0.2, 1.0, 1.0))),
    "crop 60 % centre (zoom)": ("variation", lambda im: _crop(im, (0.2, 0.2, 0.8, 0.8))),
    "mirrored": ("variation", lambda im: im.transpose(Image.FLIP_LEFT_RIGHT)),
    "turned 6 degrees": ("variation", lambda im: _crop(im.rotate(6, Image.BICUBIC), (0.08, 0.08, 0.92, 0.92))),
    "warmer, brighter": ("variation", lambda im: ImageEnhance.Brightness(
        Image.merge("RGB", [b.point(lambda v, d=d: min(255, v + d)) for b, d in zip(im.split(), (18, 6, -10))])).enhance(1.1)),
    "mirrored crop 70 %": ("variation", lambda im: _crop(im.transpose(Image.FLIP_LEFT_RIGHT), (0.1, 0.2, 0.8, 0.9))),
    "JPEG q75": ("copy", lambda im: Image.fromarray(qc_synth.jpeg_roundtrip(np.asarray(im), 75))),
    "resized to 70 %": ("copy", lambda im: im.resize((int(im.width * 0.7), int(im.height * 0.7)), Image.LANCZOS)),
}


FALSE_RATE = 0.001


def cosines(vectors: np.ndarray) -> np.ndarray:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return v @ v.T


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renders", type=int, default=20, help="procedural clean renders (different seeds)")
    args = ap.parse_args(argv)
    from rezcty_core.eye.dinov2 import embed_images, load_dinov2
    from rezcty_core.qc.dedup import pooled_vector

    t0 = time.time()
    load = os.getloadavg()[0]
    images, source, kind = [], [], []
    for name, rgb in qc_reviewer.photo_sources():
        im = Image.fromarray(rgb)
        images.append(rgb), source.append(name), kind.append("original")
        for k, fn in VARIATIONS.values():
            images.append(np.asarray(fn(im).convert("RGB"))), source.append(name), kind.append(k)
    for seed in range(args.renders):
        images.append(qc_synth.clean_image(seed, 512, 384)), source.append(f"render {seed}"), kind.append("render")
    dino = load_dinov2("embedded", device="cpu", dtype="fp32")
    vecs = np.stack([pooled_vector(e.vector) for e in embed_images(dino, images, pooling="cls")])
    cos = cosines(vecs)
    n = len(images)
    same = {"variation": [], "copy": []}
    between, renders = [], []
    for i, j in itertools.combinations(range(n), 2):
        if kind[i] == "render" or kind[j] == "render":
            if kind[i] == kind[j] == "render":
                renders.append(cos[i, j])
            continue
        if source[i] == source[j]:
            if kind[i] == "original" or kind[j] == "original":  # each variation against its original
                same["copy" if "copy" in (kind[i], kind[j]) else "variation"].append(cos[i, j])
        else:
            between.append(cos[i, j])
    print(f"DINOv2 embedded (dinov2-small, CLS), {n} images, {time.time() - t0:.0f} s, load {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    for label, vals in (("variation vs its original", same["variation"]), ("near-exact copy vs original", same["copy"]),
                        ("different photos", between), ("clean renders, different seeds", renders)):
        v = np.array(vals)
        print(f"  {label:<32} n={len(v):5}  min {v.min():.3f}  p5 {np.percentile(v, 5):.3f}  median "
              f"{np.median(v):.3f}  p95 {np.percentile(v, 95):.3f}  max {v.max():.3f}")
    var, btw, ren = np.array(same["variation"]), np.array(between), np.array(renders)
    print(f"  {'threshold':>9} {'variations called similar':>26} {'different photos called similar':>32} "
          f"{'renders called similar':>23}")
    for t in [*np.arange(0.40, 0.80, 0.10), *np.arange(0.80, 0.975, 0.01)]:
        print(f"  {t:9.2f} {100 * (var >= t).mean():25.1f} % {100 * (btw >= t).mean():31.2f} % "
              f"{100 * (ren >= t).mean():22.1f} %")
    # the budget is also held against every accepted image of earlier runs: a false "similar" rate p gives a new
    # image p x (history size) false neighbours, so p must stay near 1e-3 for a history of hundreds
    choice = next(float(t) for t in np.arange(0.80, 1.0, 0.01) if (btw >= t).mean() <= FALSE_RATE)
    print(f"lowest threshold (0.01 steps) calling at most {100 * FALSE_RATE:g} % of different-photo pairs similar: "
          f"{choice:.2f}; it calls {100 * (var >= choice).mean():.1f} % of the variations similar (per kind below); "
          f"a new image then has {1000 * (btw >= choice).mean():.1f} false neighbours per 1000 accepted images")
    per_kind: dict[str, list[float]] = {}
    for i, j in itertools.combinations(range(n), 2):
        if source[i] == source[j] and "original" in (kind[i], kind[j]) and "render" not in (kind[i], kind[j]):
            other = j if kind[i] == "original" else i
            label = list(VARIATIONS)[(other % (len(VARIATIONS) + 1)) - 1]
            per_kind.setdefault(label, []).append(cos[i, j])
    for label, vals in per_kind.items():
        v = np.array(vals)
        print(f"  {label:<26} min {v.min():.3f} median {np.median(v):.3f}  similar at {choice:.2f}: "
              f"{100 * (v >= choice).mean():.0f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
