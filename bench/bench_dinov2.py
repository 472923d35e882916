"""DINOv2 embed throughput: rezcty's embed path vs a naive per-image transformers loop, same model, same images.

    ./rezcty bench dinov2          # or: python bench/bench_dinov2.py [--images N] [--size WxH] [--gpu-large]

Figures, all measured in this run on 64 real-photo images (crops of the photos scikit-learn ships):
  1. naive loop: PIL open -> AutoImageProcessor -> Dinov2Model, one image at a time (the baseline)
  2. rezcty: load_image_rgb -> embed_images (batched, torch preprocessing), no cache   -> ratio vs 1
  3. training.precompute_dinov2 first run (computes + writes the cache) vs a fully cached re-run -> ratio
  4. with a GPU (or --gpu-large): DINOv2-large architecture, random weights, fp16: images/s and the share
     of the time spent outside the model's forward pass.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from image_samples import photo_crops  # noqa: E402
from PIL import Image  # noqa: E402

from rezcty_core.common.imageio import load_image_rgb  # noqa: E402
from rezcty_core.eye import dinov2 as vision  # noqa: E402


def write_images(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    paths = []
    for i, im in enumerate(photo_crops(count, size=size, seed=1)):
        paths.append(folder / f"img_{i:03d}.jpg")
        im.save(paths[-1], quality=92)
    return paths


def naive_loop(model_dir: Path, paths: list[Path]) -> tuple[float, list[torch.Tensor]]:
    """What one would write first with transformers: one image, one processor call, one forward."""
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():  # warm-up
        model(**processor(images=Image.open(paths[0]).convert("RGB"), return_tensors="pt"))
    feats = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            inputs = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
            feats.append(model(**inputs).last_hidden_state[0, 0])
    return time.perf_counter() - t0, feats


def rezcty_path(dino: vision.Dino, paths: list[Path], batch_size: int) -> tuple[float, list[torch.Tensor]]:
    vision.embed_images(dino, [load_image_rgb(paths[0])])  # warm-up (weights already loaded)
    t0 = time.perf_counter()
    embs = vision.embed_images(dino, [load_image_rgb(p) for p in paths], batch_size=batch_size)
    return time.perf_counter() - t0, [e.vector for e in embs]


def script_runs(images: Path, out: Path, batch_size: int) -> tuple[float, float]:
    from training.precompute_dinov2 import main

    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            code = main(["--images", str(images), "--out", str(out), "--batch-size", str(batch_size)])
        times.append(time.perf_counter() - t0)
        assert code == 0
    return times[0], times[1]


def gpu_large(count: int, size: tuple[int, int], batch_size: int) -> None:
    """DINOv2-large architecture (random weights) in fp16 on the GPU: images/s, share outside the forward."""
    from transformers import Dinov2Config, Dinov2Model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dinov2-large-random"
        config = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                              patch_size=14, image_size=518, layerscale_value=1.0)
        torch.manual_seed(0)
        Dinov2Model(config).save_pretrained(str(folder))
        dino = vision.Dino(folder, device="cuda", dtype="fp16")
        frames = [np.asarray(im) for im in photo_crops(count, size=size, seed=2)]
        forward_time = 0.0
        original = vision.forward

        def timed_forward(d, pixels, pooling):
            nonlocal forward_time
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = original(d, pixels, pooling)  # returns CPU tensors: includes the sync
            forward_time += time.perf_counter() - t
            return out

        vision.embed_images(dino, frames[:batch_size], batch_size=batch_size)  # warm-up
        vision.forward = timed_forward
        try:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            vision.embed_images(dino, frames, batch_size=batch_size)
            total = time.perf_counter() - t0
        finally:
            vision.forward = original
        print(f"GPU {torch.cuda.get_device_name(0)}: DINOv2-large (random weights, fp16), {count} images "
              f"{size[0]}x{size[1]}, batch {batch_size}: {count / total:.1f} images/s; "
              f"time outside the model forward: {100 * (total - forward_time) / total:.1f}% (target <= 20%)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", default="480x360", help="image size WxH (default 480x360)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--gpu-large", action="store_true", help="run the GPU part (default: when a GPU is present)")
    ap.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    args = ap.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    if not args.skip_cpu:
        dino = vision.load_dinov2("embedded", device="cpu", dtype="fp32")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "images"
            folder.mkdir()
            paths = write_images(folder, args.images, size)
            n = len(paths)
            t_naive, f_naive = naive_loop(dino.path, paths)
            _ = dino.model
            t_ours, f_ours = rezcty_path(dino, paths, args.batch_size)
            cos = torch.nn.functional.cosine_similarity(torch.stack(f_naive), torch.stack(f_ours)).min().item()
            print(f"same model ({dino.name}, {dino.device}, fp32), {n} images {size[0]}x{size[1]} JPEG, from disk:")
            print(f"  naive per-image transformers loop: {n / t_naive:6.2f} images/s ({t_naive:.2f} s)")
            print(f"  rezcty embed path (batch {args.batch_size}):      {n / t_ours:6.2f} images/s ({t_ours:.2f} s)"
                  f"  -> ratio {t_naive / t_ours:.2f}x (target >= 1.3)")
            print(f"  agreement with the naive loop: min cosine {cos:.4f} (PIL vs torch bicubic resize)")
            first, cached = script_runs(folder, Path(tmp) / "feats", args.batch_size)
            print(f"  precompute_dinov2 first run {first:.2f} s, fully cached re-run {cached:.3f} s "
                  f"-> {first / cached:.0f}x faster (target >= 50)")
            with tempfile.TemporaryDirectory() as cache:
                frames = [load_image_rgb(p) for p in paths]
                t0 = time.perf_counter()
                vision.embed_images(dino, frames, cache_dir=cache, batch_size=args.batch_size)
                t_fill = time.perf_counter() - t0
                t0 = time.perf_counter()
                vision.embed_images(dino, frames, cache_dir=cache, batch_size=args.batch_size)
                t_hit = time.perf_counter() - t0
            print(f"  node path (decoded images in memory): compute {t_fill:.2f} s, all cached {t_hit:.3f} s "
                  f"-> {t_fill / t_hit:.0f}x")
    if args.gpu_large or torch.cuda.is_available():
        if torch.cuda.is_available():
            gpu_large(args.images, size, args.batch_size)
        else:
            print("no GPU: skipping the DINOv2-large fp16 figure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
