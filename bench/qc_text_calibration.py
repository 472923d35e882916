"""QC text/watermark check calibration and speed (called from bench_qc_calibration.py; `./rezcty bench qc`).

    .venv/bin/python bench/qc_text_calibration.py [--renders N] [--photos N] [--clean N] [--no-speed | --speed-only]

* Overlays (tests/fixtures/qc_synth_text.py): `centre` text, a `corner` logo-like mark and a `tiled` watermark at
  25 / 50 / 100 % opacity and text heights 3 / 6 / 10 % of the frame, on clean procedural renders
  (tests/fixtures/qc_synth.py, 1024x768) and on real photographs bundled with scikit-image. Detected = the profile's
  `text` check fails. Target: >= 95 % at >= 50 % opacity (25 % reported, no target).
* Real text: what scikit-image's `text` image gets (boxes, words read).
* False positives: the `text` check on clean renders and on the clean real photos. Target <= 2 %.
* Speed: every check (rezcty_core.qc.measure.measure_with_profile, text included) on one 4 MP render, and the
  text check alone, against rapidocr's own full pipeline (det + cls + rec) on the same image. rapidocr is no
  dependency: it runs in a scratch venv named by $REZCTY_RAPIDOCR_PYTHON (e.g. `python3 -m venv /tmp/ocr &&
  /tmp/ocr/bin/pip install rapidocr-onnxruntime==1.4.4`), else that ratio is skipped with the reason.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # tests/fixtures: the procedural QC images
os.environ.setdefault("REZCTY_EMBEDDED_DIR", str(REPO / ".comfyui" / "embedded"))

import numpy as np  # noqa: E402
from fixtures import qc_synth  # noqa: E402
from fixtures import qc_synth_text as synth_text  # noqa: E402

from rezcty_core.qc import text as qc_text  # noqa: E402
from rezcty_core.qc.measure import measure_with_profile  # noqa: E402
from rezcty_core.qc.profiles import load_profile  # noqa: E402
from rezcty_core.qc.verdict import failed_checks  # noqa: E402

OPACITIES = (0.25, 0.5, 1.0)
HEIGHTS = (3.0, 6.0, 10.0)
# clean real photographs (no lettering in them); `text` is the real-text probe, reported separately
PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
          "gravel.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg",
          "page.png", "horse.png", "cell.png", "color.png", "ihc.png", "logo.png", "phantom.png",
          "microaneurysms.png", "motorcycle_right.png", "chessboard_GRAY.png", "clock_motion.png")
NOT_CLEAN = {"page.png": "a scanned page of text", "logo.png": "scikit-image's logo (lettering)"}


def _photo(name: str) -> np.ndarray | None:
    try:
        import skimage
    except ImportError:
        return None
    from PIL import Image

    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _flagged(rgb: np.ndarray, profile: dict) -> tuple[bool, dict]:
    m = qc_text.detect_text(rgb, qc_text.profile_options(profile))
    failed = failed_checks(m, {"checks": {"text": profile["checks"]["text"]}})
    return bool(failed), m


def calibrate_text(n_renders: int = 6, n_photos: int = 6, n_clean: int = 40) -> bool:
    profile = load_profile("adobe_stock")
    t0 = time.time()
    ok = True
    # false positives
    renders = [qc_synth.clean_image(seed) for seed in range(n_clean)]
    fp_r = [seed for seed, img in enumerate(renders) if _flagged(img, profile)[0]]
    photos = {n: p for n in PHOTOS if (p := _photo(n)) is not None}
    clean_photos = {n: p for n, p in photos.items() if n not in NOT_CLEAN}
    fp_p = []
    for name, img in clean_photos.items():
        flagged, m = _flagged(img, profile)
        if flagged:
            fp_p.append(f"{name} {m.get('text_words')}")
    rate_r = 100.0 * len(fp_r) / max(1, len(renders))
    rate_p = 100.0 * len(fp_p) / max(1, len(clean_photos))
    print(f"text false positives: clean renders {len(fp_r)}/{len(renders)} = {rate_r:.1f} %, clean real photos "
          f"{len(fp_p)}/{len(clean_photos)} = {rate_p:.1f} %  (target <= 2 %)")
    for item in fp_p:
        print(f"  flagged photo: {item}")
    if fp_r:
        print(f"  flagged render seeds: {fp_r}")
    ok &= rate_r <= 2.0 and rate_p <= 2.0
    for name, why in NOT_CLEAN.items():
        if name in photos:
            flagged, m = _flagged(photos[name], profile)
            print(f"  {name} ({why}): {'text' if flagged else 'pass'}, {m['text_boxes']} boxes, "
                  f"area {m['text_area_pct']} %, words {m.get('text_words', [])[:6]}")
    # real text
    text_img = _photo("text.png")
    if text_img is not None:
        flagged, m = _flagged(text_img, profile)
        words = [(r.get("text"), r.get("rec_conf"), r["score"]) for r in m["text_box_list"]]
        print(f"scikit-image 'text' ({text_img.shape[1]}x{text_img.shape[0]}): {'text' if flagged else 'pass'}; "
              f"{m['text_candidates']} candidate boxes, {m['text_boxes']} counted; (read, rec conf, box score): {words}")
    # overlays
    bases = [(f"render {s}", qc_synth.clean_image(1000 + s)) for s in range(n_renders)]
    bases += [(f"photo {n}", p) for n, p in list(clean_photos.items())[:n_photos]]
    print(f"text overlays on {n_renders} renders + {min(n_photos, len(clean_photos))} real photos "
          f"(heights {', '.join(f'{h:g}' for h in HEIGHTS)} % of the frame):")
    print(f"  {'kind':<8} {'opacity':>7} {'renders':>9} {'photos':>9} {'all':>9}")
    for kind in synth_text.KINDS:
        for opacity in OPACITIES:
            hits = {"render": [0, 0], "photo": [0, 0]}
            misses = []
            for label, img in bases:
                for k, height in enumerate(HEIGHTS):
                    marked = synth_text.watermark(img, kind, opacity, height, seed=k)
                    flagged, _ = _flagged(marked, profile)
                    group = hits[label.split()[0]]
                    group[0] += flagged
                    group[1] += 1
                    if not flagged:
                        misses.append(f"{label} h{height:g}")
            rates = [100.0 * a / max(1, b) for a, b in hits.values()]
            total = 100.0 * sum(a for a, _ in hits.values()) / max(1, sum(b for _, b in hits.values()))
            target = opacity >= 0.5
            ok &= not target or total >= 95.0
            print(f"  {kind:<8} {opacity:>6.0%} {rates[0]:>8.1f}% {rates[1]:>8.1f}% {total:>8.1f}%"
                  f"{'' if target else '  (no target)'}" + (f"  missed: {', '.join(misses[:6])}" if misses else ""))
    print(f"text calibration: {'targets met' if ok else 'targets NOT met'} ({time.time() - t0:.0f} s)")
    return ok


RAPIDOCR_SCRIPT = """
import sys, time
import numpy as np
from PIL import Image
from rapidocr_onnxruntime import RapidOCR
img = np.asarray(Image.open(sys.argv[1]).convert("RGB"))[..., ::-1].copy()
engine = RapidOCR()
engine(img)
times = []
for _ in range(3):
    t = time.perf_counter(); result, _ = engine(img); times.append(time.perf_counter() - t)
