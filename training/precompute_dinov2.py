"""Precompute DINOv2 embeddings for an image folder: one safetensors file per image + manifest.jsonl.

    python -m training.precompute_dinov2 --images DIR --out DIR [--model NAME_OR_PATH] [--pooling P] [--batch-size N]

The feature-caching pass of the brief: only the eye is in memory. It uses the very function the
DINOv2 Embed node uses (`rezcty_core.eye.dinov2.embed_images`), so the cache key, the file name and the
features are identical in training and inference. Embedding files are named `<key>.safetensors`
(key = pixels + model weights + preprocessing + pooling) and land in `--cache` (default: `--out`);
`manifest.jsonl` in `--out` has one line per input file, in sorted path order:
`{"image", "embedding" (relative to the manifest's folder), "key", "status": computed|cached}` or
`{"image", "error"}`. A re-run skips every image already cached (resume), and when all are cached it
loads no model, nor torch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from rezcty_core.common.imageio import ImageLoadError, iter_image_files, load_image_rgb
from rezcty_core.eye.dinov2 import (
    POOLINGS,
    Dino,
    Preprocessing,
    embed_images,
    embedding_meta,
    load_dinov2,
)
from rezcty_core.eye.embedding import CACHE_FORMAT, cache_path, read_embedding_header


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.precompute_dinov2", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, type=Path, help="folder of images (jpg, png, webp, ...), searched recursively")
    ap.add_argument("--out", required=True, type=Path, help="output folder: manifest.jsonl (+ embeddings unless --cache)")
    ap.add_argument("--model", default="embedded",
                    help="DINOv2 folder (transformers save_pretrained layout) or 'embedded' (dinov2-small, default)")
    ap.add_argument("--pooling", default="cls", choices=POOLINGS, help="cls, mean, cls+mean or patch (token grid)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    ap.add_argument("--resolution", type=int, default=0, help="square input size, a multiple of 14; 0 = model default")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder for the embedding files (default: --out); point it at ComfyUI's "
                         "output/rezcty_cache/dinov2 to share features with the DINOv2 Embed node")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--no-recursive", action="store_true", help="only the top level of --images")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any image could not be embedded")
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    return args


def fail(message: str, code: int = 2) -> int:
    print(f"precompute_dinov2: error: {message}", file=sys.stderr)
    return code


class Run:
    """One pass over the folder: cached images are resolved at once, the rest are embedded in batches."""

    def __init__(self, args: argparse.Namespace, dino: Dino, files: list[Path]):
        self.args, self.dino, self.files = args, dino, files
        self.cache_dir = args.cache or args.out
        self.prep = dino.preprocessing(args.resolution or None)
        self.lines: list[dict | None] = [None] * len(files)
        self.pending: list[tuple[int, object]] = []
        self.stats: dict[int, dict] = {}
        self.config = config_fingerprint(dino, self.prep, args.pooling)
        self.previous = read_previous_manifest(args.out / "manifest.jsonl")
        self.bar = tqdm(total=len(files), unit="img", desc="DINOv2 embed", file=sys.stderr)

    def record(self, index: int, line: dict) -> None:
        self.lines[index] = {"image": str(self.files[index]), **line}
        if "error" in line:
            self.bar.write(f"precompute_dinov2: skipped {line['error']}", file=sys.stderr)
        self.bar.update(1)

    def embedding_line(self, index: int, key: str, status: str) -> dict:
        rel = os.path.relpath(cache_path(self.cache_dir, key), self.args.out)
        return {"embedding": Path(rel).as_posix(), "key": key, "status": status, **self.stats.get(index, {}),
                "config": self.config}

    def still_cached(self, index: int) -> bool:
        """Unchanged file (size, mtime), same model/preprocessing/pooling, valid cache file: no need to decode."""
        path = self.files[index]
        try:
            st = path.stat()
        except OSError:
            return False
        self.stats[index] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        old = self.previous.get(str(path))
        if not old or old.get("config") != self.config or "key" not in old:
            return False
        if (old.get("size"), old.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
            return False
        meta = read_embedding_header(cache_path(self.cache_dir, old["key"]))
        return meta is not None and meta.get("key") == old["key"]

    def visit(self, index: int) -> None:
        if self.still_cached(index):
            return self.record(index, self.embedding_line(index, self.previous[str(self.files[index])]["key"], "cached"))
        try:
            image = load_image_rgb(self.files[index])
        except ImageLoadError as e:
            return self.record(index, {"error": str(e)})
        meta = embedding_meta(self.dino, image, self.args.pooling, self.prep, str(self.files[index]))
        cached = read_embedding_header(cache_path(self.cache_dir, meta["key"]))
        if cached is not None and cached.get("key") == meta["key"]:
            return self.record(index, self.embedding_line(index, meta["key"], "cached"))
        self.pending.append((index, image))
        if len(self.pending) >= self.args.batch_size:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            self.embed(batch)
        except (MemoryError, RuntimeError, ValueError) as e:
            if len(batch) == 1:
                index = batch[0][0]
                return self.record(index, {"error": f"{self.files[index]}: embedding failed: {str(e).splitlines()[0]}"})
            for item in batch:  # find the one bad image; the others still get embedded
                self.pending = [item]
                self.flush()

    def embed(self, batch: list[tuple[int, object]]) -> None:
        embeddings = embed_images(self.dino, [image for _, image in batch], self.args.pooling,
                                  self.args.resolution or None, self.cache_dir,
                                  sources=[str(self.files[i]) for i, _ in batch], batch_size=len(batch))
        for (index, _), emb in zip(batch, embeddings):
            self.record(index, self.embedding_line(index, emb.meta["key"], "computed"))

    def write_manifest(self) -> Path:
        manifest = self.args.out / "manifest.jsonl"
        tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for line in self.lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        os.replace(tmp, manifest)
        return manifest


def config_fingerprint(dino: Dino, prep: Preprocessing, pooling: str) -> str:
    """What besides the pixels decides the key: a re-run with other settings never trusts old lines."""
    payload = json.dumps([CACHE_FORMAT, dino.identity, prep.as_dict(), pooling], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_previous_manifest(path: Path) -> dict[str, dict]:
    """image -> line of an earlier run's manifest (a missing or damaged manifest just means no shortcut)."""
    found: dict[str, dict] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict) and "image" in line:
                    found[str(line["image"])] = line
    except OSError:
        pass
    return found


