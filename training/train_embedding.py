"""Train rezcty_genius: a textual-inversion embedding over the union of the style and structure sets.

    python -m training.train_embedding --data DIR --base CKPT --out FILE --token WORD [--num-vectors N]

Recipe: lint the captions (each set with its own trigger: --trigger, its kohya folder name, or the last word its
captions share; other sets' triggers stay refused) -> load the checkpoint offline ->
bucket + cache latents (same cache as train_lora) -> add the new token(s) to the tokenizer and learn
only their vectors, with every LoRA trigger in the captions replaced by the token -> write an A1111-style
`emb_params` .safetensors that ComfyUI's embeddings folder loads (`embedding:NAME`), with rezcty metadata.
"""
from __future__ import annotations

import argparse
import copy
import random
import re
import sys
from pathlib import Path

import torch

from training.train_lora import (
    BatchStream,
    TrainingError,
    assign_buckets,
    batch_latents,
    cache_latents,
    diffusion_loss,
    lint_or_refuse,
    load_base,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    optimizer_step,
    pick_runtime,
    precision_record,
    render_sample,
    restore_checkpoint,
    save_checkpoint,
    scan_dataset,
    state_dir,
)

DEFAULT_LORA_TRIGGERS = "rezcty_style,rezcty_structure"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.train_embedding", description=__doc__.splitlines()[0])
    io = ap.add_argument_group("data and files")
    io.add_argument("--data", required=True, type=Path, action="append",
                    help="images + .txt captions (kohya `N_name` folders); repeat --data to join several sets")
    io.add_argument("--base", required=True, type=Path, help="SD 1.5 single-file checkpoint")
    io.add_argument("--out", required=True, type=Path, help="embedding file (.safetensors), e.g. models/embeddings/rezcty_genius.safetensors")
    io.add_argument("--token", required=True, help="the embedding's trigger, e.g. rezcty_genius (must differ from the LoRA triggers)")
    io.add_argument("--trigger", action="append", default=None, metavar="WORD",
                    help="the trigger the captions of a --data set end with (once per --data, in order); default: the "
                         "kohya folder name, else the last word the set's captions share")
    io.add_argument("--lora-triggers", default=DEFAULT_LORA_TRIGGERS,
                    help="comma-separated LoRA triggers; replaced by the token in captions (kohya folder names are added)")
    io.add_argument("--num-vectors", type=int, default=2, help="vectors per token (1-16)")
    io.add_argument("--init-word", default="style", help="the new vectors start from this word's embedding")
    io.add_argument("--cache-dir", type=Path, default=None, help="latent cache (default FIRST_DATA/.rezcty_cache/latents)")
    io.add_argument("--no-cache-latents", dest="cache_latents", action="store_false")
    io.add_argument("--allow-caption-violations", action="store_true")

    opt = ap.add_argument_group("optimisation")
    opt.add_argument("--max-steps", type=int, default=2000)
    opt.add_argument("--batch-size", type=int, default=1)
    opt.add_argument("--grad-accum", type=int, default=1)
    opt.add_argument("--optimizer", choices=("auto", "AdamW", "AdamW8bit", "Prodigy", "Lion"), default="AdamW")
    opt.add_argument("--lr", type=float, default=5e-3)
    opt.add_argument("--weight-decay", type=float, default=0.0)
    opt.add_argument("--lr-scheduler", default="constant",
                     choices=("cosine_with_restarts", "cosine", "constant", "constant_with_warmup", "linear", "polynomial"))
    opt.add_argument("--lr-warmup-steps", type=int, default=0)
    opt.add_argument("--lr-restarts", type=int, default=1)
    opt.add_argument("--noise-offset", type=float, default=0.0)
    opt.add_argument("--max-grad-norm", type=float, default=1.0)
    opt.add_argument("--seed", type=int, default=42)

    res = ap.add_argument_group("buckets")
    res.add_argument("--resolution", type=int, default=512)
    res.add_argument("--min-bucket-reso", type=int, default=256)
    res.add_argument("--max-bucket-reso", type=int, default=1024)
    res.add_argument("--bucket-step", type=int, default=64)

    hw = ap.add_argument_group("hardware")
    hw.add_argument("--device", default="auto")
    hw.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto")
    hw.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)

    run = ap.add_argument_group("checkpoints and samples")
    run.add_argument("--save-every", type=int, default=250)
    run.add_argument("--resume", action="store_true", help="continue from OUT.state/ if present")
    run.add_argument("--sample-every", type=int, default=0)
    run.add_argument("--sample-prompt", default=None, help="default: the first caption with the token")
    run.add_argument("--sample-steps", type=int, default=20)
    run.add_argument("--sample-size", type=int, default=None, help="sample width/height (default --resolution)")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# ---- the token --------------------------------------------------------------------------------------------

