"""Train a rezcty adapter: the DINOv2 projector + (Q)LoRA on a causal LLM, from a dataset.jsonl.

    python -m training.train_adapter --data dataset.jsonl --base-model embedded \
        --out models/rezcty_adapters/whisperer_v1 [--specialist whisperer|judge] [--max-steps N]

Stage 1 trains the projector alone (alignment), stage 2 the projector and LoRA together; the
loss is on the answer tokens only. QLoRA (4-bit NF4, double quant) by default on CUDA, plain LoRA by
default on the CPU (`--quantization 4bit-nf4` runs QLoRA there too: bitsandbytes has CPU kernels).
Compute dtype from the precision policy (rezcty_core.common.precision): fp32 on the CPU, bf16 on
GPUs with compute capability >= 8.0, fp16 with a grad scaler below (T4); `--dtype` overrides it.
A memory plan from config.json is printed before loading; on CUDA a plan that cannot fit is refused. Writes OUT/ in the adapter folder format (rezcty_core/llm/adapter.py) plus
`metrics.jsonl` (loss per step, then the held-out loss, BLEU and ROUGE-L) and `eval.json`.
Checkpoints go to OUT/checkpoints/; `--resume` continues from the latest one.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

# --- the recipe's defaults (BRIEF.md) --------------------------------------------------------
LORA_R, LORA_ALPHA, LORA_DROPOUT = 32, 64, 0.05
TARGET_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
BATCH_SIZE, GRAD_ACCUM, WARMUP_STEPS = 1, 8, 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.train_adapter", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="dataset.jsonl (input_text, output_text, optional image_embedding_path)")
    ap.add_argument("--base-model", default="embedded", help="HF model folder, or 'embedded' (SmolLM2-135M-Instruct)")
    ap.add_argument("--out", required=True, type=Path, help="adapter folder to write (e.g. models/rezcty_adapters/NAME)")
    ap.add_argument("--specialist", choices=["whisperer", "judge"], default="whisperer")
    ap.add_argument("--max-steps", type=int, default=0, help="optimizer steps (0: --epochs over the data)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--stage1-steps", type=int, default=-1, help="projector-only steps first (-1: a tenth of the run when images exist)")
    ap.add_argument("--lr", type=float, default=2e-4, help="LoRA learning rate")
    ap.add_argument("--projector-lr", type=float, default=1e-3)
    ap.add_argument("--lora-r", type=int, default=LORA_R)
    ap.add_argument("--lora-alpha", type=int, default=LORA_ALPHA)
    ap.add_argument("--lora-dropout", type=float, default=LORA_DROPOUT)
    ap.add_argument("--target-modules", default=TARGET_MODULES)
    ap.add_argument("--no-lora", action="store_true", help="train the projector only")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--grad-accum", type=int, default=GRAD_ACCUM)
    ap.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS, help="capped at a tenth of the run so short runs still train")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--quantization", choices=["auto", "none", "8bit", "4bit-nf4"], default="auto",
                    help="auto: 4bit-nf4 (QLoRA) on CUDA, none on the CPU")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                    help="compute dtype (auto: fp32 on the CPU, bf16 on compute capability >= 8.0, fp16 + grad scaler below)")
    ap.add_argument("--projector", default="mlp2x_gelu", help="linear or mlpNx_gelu")
    ap.add_argument("--patch-grid", type=int, default=2, help="patch embeddings are pooled to GRID x GRID tokens")
    ap.add_argument("--text-only", action="store_true", help="ignore image embeddings (the no-eye baseline)")
    ap.add_argument("--encode-inline", action="store_true",
                    help="benchmarking: encode `image_path` images with DINOv2 inside the loop instead of reading cached embeddings")
    ap.add_argument("--max-length", type=int, default=1024, help="longer examples are truncated (answer end first)")
    ap.add_argument("--eval-data", type=Path, default=None, help="held-out dataset.jsonl (default: held_out.jsonl beside --data when "
                    "build_dataset wrote one, else split off --eval-fraction)")
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--eval-generate", type=int, default=8, help="held-out samples to generate for BLEU/ROUGE (-1: all)")
    ap.add_argument("--eval-max-new-tokens", type=int, default=96)
    ap.add_argument("--save-every", type=int, default=50, help="checkpoint every N steps")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT/checkpoints")
    ap.add_argument("--strict", action="store_true", help="fail on the first bad dataset line instead of skipping it")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def fail(message: str) -> int:
    print(f"train_adapter: error: {message}", file=sys.stderr)
    return 2


# --- load ------------------------------------------------------------------------------------

def load_data(args: argparse.Namespace):
    from training.adapter_data import read_dataset, split_examples

    data = read_dataset(args.data, args.specialist, args.strict, text_only=args.text_only)
    for problem in data.problems:
        print(problem, file=sys.stderr)
    beside = args.data.parent / "held_out.jsonl"
    if args.eval_data is None and args.eval_fraction > 0 and beside.is_file() and beside.resolve() != args.data.resolve():
        args.eval_data = beside  # build_dataset's split by subject
        print(f"train_adapter: held-out examples from {beside} (build_dataset's subject split)", file=sys.stderr)
    if args.eval_data:
        held = read_dataset(args.eval_data, args.specialist, args.strict, text_only=args.text_only)
        for problem in held.problems:
            print(problem, file=sys.stderr)
        if data.eye and held.eye and held.eye["model_hash"] != data.eye["model_hash"]:
            raise ValueError(f"{args.eval_data}: embeddings come from another DINOv2 model than {args.data}'s")
        return data, data.examples, held.examples
    train, held = split_examples(data.examples, args.eval_fraction, args.seed)
    return data, train, held


def load_model(args: argparse.Namespace, in_dim: int | None):
    """Base LLM (4-bit on CUDA by default), LoRA on top, and a fresh projector when images exist."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rezcty_core.common.precision import choose_precision
    from rezcty_core.llm.device import device_map_for, pick_device, print_memory_plan, quantization_config
    from rezcty_core.llm.embedded import resolve_base
    from rezcty_core.llm.projector import Projector

    device = pick_device(args.device)
    quant_name = args.quantization if args.quantization != "auto" else ("4bit-nf4" if device == "cuda" else "none")
    args.precision = choose_precision(device, args.dtype, training=True)
    dtype = args.precision.torch_dtype
    quant = quantization_config(quant_name, device, dtype)
    base_dir = resolve_base(args.base_model)
    print(f"train_adapter: precision {args.precision.dtype} ({args.precision.reason})"
          f"{', grad scaler on' if args.precision.uses_grad_scaler else ''}", file=sys.stderr)
    targets = [t.strip() for t in args.target_modules.split(",") if t.strip()]
    args.memory_plan = print_memory_plan(
        base_dir, device, mode="train", quantization=quant_name, dtype=args.precision.dtype, seq_len=args.max_length,
        batch_size=args.batch_size, lora_r=args.lora_r, targets=targets, lora=not args.no_lora,
        gradient_checkpointing=args.gradient_checkpointing, image_tokens=args.patch_grid ** 2 if in_dim else 0,
        projector_in=in_dim or 384)
    kwargs: dict = {"dtype": dtype}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map=device_map_for(device))
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if quant is None:
        model.to(device)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not args.no_lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                            target_modules=targets, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    hidden = model.get_input_embeddings().weight.shape[1]
    projector = None
    if in_dim:
        torch.manual_seed(args.seed)
        projector = Projector(args.projector, in_dim, hidden, args.patch_grid).to(device)
    return model, tokenizer, projector, base_dir, quant_name, device


