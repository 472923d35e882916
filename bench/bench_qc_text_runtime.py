"""The QC text check on its two runtimes: onnxruntime (when installed) vs torch through onnx2torch (the path of an
environment with only the pack's requirements), seconds per 4 MP image, same boxes.

    ./rezcty bench qc_text_runtime

Each runtime: the models loaded once (not timed), then N clean and watermarked 4 MP renders: the text check alone on
1 and on 2 intra-op threads, and all checks (`measure_with_profile`, the QC Judge's own path: the detector on one
thread beside the technical checks).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("REZCTY_EMBEDDED_DIR", str(REPO / ".comfyui" / "embedded"))

from fixtures import qc_synth  # noqa: E402
from fixtures import qc_synth_text as synth_text  # noqa: E402

from rezcty_core.qc import text  # noqa: E402
from rezcty_core.qc.measure import measure_with_profile  # noqa: E402
from rezcty_core.qc.profiles import load_profile  # noqa: E402

N = int(os.environ.get("BENCH_N", "4"))


def images() -> list:
    out = []
    for i in range(N):
        clean = qc_synth.clean_image(900 + i, 2310, 1732)  # 4.0 MP
        out.append(synth_text.watermark(clean, "centre", opacity=0.6, height_pct=6, seed=i) if i % 2 else clean)
    return out


def main() -> None:
    imgs = images()
    profile = load_profile("adobe_stock")
    runtimes = [r for r in ("onnxruntime", "torch") if text.runtime_available(r)]
    print(f"load before: {os.getloadavg()[0]:.2f}")
    results = {}
    for rt in runtimes:
        for im in imgs:  # load the models and let torch meet every input shape once (not timed)
            text.detect_text(im, {"runtime": rt})
        alone = {}
        for threads in (1, 2):
            t0 = time.perf_counter()
            found = [text.detect_text(im, {"runtime": rt, "threads": threads})["text_box_list"] for im in imgs]
            alone[threads] = (time.perf_counter() - t0) / len(imgs)
        prof = {**profile, "text": {**profile["text"], "runtime": rt}}
        measure_with_profile(imgs[0], prof)
        t0 = time.perf_counter()
        for im in imgs:
            measure_with_profile(im, prof)
        full = (time.perf_counter() - t0) / len(imgs)
        results[rt] = found
        print(f"{rt:12s} text check alone {alone[1]:.3f} s (1 thread) / {alone[2]:.3f} s (2 threads) per 4 MP; "
              f"all QC checks {full:.3f} s per 4 MP (the detector on 1 thread beside them)")
    if len(results) == 2:
        same = results["onnxruntime"] == results["torch"]
        print(f"same boxes on both runtimes: {same}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
