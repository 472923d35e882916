"""QC judge calibration and speed.

    .venv/bin/python bench/bench_qc_calibration.py [--clean N] [--big N] [--no-speed]
    ./rezcty bench qc

Calibration: N procedural clean renders (tests/fixtures/qc_synth.py, 1024x768) are judged with the
`adobe_stock` profile (resolution checked separately, see below); then each defect of
qc_synth.DEFECTS is injected at every strength a reviewer would reject (and at borderline and mild
strengths, reported without a target), and we report the share
of images whose reasons contain the expected code (detection) and the share of clean images
with any reason (false rejects). Mild strengths (that should pass) are reported as well.
The `downscale` defect runs on 2048x2048 (4.19 MP) clean renders, the size the brief targets.

Speed: every technical check on one 4 MP image vs the `brisque` package's score alone on the
same image (installed from the wheel in .comfyui/downloads/wheels with --no-deps; it breaks on
numpy >= 2.4 in its own scaling step, so when it does, its own feature functions are timed and
only the final vector is flattened).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # tests/fixtures: the procedural QC images
os.environ.setdefault("REZCTY_EMBEDDED_DIR", str(REPO / ".comfyui" / "embedded"))

import numpy as np  # noqa: E402
from fixtures import qc_synth  # noqa: E402

from rezcty_core.qc.measure import MEASURE_THREADS, measure, measure_with_profile  # noqa: E402
from rezcty_core.qc.profiles import load_profile  # noqa: E402
from rezcty_core.qc.verdict import failed_checks, unique_codes  # noqa: E402


def judge(rgb: np.ndarray, profile: dict) -> list[str]:
    m = measure_with_profile(rgb, profile)
    return unique_codes(failed_checks(m, profile))


def calibrate(n_clean: int, n_big: int) -> bool:
    profile = load_profile("adobe_stock")
    small_profile = copy.deepcopy(profile)
    small_profile["checks"]["resolution_min"]["enabled"] = False
    defect_profile = copy.deepcopy(small_profile)
    defect_profile["text"] = {"enabled": False}  # defects carry no text; the text check has its own calibration
    t0 = time.time()
    clean = [qc_synth.clean_image(seed) for seed in range(n_clean)]
    false_rejects = []
    for seed, img in enumerate(clean):
        reasons = judge(img, small_profile)
        if reasons:
            false_rejects.append((seed, reasons))
    print(f"clean images: {n_clean} renders 1024x768; false rejects {len(false_rejects)}/{n_clean} "
          f"= {100.0 * len(false_rejects) / n_clean:.1f} %  (target <= 5 %)")
    for seed, reasons in false_rejects:
        print(f"  clean seed {seed}: {reasons}")
    ok = len(false_rejects) <= 0.05 * n_clean
    print(f"{'defect':<12} {'strength':>8} {'code':<15} {'detected':>9}")
    for defect, (code, strengths, borderline, mild) in qc_synth.DEFECTS.items():
        images = clean if defect != "downscale" else [qc_synth.clean_image(s, 2048, 2048) for s in range(n_big)]
        prof = defect_profile if defect != "downscale" else profile
        for strength in (*strengths, *borderline, *mild):
            hits = 0
            misses = []
            for seed, img in enumerate(images):
                reasons = judge(qc_synth.inject(img, defect, strength, seed=seed), prof)
                if code in reasons:
                    hits += 1
                else:
                    misses.append(seed)
            rate = 100.0 * hits / len(images)
            if strength in strengths:
                ok &= rate >= 95.0
                label = f"{rate:6.1f} %"
            elif strength in borderline:
                label = f"{rate:6.1f} %  (borderline strength, no target)"
            else:
                label = f"{rate:6.1f} %  (mild, should pass: flagged share)"
            print(f"{defect:<12} {strength!s:>8} {code:<15} {label}" + (f"  missed seeds {misses[:8]}" if misses and
                                                                       strength in strengths else ""))
    print(f"calibration: {'targets met' if ok else 'targets NOT met'} ({time.time() - t0:.0f} s)")
    return ok


REAL_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png",
               "grass.png", "gravel.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "rocket.jpg")


def real_photos() -> None:
    """Photographs bundled with scikit-image (a dev requirement): verdicts with the resolution check off.
    No target: a few are technically poor on purpose (clock_motion is motion-blurred, moon is blocky)."""
    try:
        import skimage
    except ImportError:
        print("real photos: scikit-image not installed (it comes with requirements-dev.txt)")
        return
    from PIL import Image

    profile = load_profile("adobe_stock")
    profile["checks"]["resolution_min"]["enabled"] = False
    folder = Path(skimage.__file__).parent / "data"
    print("real photos (scikit-image data, resolution check off):")
    for name in REAL_PHOTOS:
        if not (folder / name).is_file():
            continue
        with Image.open(folder / name) as im:
            rgb = np.asarray(im.convert("RGB"))
        m = measure_with_profile(rgb, profile)
        verdict = unique_codes(failed_checks(m, profile)) or "pass"
        print(f"  {name:<22} {rgb.shape[1]}x{rgb.shape[0]:<5} {verdict}  (blur {m['blur_sigma_px']}, noise "
              f"{m['noise_sigma']}, JPEG q {m['jpeg_quality']}, blockiness {m['jpeg_blockiness']})")


def package_brisque_score(rgb: np.ndarray) -> float:
    """The `brisque` package alone (its own features; flattened only where numpy >= 2.4 breaks it)."""
    warnings.filterwarnings("ignore")
    from brisque import BRISQUE

    obj = BRISQUE(url=False)
    try:
        return float(obj.score(rgb))
    except (TypeError, ValueError):
        import cv2
        import skimage.color

        grey = skimage.color.rgb2gray(rgb)
        full = obj.calculate_brisque_features(grey, kernel_size=7, sigma=7 / 6)
        half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        feats = np.concatenate((full, obj.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6)))
        return float(obj.calculate_image_quality_score(np.array([float(np.ravel(f)[0]) for f in feats])))


def speed() -> None:
    from rezcty_core.qc import brisque

    profile = load_profile("adobe_stock")
    img = qc_synth.clean_image(7, 2048, 2048)
    measure_with_profile(img, profile)  # warm-up (model file, caches, thread pool)
    timings: dict[int, list[float]] = {1: [], MEASURE_THREADS: []}
    for _ in range(3):
        for threads in timings:
            t = time.perf_counter()
            measure(img, threads=threads)
            timings[threads].append(time.perf_counter() - t)
    ours = timings[MEASURE_THREADS]
    try:
        t = time.perf_counter()
        ref = package_brisque_score(img)
        pkg = time.perf_counter() - t
    except ImportError as e:
        print(f"speed: brisque package not installed ({e}); pip install --no-deps "
              f".comfyui/downloads/wheels/brisque-0.2.0-py3-none-any.whl opencv-python-headless scikit-image "
              f"libsvm-official")
        pkg, ref = None, None
    t = time.perf_counter()
    full = brisque.brisque_score(img)
    ours_full = time.perf_counter() - t
    med = statistics.median(ours)
    print(f"speed, 2048x2048 (4.19 MP), {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}:")
    print(f"  all technical checks (rezcty_core.qc.measure.measure, {MEASURE_THREADS} threads): median {med:.3f} s of 3 "
          f"(target <= 1 s on 2 cores); one thread: median {statistics.median(timings[1]):.3f} s")
    print(f"  rezcty BRISQUE alone at full resolution:       {ours_full:.3f} s, score {full:.3f}")
    if pkg is not None:
        print(f"  brisque 0.2.0 package score alone (baseline):  {pkg:.3f} s, score {ref:.3f}")
        print(f"  ratio all-checks / package = {med / pkg:.3f}; rezcty BRISQUE / package = {ours_full / pkg:.3f};"
              f" |score difference| = {abs(full - ref):.2e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", type=int, default=40, help="number of clean 1024x768 renders")
    ap.add_argument("--big", type=int, default=6, help="number of clean 4 MP renders for the downscale defect")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)
    ok = calibrate(args.clean, args.big)
    real_photos()
    if not args.no_speed:
        speed()
    import qc_sees_calibration  # plain upscales, faces and hands (issue 20 part 2): bench/qc_sees_calibration.py

    ok &= qc_sees_calibration.main(["--no-speed"] if args.no_speed else []) == 0
    import qc_text_calibration  # text/watermarks (issue 20): bench/qc_text_calibration.py

    ok &= qc_text_calibration.main(["--no-speed"] if args.no_speed else []) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