times.sort()
print(times[1], len(result or []))
"""


def rapidocr_time(rgb: np.ndarray) -> tuple[float | None, str]:
    python = os.environ.get("REZCTY_RAPIDOCR_PYTHON")
    if not python or not Path(python).is_file():
        return None, ("skipped: set REZCTY_RAPIDOCR_PYTHON to a scratch venv's python with rapidocr-onnxruntime==1.4.4 "
                      "(not a dependency of the pack)")
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.png"
        Image.fromarray(rgb).save(path)
        res = subprocess.run([python, "-c", RAPIDOCR_SCRIPT, str(path)], capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return None, f"rapidocr failed: {res.stderr.strip().splitlines()[-1:]}"
    secs, n = res.stdout.split()
    return float(secs), f"{n} lines read"


def speed_text() -> None:
    profile = load_profile("adobe_stock")
    no_text = copy.deepcopy(profile)
    no_text["text"]["enabled"] = False
    img = synth_text.watermark(qc_synth.clean_image(7, 2048, 2048), "centre", 0.5, 5, seed=0)
    load0 = os.getloadavg()[0]
    measure_with_profile(img, profile)  # warm-up: sessions, caches
    opts = qc_text.profile_options(profile)
    t_all, t_rest, t_text = [], [], []
    for _ in range(3):
        t = time.perf_counter()
        measure_with_profile(img, profile)
        t_all.append(time.perf_counter() - t)
        t = time.perf_counter()
        measure_with_profile(img, no_text)
        t_rest.append(time.perf_counter() - t)
        t = time.perf_counter()
        qc_text.detect_text(img, opts)
        t_text.append(time.perf_counter() - t)
    ref, note = rapidocr_time(img)
    load1 = os.getloadavg()[0]
    med_all, med_text = statistics.median(t_all), statistics.median(t_text)
    print(f"speed with the text check, 2048x2048 (4.19 MP) watermarked render, {os.cpu_count()} cores, "
          f"load {load0:.1f} -> {load1:.1f}:")
    print(f"  all checks incl. text (measure_with_profile): median {med_all:.3f} s of 3 (target <= 1 s); without text "
          f"{statistics.median(t_rest):.3f} s; text check alone {med_text:.3f} s")
    if ref is not None:
        print(f"  rapidocr 1.4.4 full pipeline (det+cls+rec, its defaults) on the same image (baseline): {ref:.3f} s "
              f"({note}); ratio text-check / rapidocr = {med_text / ref:.3f}, all-checks / rapidocr = {med_all / ref:.3f}")
    else:
        print(f"  rapidocr baseline {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renders", type=int, default=6)
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--clean", type=int, default=40)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="only the speed part (a quiet window's worth)")
    args = ap.parse_args(argv)
    ok = True if args.speed_only else calibrate_text(args.renders, args.photos, args.clean)
    if not args.no_speed:
        speed_text()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