def lora_triggers(args: argparse.Namespace) -> set[str]:
    from rezcty_core.sd.captions import folder_trigger

    found = {t.strip() for t in args.lora_triggers.split(",") if t.strip()}
    for root in args.data:
        found |= {t for p in root.iterdir() if p.is_dir() and (t := folder_trigger(p))}
    return found


def check_token(args: argparse.Namespace) -> set[str]:
    """Refuse a token that is a LoRA trigger (the embedding must never be confused with a LoRA)."""
    triggers = lora_triggers(args)
    if args.token.lower() in {t.lower() for t in triggers}:
        raise TrainingError(f"--token {args.token!r} equals a LoRA trigger ({', '.join(sorted(triggers))}); "
                            "choose a distinct word such as rezcty_genius")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", args.token):
        raise TrainingError(f"--token {args.token!r}: use one word (letters, digits, _ or -)")
    if not 1 <= args.num_vectors <= 16:
        raise TrainingError(f"--num-vectors {args.num_vectors}: choose 1 to 16")
    return triggers


def caption_last_word(text: str) -> str | None:
    """`a red cube, rezcty_style` -> `rezcty_style` (the last comma part when it is one word)."""
    last = text.rsplit(",", 1)[-1].strip().rstrip(".;").strip()
    return last if re.fullmatch(r"[\w\-]+", last) else None


def set_trigger(root: Path, given: str | None) -> str | None:
    """The trigger one set's captions end with: `given`, else None when kohya `N_name` folders name it (the
    linter reads those per caption), else the last word more than half of the set's captions share."""
    from collections import Counter

    from rezcty_core.sd.captions import caption_files, folder_trigger, read_caption

    if given:
        return given
    captions, _ = caption_files(root)
    if not captions or any(folder_trigger(p.parent) for p in captions):
        return None
    words: Counter = Counter()
    for path in captions:
        try:
            word = caption_last_word(read_caption(path))
        except ValueError:
            continue  # the linter reports the unreadable file
        if word:
            words[word] += 1
    if not words:
        return None
    word, n = words.most_common(1)[0]
    return word if 2 * n > len(captions) and (n >= 2 or len(captions) == 1) else None


def set_triggers(args: argparse.Namespace) -> list[str | None]:
    """One trigger (or None: kohya folders / no shared trigger) per --data set."""
    given = args.trigger or []
    if given and len(given) != len(args.data):
        raise TrainingError(f"{len(given)} --trigger for {len(args.data)} --data: give one --trigger per --data "
                            "set, in the same order (or none, to read them from the folders and captions)")
    triggers = [set_trigger(root, given[i] if given else None) for i, root in enumerate(args.data)]
    for root, trigger in zip(args.data, triggers):
        if trigger and trigger.lower() == args.token.lower():
            raise TrainingError(f"{root}: its captions end with the token {args.token!r}; they must end with the set's "
                                "LoRA trigger (it is replaced by the token while training)")
    return triggers


def lint_sets(args: argparse.Namespace, set_trigger_words: list[str | None], lora_words: set[str]) -> None:
    """Each set is linted with its own trigger; every other set's trigger (and the known ones) stays refused."""
    from dataclasses import replace

    from rezcty_core.sd.captions import load_word_lists

    base = load_word_lists()
    known = sorted(set(base.triggers) | lora_words | {t for t in set_trigger_words if t})
    lists = replace(base, triggers=known)
    for root, trigger in zip(args.data, set_trigger_words):
        lint_or_refuse(root, trigger, args.allow_caption_violations, tool="train_embedding", lists=lists)


def token_words(token: str, n: int) -> list[str]:
    """The placeholder words in the tokenizer: `token`, `token_1`, ... (ComfyUI just sees one embedding)."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def add_token(model, args: argparse.Namespace) -> torch.nn.Parameter:
    """New tokenizer entries and a trainable (n_vectors, dim) tensor spliced into the token embedding."""
    tok = copy.deepcopy(model.tokenizer)  # the shared tokenizer stays untouched
    words = token_words(args.token, args.num_vectors)
    vocab = len(tok)
    if tok.add_tokens(words) != len(words):
        raise TrainingError(f"--token {args.token!r} is already a single CLIP token; choose a made-up word")
    model.tokenizer = tok
    emb = model.text_encoder.get_input_embeddings()
    init_ids = tok(args.init_word, add_special_tokens=False).input_ids or [tok.convert_tokens_to_ids("*</w>")]
    with torch.no_grad():
        init = emb.weight[init_ids].float().mean(0)
    vectors = torch.nn.Parameter(init.repeat(args.num_vectors, 1).clone().to(emb.weight.device))
    base_forward = emb.forward

    def forward(ids: torch.Tensor) -> torch.Tensor:
        extra = ids >= vocab
        out = base_forward(ids.clamp(max=vocab - 1))
        if bool(extra.any()):
            out = torch.where(extra[..., None], vectors[(ids - vocab).clamp(min=0)].to(out.dtype), out)
        return out

    emb.forward = forward
    return vectors


def token_captions(items, token_text: str, triggers: set[str]) -> None:
    """Each caption's LoRA trigger becomes the token (added at the end when a caption has none)."""
    pattern = re.compile(r"(?<![\w])(" + "|".join(re.escape(t) for t in sorted(triggers, key=len, reverse=True)) + r")(?![\w])")
    for it in items:
        text, n = pattern.subn(token_text, it.caption)
        it.caption = text if n else f"{it.caption}, {token_text}"


