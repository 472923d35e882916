"""Peak memory of line 2's x4 model upscale of a 1024-px image on the CPU, through the real server (issue 16).

A real photo (scikit-image's `astronaut`, 512 px, brought to 1024x1024 by Lanczos so the input is 1024 px)
is uploaded, then x4 by core `UpscaleModelLoader(RealESRGAN_x4plus.safetensors)` -> `ImageUpscaleWithModel`
(ComfyUI tiles it: 512-px tiles, 32-px overlap, 3x3 = 9 tiles for 1024 px) and, in the same run, by core
`ImageScaleBy(lanczos, 4)` (the plain baseline). Printed: the server's resident memory before and its peak
during each (sampled every 20 ms, `VmRSS` of main.py), the node's seconds, seconds per tile, the ratio.

    .venv/bin/python bench/upscale_memory.py [--size 1024] [--photo astronaut]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_upscale import PeakRSS, graph, run_timed, server_pid  # noqa: E402  (its path setup)
from comfy_server import ComfyProcess  # noqa: E402

from rezcty_core.factory.api import ComfyClient  # noqa: E402


def photo_at(name: str, side: int) -> np.ndarray:
    from skimage import data

    rgb = Image.fromarray(np.asarray(getattr(data, name)())[..., :3])
    scale = side / max(rgb.size)
    return np.asarray(rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.LANCZOS))


def tiles(w: int, h: int, tile: int = 512, overlap: int = 32) -> int:
    """ComfyUI's tiled_scale steps for one image (ImageUpscaleWithModel's 512/32)."""
    def n(side: int) -> int:
        return len(range(0, side, tile - overlap)) if side > tile else 1
    return n(w) * n(h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="upscale_memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="long side of the input image (default 1024)")
    ap.add_argument("--photo", default="astronaut", help="scikit-image photo name")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-upmem-"))
    server = ComfyProcess(work / "base", log_path=work / "server.log")
    rows = {}
    try:
        server.start()
        client = ComfyClient(server.url)
        pid = server_pid(server.proc.pid)
        src = work / "src"
        src.mkdir()
        rgb = photo_at(args.photo, args.size)
        path = src / f"{args.photo}_{args.size}.png"
        Image.fromarray(rgb).save(path)
        h, w = rgb.shape[:2]
        for method in ("lanczos", "esrgan"):
            with PeakRSS(pid) as mem:
                file, seconds = run_timed(client, graph(str(path), method), work / "out" / method)
            with Image.open(file) as im:
                assert (im.width, im.height) == (4 * w, 4 * h), im.size
            rows[method] = {"before": mem.before, "peak": mem.peak, "s": seconds}
            print(f"  {method:8s} {w}x{h} -> {4 * w}x{4 * h}: {seconds:.1f} s, server RSS {mem.before:.0f} MB before, "
                  f"peak {mem.peak:.0f} MB (+{mem.peak - mem.before:.0f} MB)", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    n = tiles(w, h)
    es, lz = rows["esrgan"], rows["lanczos"]
    print(f"\nx4 of a {w}x{h} image ({args.photo}) through the real server, CPU, {os.cpu_count()} cores")
    print(f"Real-ESRGAN x4plus: {n} tiles of 512 px, {es['s']:.0f} s ({es['s'] / n:.1f} s per tile), "
          f"{es['s'] / lz['s']:.0f}x the Lanczos x4 ({lz['s']:.2f} s)")
    print(f"server peak RSS: Real-ESRGAN {es['peak']:.0f} MB (+{es['peak'] - es['before']:.0f} MB above "
          f"{es['before']:.0f} MB before, model load included), Lanczos {lz['peak']:.0f} MB "
          f"(+{lz['peak'] - lz['before']:.0f} MB)")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
