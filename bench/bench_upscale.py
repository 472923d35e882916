"""Line 2's x4 upscale stage through the real server: embedded Real-ESRGAN x4plus against plain Lanczos.

Real photographs (scikit-image's bundled ones) reduced to 512-class size (long side <= 512), uploaded
to the server, then x4 in the same run by
  * `UpscaleModelLoader(RealESRGAN_x4plus.safetensors)` -> `ImageUpscaleWithModel` (core nodes, the
    embedded model; ComfyUI tiles at 512 px with 32 px overlap), and
  * core `ImageScaleBy(lanczos, 4)`, the plain baseline.
Figures: the share of photos that pass QC's blur check (`rezcty_core.qc.sharpness`, profile `adobe_stock`)
among those whose original passes (target for Real-ESRGAN: >= 95 %), seconds of the upscale node per
512x512 -> 2048x2048 as a ratio to Lanczos (from the server's own `executing` events, so PNG saving is
not counted), and the server's peak resident memory during each upscale above its level before.

    ./rezcty bench upscale                         # 7 photos, long side 512 (CPU: several minutes)
    .venv/bin/python bench/bench_upscale.py --size 256 --photos astronaut,coffee   # quicker look
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))

from comfy_server import ComfyProcess  # noqa: E402

from rezcty_core.factory.api import ComfyClient  # noqa: E402
from rezcty_core.qc.measure import measure  # noqa: E402
from rezcty_core.qc.profiles import load_profile  # noqa: E402
from rezcty_core.qc.verdict import failed_checks  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "rocket", "retina"]
MODEL = "RealESRGAN_x4plus.safetensors"


def reduced(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    original = np.asarray(getattr(data, name)())[..., :3]
    h, w = original.shape[:2]
    scale = min(1.0, size / max(h, w))
    small = Image.fromarray(original).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return original, np.asarray(small)


def graph(image: str, method: str) -> dict:
    g = {"load": {"class_type": "LoadImage", "inputs": {"image": image}}}
    if method == "esrgan":
        g["model"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": MODEL}}
        g["up"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["model", 0], "image": ["load", 0]}}
    else:
        g["up"] = {"class_type": "ImageScaleBy", "inputs": {"image": ["load", 0], "upscale_method": "lanczos", "scale_by": 4.0}}
    g["save"] = {"class_type": "SaveImage", "inputs": {"images": ["up", 0], "filename_prefix": f"bench_{method}"}}
    return g


def server_pid(proc_group: int) -> int:
    """The ComfyUI main.py process in the server's process group (`./rezcty comfy` execs into it)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != proc_group:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if any(part.endswith(b"main.py") for part in cmd):
            return int(entry)
    return proc_group


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRSS:
    """Samples a process's resident memory every 20 ms while active."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self) -> PeakRSS:
        self.before = rss_mb(self.pid)
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_timed(client: ComfyClient, g: dict, out: Path) -> tuple[Path, float]:
    """Run a graph; return the saved image and the seconds the `up` node took (server-side events)."""
    stamps: dict[str, float] = {}

    def on_event(msg: dict) -> None:
        if msg.get("type") == "executing":
            stamps.setdefault(str(msg["data"].get("node")), time.perf_counter())

    result = client.run(g, out_dir=out, on_event=on_event, validate=False)
    start, end = stamps.get("up"), stamps.get("save") or stamps.get("None")
    seconds = (end - start) if start is not None and end is not None else float("nan")
    return result.files[0], seconds


def blur_of(rgb: np.ndarray, profile: dict) -> tuple[float | None, bool]:
    m = measure(rgb, min_pixels=1)
    failed = [f for f in failed_checks(m, profile) if f["check"] == "blur"]
    return m.get("blur_sigma_px"), not failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_upscale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="long side of the reduced photos (default 512)")
    ap.add_argument("--photos", default=",".join(PHOTOS), help="scikit-image photo names, comma-separated")
    args = ap.parse_args(argv)
    names = [n for n in args.photos.split(",") if n]
    profile = load_profile("adobe_stock")
    limit = profile["checks"]["blur"]["max"]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-upscale-"))
    server = ComfyProcess(work / "base", log_path=work / "server.log")
    rows = []
    try:
        server.start()
        client = ComfyClient(server.url)
        pid = server_pid(server.proc.pid)
        src_dir, out_dir = work / "src", work / "out"
        src_dir.mkdir()
        # warm-up: loads the model once, so per-photo times are the upscale itself
        warm = src_dir / "warm.png"
        Image.fromarray(reduced("astronaut", 32)[1]).save(warm)
        run_timed(client, graph(str(warm), "esrgan"), out_dir / "warm")
        for name in names:
            original, small = reduced(name, args.size)
            path = src_dir / f"{name}.png"
            Image.fromarray(small).save(path)
            row = {"name": name, "size": f"{small.shape[1]}x{small.shape[0]}"}
            row["orig_blur"], row["orig_pass"] = blur_of(original, profile)
            for method in ("lanczos", "esrgan"):
                with PeakRSS(pid) as mem:
                    file, seconds = run_timed(client, graph(str(path), method), out_dir / method)
                up = np.asarray(Image.open(file).convert("RGB"))
                assert up.shape[:2] == (small.shape[0] * 4, small.shape[1] * 4), up.shape
                blur, ok = blur_of(up, profile)
                row[method] = {"blur": blur, "pass": ok, "s": seconds, "mpx": small.shape[0] * small.shape[1] / 512 ** 2,
                               "peak_mb": mem.peak - mem.before, "rss_mb": mem.peak}
            rows.append(row)
            print(f"  {name:22s} {row['size']:>8s}  original blur {row['orig_blur']}  lanczos {row['lanczos']['blur']} "
                  f"({row['lanczos']['s']:.2f} s)  esrgan {row['esrgan']['blur']} ({row['esrgan']['s']:.1f} s)", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    def fmt(v):
        return "-" if v is None else f"{v:.2f}"

    print(f"\nx4 upscale through the real server, {os.cpu_count()} CPU cores, photos long side <= {args.size}, "
          f"QC blur limit {limit} px (adobe_stock)")
    print(f"{'photo':22s} {'input':>8s} {'original':>9s} {'lanczos':>8s} {'esrgan':>8s}   blur sigma px (* = fails)")
    for r in rows:
        marks = [fmt(r["orig_blur"]) + ("" if r["orig_pass"] else "*")]
        marks += [fmt(r[m]["blur"]) + ("" if r[m]["pass"] else "*") for m in ("lanczos", "esrgan")]
        print(f"{r['name']:22s} {r['size']:>8s} {marks[0]:>9s} {marks[1]:>8s} {marks[2]:>8s}")
    base = [r for r in rows if r["orig_pass"]]
    for m, label in (("lanczos", "Lanczos x4 (ImageScaleBy)"), ("esrgan", f"Real-ESRGAN x4plus ({MODEL})")):
        n = sum(1 for r in base if r[m]["pass"])
        share = 100.0 * n / len(base) if base else float("nan")
        print(f"blur pass, {label}: {n}/{len(base)} of the photos whose original passes ({share:.0f} %)")
    per = {m: [r[m]["s"] / r[m]["mpx"] for r in rows if r[m]["s"] == r[m]["s"]] for m in ("lanczos", "esrgan")}
    if per["lanczos"] and per["esrgan"]:
        lz, es = float(np.median(per["lanczos"])), float(np.median(per["esrgan"]))
        print(f"speed per 512x512 -> 2048x2048 (median over photos, scaled by pixels): Lanczos {lz:.2f} s, "
              f"Real-ESRGAN {es:.1f} s, ratio {es / lz:.0f}x")
    for m in ("lanczos", "esrgan"):
        peak = max((r[m]["peak_mb"] for r in rows), default=0.0)
        rss = max((r[m]["rss_mb"] for r in rows), default=0.0)
        print(f"server peak RSS during {m}: +{peak:.0f} MB above its level before (peak {rss:.0f} MB in all)")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