def inline_encoder(args: argparse.Namespace, device: str):
    """Benchmarking only: DINOv2 in memory, each image decoded and encoded inside the loop."""
    from rezcty_core.common.imageio import load_image_rgb
    from rezcty_core.eye.dinov2 import embed_images, load_dinov2

    dino = load_dinov2("embedded", device=device)

    def encode(example):
        return embed_images(dino, [load_image_rgb(example.image_path)], pooling="cls")[0].vector
    return dino, encode


# --- data ------------------------------------------------------------------------------------

def example_order(n: int, index: int, seed: int) -> int:
    """Which example the `index`-th micro-batch reads: a fresh shuffle per epoch, reproducible on resume."""
    epoch, pos = divmod(index, n)
    order = list(range(n))
    random.Random(seed * 100003 + epoch).shuffle(order)
    return order[pos]


def example_inputs(example, tokenizer, model, projector, specialist: str, max_length: int, vector=None):
    from rezcty_core.llm.chat import assemble_inputs, encode_chat
    from rezcty_core.llm.templates import build_messages

    vector = example.vector if vector is None else vector
    has_image = projector is not None and vector is not None
    encoded = encode_chat(tokenizer, build_messages(specialist, example.input_text, has_image), example.output_text)
    overflow = len(encoded.before) + len(encoded.after) + len(encoded.answer) - max_length
    if overflow > 0:
        encoded.answer = encoded.answer[:max(1, len(encoded.answer) - overflow)]
    return assemble_inputs(model, projector, encoded, vector if has_image else None)