# ---- the loop ---------------------------------------------------------------------------------------------

def train(args: argparse.Namespace) -> Path:
    from tqdm import tqdm

    rt = pick_runtime(args)
    triggers = check_token(args)
    own = set_triggers(args)
    triggers |= {t for t in own if t}
    lint_sets(args, own, triggers)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    args.train_text_encoder = False
    model = load_base(args, rt)

    items = [it for root in args.data for it in assign_buckets(scan_dataset(root), args)]
    if args.cache_latents:
        cache_latents(items, model, args.cache_dir or args.data[0] / ".rezcty_cache" / "latents")
    model.text_encoder.to(rt.device)
    vectors = add_token(model, args)
    token_text = " ".join(token_words(args.token, args.num_vectors))
    token_captions(items, token_text, triggers)

    optimizer = make_optimizer(args, [{"params": [vectors], "lr": args.lr}], rt.device)
    scheduler = make_scheduler(args, optimizer)
    scaler = torch.amp.GradScaler("cuda") if rt.autocast_dtype == torch.float16 else None
    trainable = {"vectors": vectors}
    start, batches_done = 0, 0
    payload = load_checkpoint(args.out, args) if args.resume else None
    if payload:
        restore_checkpoint(payload, trainable, optimizer, scheduler, scaler)
        start, batches_done = payload["step"], payload["batches_done"]
        print(f"[train_embedding] resumed from step {start} ({state_dir(args.out)})", flush=True)
    stream = BatchStream(items, args.batch_size, args.seed)
    stream.skip(batches_done)
    generator = torch.Generator().manual_seed(args.seed * 100003 + start)

    bar = tqdm(total=args.max_steps, initial=start, desc=f"train_embedding {args.token}", unit="step", dynamic_ncols=True)
    step = start

    def micro_batch_loss():
        nonlocal batches_done
        batch = stream.next()
        batches_done += 1
        return diffusion_loss(model, batch_latents(batch, model, args.cache_latents, generator),
                              [it.caption for it in batch], rt, args, generator)

    while step < args.max_steps:
        total = optimizer_step(micro_batch_loss, [vectors], optimizer, scheduler, scaler, args, step)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if args.save_every and step % args.save_every == 0 and step < args.max_steps:
            path = save_checkpoint(args.out, step, trainable, optimizer, scheduler, scaler, args, batches_done)
            print(f"[train_embedding] checkpoint step {step} -> {path}", flush=True)
        if args.sample_every and step % args.sample_every == 0:
            sample = args.out.with_name(args.out.stem + ".samples") / f"step_{step:06d}.png"
            render_sample(model, args.sample_prompt or items[0].caption, sample, args, rt, args.seed)
            print(f"[train_embedding] sample step {step} -> {sample}", flush=True)
    bar.close()
    save_checkpoint(args.out, step, trainable, optimizer, scheduler, scaler, args, batches_done)
    return save_result(args, model, vectors, step)


def save_result(args: argparse.Namespace, model, vectors: torch.Tensor, step: int) -> Path:
    from rezcty_core.sd import lora_export

    recorded = {k: ([str(p) for p in v] if k == "data" else str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()}
    recorded["steps_done"] = step
    meta = lora_export.rezcty_metadata(args.token, "embedding", model.sha256, recorded,
                                       rezcty_num_vectors=args.num_vectors, rezcty_steps=step,
                                       rezcty_precision=precision_record(args))
    path = lora_export.save_embedding(args.out, vectors, meta)
    print(f"[train_embedding] wrote {path} ({args.num_vectors} vector(s) for {args.token!r}, {step} steps)", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out.suffix.lower() != ".safetensors":
        print(f"train_embedding: {args.out}: the output must be a .safetensors file", file=sys.stderr)
        return 2
    try:
        train(args)
    except TrainingError as e:
        print(f"train_embedding: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
