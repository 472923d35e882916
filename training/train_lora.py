"""Train an SD 1.5 LoRA (rezcty_style / rezcty_structure) on a kohya-style folder; ComfyUI loads the result.

    python -m training.train_lora --data DIR --base CKPT --out FILE --trigger WORD [--role style|structure]

Recipe: lint the captions (refuse on violations) -> load the single-file checkpoint offline ->
bucket the images by aspect ratio and cache their VAE latents on disk -> add LoRA to the UNet
(and, with --train-text-encoder, to CLIP) -> train the noise-prediction loss (plus the prior loss
on class images when given) -> write a kohya-format .safetensors with the rezcty metadata.
A checkpoint folder `OUT.state/` is written every --save-every steps; --resume continues from it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rezcty_core.sd.sd15 import encode_prompts

ROLE_DEFAULTS = {"style": (64, 32.0), "structure": (16, 8.0)}  # BRIEF: rank 64-128 / 16-32, alpha = rank/2
OPTIMIZERS = ("auto", "AdamW", "AdamW8bit", "Prodigy", "Lion")
SCHEDULERS = ("cosine_with_restarts", "cosine", "constant", "constant_with_warmup", "linear", "polynomial")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.train_lora", description=__doc__.splitlines()[0])
    io = ap.add_argument_group("data and files")
    io.add_argument("--data", required=True, type=Path, help="images + .txt captions; kohya `N_name` folders repeat N times")
    io.add_argument("--base", required=True, type=Path, help="SD 1.5 single-file checkpoint (.safetensors/.ckpt)")
    io.add_argument("--out", required=True, type=Path, help="LoRA file to write (.safetensors), e.g. models/loras/rezcty_style.safetensors")
    io.add_argument("--trigger", required=True, help="trigger word that ends every caption, e.g. rezcty_style")
    io.add_argument("--role", choices=("style", "structure"), default="style", help="sets rank/alpha defaults (style 64/32, structure 16/8)")
    io.add_argument("--class-data", type=Path, default=None, help="class / prior-preservation images (optional)")
    io.add_argument("--class-name", default="style", help="caption of class images that have no .txt (only used with --class-data)")
    io.add_argument("--prior-loss-weight", type=float, default=1.0)
    io.add_argument("--cache-dir", type=Path, default=None, help="latent cache (default DATA/.rezcty_cache/latents)")
    io.add_argument("--no-cache-latents", dest="cache_latents", action="store_false",
                    help="encode images with the VAE every step instead of caching latents on disk")
    io.add_argument("--allow-caption-violations", action="store_true", help="train even if the caption linter complains")

    net = ap.add_argument_group("network")
    net.add_argument("--rank", type=int, default=None, help="network_dim (default from --role)")
    net.add_argument("--alpha", type=float, default=None, help="network_alpha (default from --role: rank/2)")
    net.add_argument("--dropout", type=float, default=0.0)
    net.add_argument("--train-text-encoder", action="store_true", help="also train a LoRA on the CLIP text encoder")

    opt = ap.add_argument_group("optimisation")
    opt.add_argument("--max-steps", type=int, default=1500)
    opt.add_argument("--batch-size", type=int, default=1)
    opt.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default="auto", help="auto: AdamW8bit on CUDA, AdamW on CPU")
    opt.add_argument("--lr", type=float, default=None, help="UNet learning rate (default 1e-4; Prodigy 1.0)")
    opt.add_argument("--te-lr", type=float, default=None, help="text-encoder LoRA learning rate (default lr/2)")
    opt.add_argument("--weight-decay", type=float, default=0.01)
    opt.add_argument("--lr-scheduler", choices=SCHEDULERS, default="cosine_with_restarts")
    opt.add_argument("--lr-warmup-steps", type=int, default=0)
    opt.add_argument("--lr-restarts", type=int, default=3, help="cycles of cosine_with_restarts")
    opt.add_argument("--noise-offset", type=float, default=0.0)
    opt.add_argument("--max-grad-norm", type=float, default=1.0)
    opt.add_argument("--seed", type=int, default=42)

    res = ap.add_argument_group("buckets")
    res.add_argument("--resolution", type=int, default=512, help="target area is resolution^2")
    res.add_argument("--min-bucket-reso", type=int, default=256)
    res.add_argument("--max-bucket-reso", type=int, default=1024)
    res.add_argument("--bucket-step", type=int, default=64)

    hw = ap.add_argument_group("hardware")
    hw.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    hw.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto", help="auto: fp16 on CUDA")
    hw.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None, help="default: on with CUDA")
    hw.add_argument("--save-precision", choices=("fp16", "bf16", "fp32"), default="fp16")

    run = ap.add_argument_group("checkpoints and samples")
    run.add_argument("--save-every", type=int, default=250, help="write the resumable checkpoint every N steps")
    run.add_argument("--resume", action="store_true", help="continue from OUT.state/ if present")
    run.add_argument("--sample-every", type=int, default=0, help="render a sample every N steps (0: never)")
    run.add_argument("--sample-prompt", default=None, help="default: the first caption")
    run.add_argument("--sample-steps", type=int, default=20)
    run.add_argument("--sample-size", type=int, default=None, help="sample width/height (default --resolution)")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    rank, alpha = ROLE_DEFAULTS[args.role]
    args.rank = args.rank or rank
    args.alpha = args.alpha or (alpha if args.rank == rank else args.rank / 2)
    return args


class TrainingError(RuntimeError):
    """A one-line, user-facing reason to stop (bad data, bad flags)."""


# ---- set-up ---------------------------------------------------------------------------------------------

@dataclass
class Runtime:
    device: object  # torch.device
    weight_dtype: object  # torch dtype of the frozen base weights
    autocast_dtype: object | None
    gradient_checkpointing: bool


def pick_runtime(args: argparse.Namespace) -> Runtime:

    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked but no CUDA GPU is available")
    device = torch.device(name)
    mp = args.mixed_precision
    if mp == "auto":  # the pack's precision policy: fp32 on the CPU, bf16 on compute capability >= 8.0, fp16 below
        from rezcty_core.common.precision import choose_precision

        mp = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[choose_precision(str(device), training=True).dtype]
    if mp != "no" and device.type != "cuda":
        raise TrainingError(f"--mixed-precision {mp} needs a CUDA GPU; use --mixed-precision no on CPU")
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mp]
    gc = args.gradient_checkpointing if args.gradient_checkpointing is not None else device.type == "cuda"
    return Runtime(device, dtype, None if mp == "no" else dtype, gc)


def lint_or_refuse(data: Path, trigger: str | None, allowed: bool, tool: str = "train_lora", lists=None) -> None:
    """The linter runs first; violations stop training unless --allow-caption-violations."""
    from rezcty_core.sd.captions import lint_folder

    reports = [r for r in lint_folder(data, trigger=trigger, lists=lists) if r.violations]
    if not reports:
        return
    for r in reports[:20]:
        print(f"{r.path}: " + "; ".join(str(v) for v in r.violations), file=sys.stderr)
    if len(reports) > 20:
        print(f"... and {len(reports) - 20} more", file=sys.stderr)
    if not allowed:
        raise TrainingError(f"{len(reports)} caption file(s) in {data} break the caption rules; run "
                            f"`python -m training.lint_captions {data} --fix`, or pass --allow-caption-violations")
    print(f"[{tool}] training despite {len(reports)} caption violation(s)", file=sys.stderr)


def load_base(args: argparse.Namespace, rt: Runtime):
    """The user's SD 1.5 checkpoint, offline; frozen weights in the run's precision."""
    from rezcty_core.sd.sd15 import CheckpointError, load_sd15

    try:
        model = load_sd15(args.base, dtype=rt.weight_dtype, device=str(rt.device))
    except CheckpointError as e:
        raise TrainingError(str(e)) from None

    model.vae.to(dtype=torch.float32)  # SD's VAE overflows in fp16; it only runs to cache latents
    if rt.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if args.__dict__.get("train_text_encoder") or args.__dict__.get("token"):
            model.text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


# ---- data -----------------------------------------------------------------------------------------------

@dataclass
class Item:
    image: Path
    caption: str
    repeats: int
    size: tuple[int, int]
    bucket: tuple[int, int] | None = None
    latent: Path | None = None


def scan_dataset(root: Path, default_caption: str | None = None) -> list[Item]:
    """Images under `root` (kohya `N_name` folders give N repeats) with their .txt captions."""
    from PIL import Image

    from rezcty_core.sd.captions import KOHYA_FOLDER, read_caption

    if not root.is_dir():
        raise TrainingError(f"{root}: data folder not found")
    items = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_EXTS or any(p.startswith(".") for p in rel.parts):
            continue
        m = KOHYA_FOLDER.match(path.parent.name)
        repeats = int(m.group(1)) if m and path.parent != root else 1
        txt = path.with_suffix(".txt")
        try:
            caption = read_caption(txt) if txt.exists() else default_caption
            with Image.open(path) as im:
                size = im.size
        except (ValueError, OSError) as e:
            raise TrainingError(f"{path}: cannot read ({e})") from None
        if not caption:
            raise TrainingError(f"{path}: no caption ({txt.name} missing)")
        items.append(Item(path, caption, max(repeats, 1), size))
    if not items:
        raise TrainingError(f"{root}: no images found ({', '.join(IMAGE_EXTS)})")
    return items


def assign_buckets(items: list[Item], args: argparse.Namespace) -> list[Item]:
    """Bucket each image (no upscaling); images too small for --min-bucket-reso are skipped with a note."""
    from rezcty_core.sd.buckets import BucketSpec, bucket_for

    try:
        spec = BucketSpec(args.resolution, args.min_bucket_reso, args.max_bucket_reso, args.bucket_step)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    kept = []
    for it in items:
        it.bucket = bucket_for(*it.size, spec)
        if it.bucket is None:
            print(f"{it.image}: skipped, {it.size[0]}x{it.size[1]} is too small for --min-bucket-reso "
                  f"{args.min_bucket_reso} without upscaling", file=sys.stderr)
        else:
            kept.append(it)
    if not kept:
        raise TrainingError(f"{args.data}: no image fits a bucket (lower --min-bucket-reso?)")
    return kept


def load_pixels(item: Item):
    """Bucket-sized pixels in [-1, 1], CHW float tensor."""
    import numpy as np

    from rezcty_core.common.imageio import ImageLoadError, load_image_rgb
    from rezcty_core.sd.buckets import fit_to_bucket

    try:
        arr = fit_to_bucket(load_image_rgb(item.image), item.bucket)
    except ImageLoadError as e:
        raise TrainingError(str(e)) from None
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float() / 127.5 - 1.0


def encode_latent_dist(model, pixels):
    """VAE posterior (mean, std) for one image; sampled each step, as the VAE would."""

    with torch.no_grad():
        dist = model.vae.encode(pixels[None].to(model.vae.device, torch.float32)).latent_dist
    return dist.mean[0].cpu(), dist.std[0].cpu()


def cache_latents(items: list[Item], model, cache_dir: Path) -> None:
    """Encode every (image, bucket) once; files are keyed by image bytes + bucket + base model hash."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for it in items:
        key = hashlib.sha256(it.image.read_bytes() + f"|{it.bucket}|{model.sha256}".encode()).hexdigest()[:32]
        it.latent = cache_dir / f"{key}.safetensors"
        if not it.latent.exists():
            todo.append(it)
    for it in tqdm(todo, desc="caching latents", unit="img", disable=not todo):
        mean, std = encode_latent_dist(model, load_pixels(it))
        tmp = it.latent.with_suffix(".tmp")
        save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(tmp))
        tmp.replace(it.latent)
    for it in items:  # a truncated file from an earlier crash is re-encoded
        try:
            load_file(str(it.latent))
        except Exception:
            mean, std = encode_latent_dist(model, load_pixels(it))
            save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(it.latent))