def loss_of(model, embeds, labels):
    import torch

    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    return model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss


# --- checkpoints -----------------------------------------------------------------------------

def trainable_state(model, projector) -> dict:
    state = {f"llm.{n}": p.detach().cpu().contiguous() for n, p in model.named_parameters() if "lora_" in n}
    if projector is not None:
        state.update({f"projector.{n}": t.detach().cpu().contiguous() for n, t in projector.state_dict().items()})
    return state


def save_checkpoint(out: Path, step: int, model, projector, optimizer, scheduler, keep: int = 2) -> Path:
    import torch
    from safetensors.torch import save_file

    root = out / "checkpoints"
    tmp = root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model, projector), str(tmp / "trainable.safetensors"))
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
    final = root / f"step-{step:07d}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def load_checkpoint(path: Path, model, projector, optimizer, scheduler) -> int:
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path / "trainable.safetensors"))
    llm_state = {k[4:]: v for k, v in state.items() if k.startswith("llm.")}
    missing = [n for n, _ in model.named_parameters() if "lora_" in n and n not in llm_state]
    if missing:
        raise ValueError(f"{path}: checkpoint does not match this run's LoRA settings (missing {missing[0]})")
    model.load_state_dict(llm_state, strict=False)
    if projector is not None:
        projector.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("projector.")})
    extra = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    return int(extra["step"])


def trim_metrics(path: Path, last_step: int) -> None:
    """On resume, keep the metrics lines up to the checkpoint's step only."""
    if not path.exists():
        return
    kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= last_step
            and json.loads(ln).get("split", "train") == "train"]
    path.write_text("".join(ln + "\n" for ln in kept))


# --- evaluation ------------------------------------------------------------------------------

