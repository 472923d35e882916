"""LoRA training benchmarks.

1. Bucketing: 5,000 synthetic image sizes (aspect 1:4..4:1) bucketed for SD 1.5 (512^2 area, 256..1024,
   step 64): worst aspect-ratio error, worst crop, upscaling — against the plain baseline of one square
   512x512 centre crop for every image.
2. Cached latents vs encoding every step: train_lora's own step (latents -> noise -> UNet -> loss ->
   backward) on the tiny SD 1.5 checkpoint, with latents read from the disk cache vs VAE-encoded each step.
3. With a CUDA GPU only: the real-size SD 1.5 UNet architecture (random weights) at 512, batch 1, LoRA
   rank 128, fp16 + gradient checkpointing + AdamW8bit: steps/s and peak memory (target: a 16 GB T4).

    python bench/bench_lora_training.py [--steps N] [--resolution PX]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))


def bench_bucketing(n: int = 5000) -> None:
    from rezcty_core.sd.buckets import BucketSpec, bucket_for, distortion

    spec = BucketSpec(512, 256, 1024, 64)
    rng = np.random.default_rng(0)
    rows, skipped = [], 0
    square_crop = []
    for _ in range(n):
        aspect = float(np.exp(rng.uniform(math.log(1 / 4), math.log(4))))
        long_side = float(rng.uniform(512, 6000))
        w, h = (int(long_side), int(long_side / aspect)) if aspect >= 1 else (int(long_side * aspect), int(long_side))
        square_crop.append(1 - min(w, h) / max(w, h))  # a 512x512 centre crop loses this fraction
        b = bucket_for(w, h, spec)
        if b is None:
            skipped += 1
            continue
        rows.append(distortion(w, h, b))
    worst_ar = max(r["aspect_error"] for r in rows)
    print(f"bucketing: {len(rows)}/{n} images bucketed ({skipped} would need upscaling to reach 256 px: skipped)")
    print(f"  worst aspect-ratio error   {100 * (math.exp(worst_ar) - 1):.2f} %   (stretch: none, resize keeps the ratio)")
    print(f"  worst crop                 {max(r['crop_px'] for r in rows)} px (< one 64-px bucket step), "
          f"{100 * max(r['crop_fraction'] for r in rows):.2f} % of the image")
    print(f"  mean crop                  {100 * np.mean([r['crop_fraction'] for r in rows]):.2f} %")
    print(f"  max upscale factor         {max(r['upscale'] for r in rows):.3f} (<= 1: never upscaled)")
    base_mean, base_worst = 100 * np.mean(square_crop), 100 * max(square_crop)
    print(f"  baseline square 512 crop:  mean {base_mean:.2f} % lost, worst {base_worst:.2f} % lost")
    print(f"  ratio mean crop baseline / bucketed: {base_mean / max(100 * np.mean([r['crop_fraction'] for r in rows]), 1e-9):.1f}x")


def bench_cached_latents(steps: int, resolution: int) -> None:
    import torch
    from tiny_dataset import make_dataset

    from harness import tiny_sd15_checkpoint
    from training import train_lora as tl

    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "sets", size=resolution // 2)
        args = tl.parse_args(["--data", str(data / "2_rezcty_style"), "--base", str(tiny_sd15_checkpoint()),
                              "--out", str(Path(tmp) / "o.safetensors"), "--trigger", "rezcty_style", "--rank", "4",
                              "--resolution", str(resolution), "--min-bucket-reso", str(resolution // 2),
                              "--max-bucket-reso", str(resolution), "--optimizer", "AdamW", "--device", "cpu"])
        rt = tl.pick_runtime(args)
        model = tl.load_base(args, rt)
        items = tl.assign_buckets(tl.scan_dataset(args.data), args)
        tl.cache_latents(items, model, Path(tmp) / "cache")
        net = tl.add_lora(model, args)
        opt = tl.make_optimizer(args, [{"params": net.unet_parameters(), "lr": 1e-4}], rt.device)
        prompt_cache: dict = {}
        gen = torch.Generator().manual_seed(0)

        def run(cached: bool) -> float:
            stream = tl.BatchStream(items, 1, 0)
            times = []
            for i in range(steps + 1):
                t0 = time.perf_counter()
                batch = stream.next()
                loss = tl.diffusion_loss(model, tl.batch_latents(batch, model, cached, gen), [it.caption for it in batch],
                                         rt, args, gen, prompt_cache)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if i:  # the first step warms up
                    times.append(time.perf_counter() - t0)
            return float(np.median(times))

        cached, encoded = run(True), run(False)
    print(f"cached latents vs VAE-encoding every step (tiny SD 1.5, {resolution}-px buckets, CPU, median of {steps}):")
    print(f"  cached  {cached:.3f} s/step")
    print(f"  encoded {encoded:.3f} s/step")
    print(f"  ratio encoded / cached: {encoded / cached:.2f}x")


def bench_gpu_full_unet(steps: int = 20) -> None:
    import torch

    if not torch.cuda.is_available():
        print("full-size SD 1.5 UNet at 512 on GPU: skipped (no CUDA GPU on this machine)")
        return
    import bitsandbytes as bnb
    from diffusers import UNet2DConditionModel

    from rezcty_core.sd.lora_export import inject_lora

    dev = torch.device("cuda")
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2).to(dev, torch.float16)
    unet.requires_grad_(False)
    unet.enable_gradient_checkpointing()
    net = inject_lora(unet, None, rank=128, alpha=64)
    opt = bnb.optim.AdamW8bit(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    lat = torch.randn(1, 4, 64, 64, device=dev)
    ctx = torch.randn(1, 77, 768, device=dev, dtype=torch.float16)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16):
            pred = unet(lat.half(), torch.tensor([500], device=dev), ctx).sample
        loss = torch.nn.functional.mse_loss(pred.float(), lat)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"full-size SD 1.5 UNet, 512 px, batch 1, rank 128, fp16 + checkpointing + AdamW8bit on "
          f"{torch.cuda.get_device_name()}: {1 / np.median(times):.2f} steps/s, peak {peak:.2f} GiB "
          f"({'fits' if peak < 12 else 'does NOT fit'} a 16 GB T4 with 4 GB to spare)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=256)
    args = ap.parse_args(argv)
    bench_bucketing()
    bench_cached_latents(args.steps, args.resolution)
    bench_gpu_full_unet()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