def epoch_batches(items: list[Item], batch_size: int, seed: int, epoch: int) -> list[list[Item]]:
    """Batches of one epoch (repeats included), same-bucket only, in a seeded order."""
    import numpy as np

    from rezcty_core.sd.buckets import batches

    by_bucket: dict = {}
    for idx, it in enumerate(items):
        by_bucket.setdefault(it.bucket, []).extend([idx] * it.repeats)
    rng = np.random.default_rng([seed, epoch])
    return [[items[i] for i in b] for b in batches(by_bucket, batch_size, rng)]


class BatchStream:
    """Endless seeded batches; `skip(n)` replays the order, so a resumed run sees the same data."""

    def __init__(self, items: list[Item], batch_size: int, seed: int):
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.epoch, self.pos, self.current = 0, 0, epoch_batches(items, batch_size, seed, 0)

    def next(self) -> list[Item]:
        if self.pos >= len(self.current):
            self.epoch += 1
            self.pos, self.current = 0, epoch_batches(self.items, self.batch_size, self.seed, self.epoch)
        batch = self.current[self.pos]
        self.pos += 1
        return batch

    def skip(self, n: int) -> None:
        for _ in range(n):
            self.next()


def batch_latents(batch: list[Item], model, cached: bool, generator):
    """Scaled latents for a batch: from the disk cache (mean + std * noise) or by encoding now."""
    from safetensors.torch import load_file

    out = []
    for it in batch:
        if cached:
            d = load_file(str(it.latent))
            mean, std = d["mean"], d["std"]
        else:
            mean, std = encode_latent_dist(model, load_pixels(it))
        out.append(mean + std * torch.randn(mean.shape, generator=generator))
    return torch.stack(out) * model.vae.config.scaling_factor