def evaluate(model, tokenizer, projector, examples, args, encode=None) -> dict:
    """Held-out loss, then greedy generations scored with BLEU-4 and ROUGE-L."""
    import torch

    from rezcty_core.llm.text_metrics import corpus_scores

    if not examples:
        return {"eval_loss": None, "samples": []}
    model.eval()
    losses, samples = [], []
    limit = len(examples) if args.eval_generate < 0 else min(args.eval_generate, len(examples))
    eos = sorted({i for i in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)) if isinstance(i, int)})
    with torch.inference_mode():
        for i, ex in enumerate(examples):
            vector = encode(ex) if encode and ex.image_path else None
            embeds, labels = example_inputs(ex, tokenizer, model, projector, args.specialist, args.max_length, vector)
            losses.append(float(loss_of(model, embeds, labels)))
            if i < limit:
                prompt_len = int((labels[0] == -100).sum())
                out = model.generate(inputs_embeds=embeds[:, :prompt_len], attention_mask=torch.ones(1, prompt_len, dtype=torch.long, device=embeds.device),
                                     max_new_tokens=args.eval_max_new_tokens, do_sample=False, eos_token_id=eos,
                                     pad_token_id=eos[0] if eos else None, use_cache=True)
                text = tokenizer.decode(out[0], skip_special_tokens=True).strip()
                samples.append({"line": ex.line, "input_text": ex.input_text, "reference": ex.output_text,
                                "generated": text, "image": str(ex.embedding_path or ex.image_path or "")})
    scores = corpus_scores([s["generated"] for s in samples], [s["reference"] for s in samples])
    model.train()
    return {"eval_loss": round(sum(losses) / len(losses), 5), **scores, "samples": samples}


# --- save ------------------------------------------------------------------------------------

def save_adapter(out: Path, model, projector, args, base_dir: Path, quant_name: str, data, train_info: dict,
                 tokenizer=None) -> None:
    from safetensors.torch import save_file

    from rezcty_core.llm.adapter import PROJECTOR_FILE, AdapterConfig, model_fingerprint, write_adapter_config
    from rezcty_core.llm.embedded import base_display_name
    from rezcty_core.llm.templates import system_role_mode, template_info

    out.mkdir(parents=True, exist_ok=True)
    if not args.no_lora:
        model.save_pretrained(str(out), safe_serialization=True)
    if projector is not None:
        save_file({k: v.detach().cpu().float().contiguous() for k, v in projector.state_dict().items()}, str(out / PROJECTOR_FILE))
    hidden = model.get_input_embeddings().weight.shape[1]
    config = AdapterConfig(
        specialist=args.specialist,
        base_model={"name": base_display_name(base_dir), "hash": model_fingerprint(base_dir), "hidden_size": hidden},
        eye=data.eye if projector is not None else None,
        projector=projector.config() if projector is not None else None,
        template=template_info(args.specialist, system_role_mode(tokenizer) if tokenizer is not None else "native"),
        lora=None if args.no_lora else {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                                         "target_modules": args.target_modules.split(",")},
        training={"quantization": quant_name, "dataset": str(args.data), "seed": args.seed, **train_info})
    write_adapter_config(out, config)