def load_model_or_fail(args: argparse.Namespace) -> Dino:
    try:
        dino = load_dinov2(args.model, device=args.device, dtype=args.dtype)
        dino.preprocessing(args.resolution or None)  # validates --resolution before any work
        _ = dino.identity
        return dino
    except (OSError, ValueError) as e:
        raise SystemExit(fail(str(e).splitlines()[0])) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if not args.images.is_dir():
        return fail(f"--images {args.images}: not a folder")
    files = list(iter_image_files(args.images, recursive=not args.no_recursive))
    if not files:
        return fail(f"--images {args.images}: no image files (.jpg .png .webp .bmp .tif) found", 1)
    dino = load_model_or_fail(args)
    args.out.mkdir(parents=True, exist_ok=True)

    run = Run(args, dino, files)
    try:
        for index in range(len(files)):
            run.visit(index)
        run.flush()
    except OSError as e:  # model weights unreadable, disk full: nothing sensible to continue with
        return fail(f"{e}", 1)
    finally:
        run.bar.close()
    manifest = run.write_manifest()

    statuses = [line.get("status", "error") for line in run.lines if line]
    computed, cached, errors = statuses.count("computed"), statuses.count("cached"), statuses.count("error")
    print(f"precompute_dinov2: {len(files)} images: {computed} computed, {cached} cached, {errors} error(s); "
          f"model {dino.name} ({dino.identity[:12]}), pooling {args.pooling}, {run.prep.resolution} px, "
          f"{'model loaded' if dino.is_loaded else 'model not loaded'}; manifest {manifest}; "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    if errors and (args.strict or computed + cached == 0):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