# ---- network and optimiser ------------------------------------------------------------------------------

def add_lora(model, args: argparse.Namespace):
    from rezcty_core.sd.lora_export import inject_lora

    te = model.text_encoder if args.train_text_encoder else None
    net = inject_lora(model.unet, te, args.rank, args.alpha, args.dropout)
    net.train()
    return net


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum; one state tensor, lr ~3-10x below AdamW."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                momentum = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(momentum * beta1 + p.grad * (1 - beta1)), alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def make_optimizer(args: argparse.Namespace, groups: list[dict], device) -> object:
    """AdamW, AdamW8bit (bitsandbytes, CUDA), Prodigy (lr ~1.0) or Lion over the parameter groups."""

    name = args.optimizer
    if name == "auto":
        name = "AdamW8bit" if device.type == "cuda" else "AdamW"
    args.optimizer_resolved = name
    if name == "AdamW":
        return torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    if name == "AdamW8bit":
        if device.type != "cuda":
            raise TrainingError("--optimizer AdamW8bit needs a CUDA GPU (bitsandbytes); use AdamW on CPU")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, weight_decay=args.weight_decay)
    if name == "Prodigy":
        from prodigyopt import Prodigy

        return Prodigy(groups, weight_decay=args.weight_decay, safeguard_warmup=True, use_bias_correction=True)
    return Lion(groups, weight_decay=args.weight_decay)