# --- the loop --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from training.adapter_data import DatasetError

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    try:
        data, train, held = load_data(args)
    except (DatasetError, ValueError) as e:
        return fail(str(e))
    dino = encode = None
    in_dim = data.eye["dim"] if data.eye and not args.text_only else None
    if args.encode_inline:
        if any(e.image_path is None for e in train + held):
            return fail(f"{args.data}: --encode-inline needs an `image_path` on every line")
        from rezcty_core.llm.device import pick_device

        dino, encode = inline_encoder(args, pick_device(args.device))
        in_dim = dino.dim
        data.eye = {"model": dino.name, "model_hash": dino.identity, "dim": dino.dim, "pooling": "cls"}
    try:
        model, tokenizer, projector, base_dir, quant_name, device = load_model(args, in_dim)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        return fail(str(e))

    micro = args.batch_size * args.grad_accum
    total = args.max_steps or max(1, math.ceil(args.epochs * len(train) / micro))
    stage1 = args.stage1_steps if args.stage1_steps >= 0 else (total // 10 if projector is not None else 0)
    stage1 = stage1 if projector is not None else 0
    if args.no_lora and projector is None:
        return fail("--no-lora with no image embeddings leaves nothing to train")

    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    groups = [{"params": lora_params, "lr": args.lr}] if lora_params else []
    if projector is not None:
        groups.append({"params": list(projector.parameters()), "lr": args.projector_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    precision = args.precision
    scaler = precision.grad_scaler()
    warmup = min(args.warmup_steps, max(1, total // 10))
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)

    args.out.mkdir(parents=True, exist_ok=True)
    metrics_path = args.out / "metrics.jsonl"
    start = 0
    if args.resume and (ckpt := latest_checkpoint(args.out)) is not None:
        try:
            start = load_checkpoint(ckpt, model, projector, optimizer, scheduler)
        except (ValueError, RuntimeError, KeyError) as e:
            return fail(f"cannot resume from {ckpt}: {e}")
        trim_metrics(metrics_path, start)
        print(f"train_adapter: resuming from {ckpt.name} (step {start} of {total})", file=sys.stderr)
    elif metrics_path.exists():
        metrics_path.unlink()

    print(f"train_adapter: {len(train)} training / {len(held)} held-out examples, {total} steps "
          f"(stage 1 projector-only: {stage1}), images: {projector is not None}, device {device}, "
          f"quantization {quant_name}", file=sys.stderr)
    model.train()
    if projector is not None:
        projector.train()
    t_start = time.perf_counter()
    with open(metrics_path, "a") as metrics, tqdm(total=total, initial=start, desc="train_adapter", unit="step") as bar:
        for step in range(start, total):
            stage = 1 if step < stage1 else 2
            for p in lora_params:
                p.requires_grad_(stage == 2)
            t0 = time.perf_counter()
            step_loss = 0.0
            for j in range(micro):
                example = train[example_order(len(train), step * micro + j, args.seed)]
                vector = encode(example) if encode else None
                embeds, labels = example_inputs(example, tokenizer, model, projector, args.specialist, args.max_length, vector)
                with precision.autocast():
                    loss = loss_of(model, embeds, labels) / micro
                scaler.scale(loss).backward()
                step_loss += float(loss.detach())
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record = {"step": step + 1, "stage": stage, "loss": round(step_loss, 5),
                      "lr": scheduler.get_last_lr()[0], "step_time_s": round(time.perf_counter() - t0, 4),
                      "elapsed_s": round(time.perf_counter() - t_start, 2)}
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            bar.set_postfix(loss=f"{step_loss:.3f}", stage=stage)
            bar.update(1)
            if (step + 1) % args.save_every == 0 and step + 1 < total:
                save_checkpoint(args.out, step + 1, model, projector, optimizer, scheduler)

    save_checkpoint(args.out, total, model, projector, optimizer, scheduler)
    result = evaluate(model, tokenizer, projector, held, args, encode)
    with open(metrics_path, "a") as metrics:
        metrics.write(json.dumps({"step": total, "split": "eval", **{k: v for k, v in result.items() if k != "samples"}}) + "\n")
    (args.out / "eval.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    peak = _peak_memory_mb(device)
    save_adapter(args.out, model, projector, args, base_dir, quant_name, data,
                 {"steps": total, "stage1_steps": stage1, "examples": len(train), "held_out": len(held),
                  "eval_loss": result["eval_loss"], "bleu": result.get("bleu"), "rouge_l": result.get("rouge_l"),
                  "text_only": bool(args.text_only), "peak_memory_mb": peak, "precision": args.precision.record(),
                  "quantized_linears": sum(type(m).__module__.startswith("bitsandbytes") and type(m).__name__ in
                                           ("Linear4bit", "Linear8bitLt") for m in model.modules()),
                  "gradient_checkpointing": bool(args.gradient_checkpointing),
                  "memory_plan_gib": args.memory_plan.to_json()["total_gib"] if args.memory_plan else None},
                 tokenizer)
    print(f"train_adapter: wrote {args.out} (held-out loss {result['eval_loss']}, BLEU {result.get('bleu')}, "
          f"ROUGE-L {result.get('rouge_l')})", file=sys.stderr)
    return 0


def _peak_memory_mb(device: str) -> float:
    import resource

    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    raise SystemExit(main())