def default_lr(args: argparse.Namespace) -> float:
    if args.lr is not None:
        return args.lr
    return 1.0 if args.optimizer == "Prodigy" else 1e-4


def make_scheduler(args: argparse.Namespace, optimizer):
    from diffusers.optimization import get_scheduler

    kwargs = {"num_cycles": args.lr_restarts} if args.lr_scheduler == "cosine_with_restarts" else {}
    return get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps,
                         num_training_steps=args.max_steps, **kwargs)


# ---- checkpoints ----------------------------------------------------------------------------------------

def state_dir(out: Path) -> Path:
    return out.with_name(out.stem + ".state")


RESUME_MUST_MATCH = ("trigger", "role", "rank", "alpha", "train_text_encoder", "seed", "batch_size", "token", "num_vectors")


def save_checkpoint(out: Path, step: int, trainable: dict, optimizer, scheduler, scaler, args, batches_done: int) -> Path:
    """Everything needed to continue: trainable tensors, optimiser/scheduler/scaler state, RNG, step."""
    import os


    folder = state_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "step": step, "batches_done": batches_done, "trainable": {k: v.detach().cpu() for k, v in trainable.items()},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "args": {k: v for k, v in vars(args).items() if k in RESUME_MUST_MATCH},
    }
    tmp = folder / f"state.pt.tmp{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, folder / "state.pt")
    return folder / "state.pt"


def load_checkpoint(out: Path, args) -> dict | None:

    path = state_dir(out) / "state.pt"
    if not path.exists():
        print(f"[resume] no checkpoint at {path}; starting from step 0", file=sys.stderr)
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise TrainingError(f"{path}: unreadable checkpoint ({type(e).__name__}); delete it to start over") from None
    for key, old in payload["args"].items():
        if getattr(args, key, None) != old:
            raise TrainingError(f"{path}: checkpoint was made with --{key.replace('_', '-')} {old}, "
                                f"this run has {getattr(args, key, None)}; use the same value or a new --out")
    return payload


def restore_checkpoint(payload: dict, trainable: dict, optimizer, scheduler, scaler) -> None:

    with torch.no_grad():
        for k, v in trainable.items():
            v.copy_(payload["trainable"][k])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["rng"]["torch"])
    random.setstate(payload["rng"]["python"])
    if payload["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng"]["cuda"])


# ---- the loop -------------------------------------------------------------------------------------------

def encode_cached(model, prompts: list[str], rt: Runtime, cache: dict):
    """Text encodings of a frozen text encoder, computed once per distinct caption."""
    for p in set(prompts) - set(cache):
        with torch.no_grad(), torch.autocast(rt.device.type, dtype=rt.autocast_dtype, enabled=rt.autocast_dtype is not None):
            cache[p] = encode_prompts(model, [p], rt.device)[0]
    return torch.stack([cache[p] for p in prompts])


def diffusion_loss(model, latents, prompts: list[str], rt: Runtime, args, generator, prompt_cache: dict | None = None):
    """SD's epsilon-prediction MSE at a random timestep (prompt_cache: reuse encodings of a frozen text encoder)."""
    import torch.nn.functional as F

    latents = latents.to(rt.device)
    noise = torch.randn(latents.shape, generator=generator).to(rt.device)
    if args.noise_offset:
        noise = noise + args.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator).to(rt.device)
    t = torch.randint(0, model.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    t = t.to(rt.device)
    noisy = model.noise_scheduler.add_noise(latents, noise, t)
    with torch.autocast(rt.device.type, dtype=rt.autocast_dtype, enabled=rt.autocast_dtype is not None):
        if prompt_cache is not None:
            context = encode_cached(model, prompts, rt, prompt_cache)
        else:
            context = encode_prompts(model, prompts, rt.device)
        pred = model.unet(noisy.to(rt.weight_dtype), t, context.to(rt.weight_dtype)).sample
    return F.mse_loss(pred.float(), noise.float())


def optimizer_step(micro_batch_loss, params: list, optimizer, scheduler, scaler, args, step: int) -> float:
    """One optimiser step over --grad-accum micro-batches (fp16 loss scaling, gradient clipping); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(args.grad_accum):
        loss = micro_batch_loss()
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step + 1}; lower --lr")
        loss = loss / args.grad_accum
        (scaler.scale(loss) if scaler else loss).backward()
        total += loss.item()
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    return total


def render_sample(model, prompt: str, path: Path, args, rt: Runtime, seed: int) -> Path:
    """A quick render with the LoRA active (Euler), saved as PNG."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=EulerDiscreteScheduler.from_config(model.noise_scheduler.config, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    size = args.sample_size or args.resolution
    was_training = model.unet.training
    model.unet.eval()
    with torch.no_grad(), torch.autocast(rt.device.type, dtype=rt.autocast_dtype, enabled=rt.autocast_dtype is not None):
        image = pipe(prompt, num_inference_steps=args.sample_steps, height=size, width=size,
                     generator=torch.Generator("cpu").manual_seed(seed), guidance_scale=7.0).images[0]
    model.unet.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def train(args: argparse.Namespace) -> Path:
    from tqdm import tqdm

    rt = pick_runtime(args)
    lint_or_refuse(args.data, args.trigger, args.allow_caption_violations)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = load_base(args, rt)

    items = assign_buckets(scan_dataset(args.data), args)
    class_items = assign_buckets(scan_dataset(args.class_data, args.class_name), args) if args.class_data else []
    if args.cache_latents:
        cache_latents(items + class_items, model, args.cache_dir or args.data / ".rezcty_cache" / "latents")
    if not args.train_text_encoder:
        model.text_encoder.to(rt.device)

    network = add_lora(model, args)
    lr = default_lr(args)
    groups = [{"params": network.unet_parameters(), "lr": lr}]
    if args.train_text_encoder:
        groups.append({"params": network.te_parameters(), "lr": args.te_lr or lr / 2})
    optimizer = make_optimizer(args, groups, rt.device)
    scheduler = make_scheduler(args, optimizer)
    scaler = torch.amp.GradScaler("cuda") if rt.autocast_dtype == torch.float16 else None
    trainable = dict(network.named_parameters())

    start, batches_done = 0, 0
    payload = load_checkpoint(args.out, args) if args.resume else None
    if payload:
        restore_checkpoint(payload, trainable, optimizer, scheduler, scaler)
        start, batches_done = payload["step"], payload["batches_done"]
        print(f"[train_lora] resumed from step {start} ({state_dir(args.out)})", flush=True)
    stream = BatchStream(items, args.batch_size, args.seed)
    stream.skip(batches_done)
    class_stream = BatchStream(class_items, args.batch_size, args.seed + 1) if class_items else None
    if class_stream:
        class_stream.skip(batches_done)
    generator = torch.Generator().manual_seed(args.seed * 100003 + start)
    prompt_cache = None if args.train_text_encoder else {}

    bar = tqdm(total=args.max_steps, initial=start, desc=f"train_lora {args.trigger}", unit="step", dynamic_ncols=True)
    step = start

    def micro_batch_loss():
        nonlocal batches_done
        batch = stream.next()
        loss = diffusion_loss(model, batch_latents(batch, model, args.cache_latents, generator),
                              [it.caption for it in batch], rt, args, generator, prompt_cache)
        if class_stream:  # prior preservation: the class images keep what the base model knew
            cbatch = class_stream.next()
            loss = loss + args.prior_loss_weight * diffusion_loss(
                model, batch_latents(cbatch, model, args.cache_latents, generator),
                [it.caption for it in cbatch], rt, args, generator, prompt_cache)
        batches_done += 1
        return loss

    while step < args.max_steps:
        total = optimizer_step(micro_batch_loss, list(trainable.values()), optimizer, scheduler, scaler, args, step)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if args.save_every and step % args.save_every == 0 and step < args.max_steps:
            path = save_checkpoint(args.out, step, trainable, optimizer, scheduler, scaler, args, batches_done)
            print(f"[train_lora] checkpoint step {step} -> {path}", flush=True)
        if args.sample_every and step % args.sample_every == 0:
            sample = args.out.with_name(args.out.stem + ".samples") / f"step_{step:06d}.png"
            render_sample(model, args.sample_prompt or items[0].caption, sample, args, rt, args.seed)
            print(f"[train_lora] sample step {step} -> {sample}", flush=True)
    bar.close()
    save_checkpoint(args.out, step, trainable, optimizer, scheduler, scaler, args, batches_done)
    return save_result(args, model, network, step)


def precision_record(args: argparse.Namespace) -> str:
    """The precision actually trained in (the policy's pick for `--mixed-precision auto`), for the file's metadata."""
    rt = pick_runtime(args)
    mp = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(rt.autocast_dtype, "fp32")
    return json.dumps({"dtype": mp, "device": rt.device.type, "grad_scaler": mp == "fp16",
                       "requested": args.mixed_precision})


def save_result(args: argparse.Namespace, model, network, step: int) -> Path:

    from rezcty_core.sd import lora_export

    recorded = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    recorded["steps_done"] = step
    meta = lora_export.rezcty_metadata(
        args.trigger, args.role, model.sha256, recorded,
        ss_network_module="networks.lora", ss_network_dim=args.rank, ss_network_alpha=args.alpha,
        ss_output_name=args.out.stem, ss_base_model_version="sd_v1", ss_steps=step,
        ss_training_finished_at=int(time.time()),
        ss_tag_frequency=json.dumps({args.data.name: {args.trigger: 1}}), rezcty_precision=precision_record(args))
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.save_precision]
    path = lora_export.save_lora(args.out, network, meta, dtype)
    print(f"[train_lora] wrote {path} ({len(network.loras)} LoRA modules, rank {args.rank}, alpha {args.alpha:g}, "
          f"{step} steps)", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out.suffix.lower() != ".safetensors":
        print(f"train_lora: {args.out}: the output must be a .safetensors file", file=sys.stderr)
        return 2
    try:
        train(args)
    except TrainingError as e:
        print(f"train_lora: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
