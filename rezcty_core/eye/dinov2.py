"""The eye: DINOv2 image embeddings with one preprocessing path and one content-addressed cache.

    dino = load_dinov2("embedded")                 # a handle; weights load on first use
    embs = embed_images(dino, [rgb_uint8, ...], pooling="cls", cache_dir="feats/")
    embs[0].vector, embs[0].meta                   # torch tensor (dim,) or (tokens, dim), dict

The ComfyUI node and `training.precompute_dinov2` both call `embed_images`, so a picture
gives the same key, the same cache file and the same features in training and inference.
Nothing here imports torch or transformers until a model must actually run, so a fully
cached pass never loads them. Memory belongs to the host (`rezcty_core.common.residency`): the weights load
on first use on the host's device and, inside ComfyUI, its memory manager evicts and releases them. The
embedding record and its cache files are `eye/embedding.py`; the embedded default model is prepared by
`eye/dinov2_onnx.py`.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rezcty_core.common import residency
from rezcty_core.common.embedded_models import require
from rezcty_core.common.paths import embedded_dir
from rezcty_core.eye.dinov2_onnx import EMBEDDED_NAME
from rezcty_core.eye.embedding import (
    EmbeddingList,
    ImageEmbedding,
    cache_key,
    cache_path,
    pixel_hash,
    read_cache,
    write_embedding_file,
)

if TYPE_CHECKING:
    import torch

POOLINGS = ("cls", "mean", "cls+mean", "patch")
EMBEDDED_ALIASES = ("embedded", EMBEDDED_NAME, f"embedded: {EMBEDDED_NAME}")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 224
# DINOv2's evaluation recipe: resize the short side to 256/224 of the crop, then centre-crop.
RESIZE_RATIO = 256 / 224
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# ---------------------------------------------------------------------------------------------
# models


@dataclass(frozen=True)
class Preprocessing:
    resolution: int
    resize: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def as_dict(self) -> dict:
        return {"resolution": self.resolution, "resize_short_side": self.resize, "crop": "center",
                "interpolation": "bicubic-antialias", "mean": list(self.mean), "std": list(self.std)}


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """`embedded` / `dinov2-small` / `embedded: dinov2-small` -> the converted embedded folder (EmbeddedModelMissing
    naming the prepare command when it is not there: a loader never converts); else a folder path."""
    if str(name_or_path).strip() in EMBEDDED_ALIASES:
        return require(EMBEDDED_NAME) / EMBEDDED_NAME
    path = Path(name_or_path).expanduser()
    if not path.is_dir() or not (path / "config.json").exists():
        raise FileNotFoundError(f"DINOv2 model folder not found or has no config.json: {path} "
                                "(expected a folder saved by transformers save_pretrained)")
    return path


def weight_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    return safetensors or files


_HASH_MEMO: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def _hash_memo_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "rezcty" / "weights_sha256.json"


def weights_hash(path: str | os.PathLike) -> str:
    """sha256 over the model's weight files (names and bytes). Memoised by (path, size, mtime)."""
    path = Path(path).resolve()
    files = weight_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no weight files (*.safetensors / *.bin) in the DINOv2 folder")
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    memo_key = (str(path), stamp)
    with _HASH_LOCK:
        if memo_key in _HASH_MEMO:
            return _HASH_MEMO[memo_key]
        disk_key = json.dumps([str(path), stamp])
        memo_file = _hash_memo_file()
        try:
            on_disk = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            on_disk = {}
        digest = on_disk.get(disk_key)
        if not digest:
            h = hashlib.sha256()
            for f in files:
                h.update(f.name.encode() + b"\0")
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        h.update(chunk)
            digest = h.hexdigest()
            on_disk[disk_key] = digest
            try:
                memo_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(on_disk))
                os.replace(tmp, memo_file)
            except OSError:
                pass  # a read-only home only costs a re-hash next time
        _HASH_MEMO[memo_key] = digest
        return digest


class Dino:
    """A DINOv2 model handle. Cheap to create: config and identity are read from disk, weights load on first use."""

    kind = "DINOv2"
    movable = True

    def __init__(self, path: str | os.PathLike, device: str = "auto", dtype: str = "auto", name: str | None = None):
        self.path = Path(path)
        self.name = name or (EMBEDDED_NAME if self.path.resolve() == (embedded_dir() / EMBEDDED_NAME).resolve()
                             else self.path.name)
        self.requested_device, self.requested_dtype = device, dtype
        if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        if dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"dtype must be auto, fp32, fp16 or bf16, got {dtype!r}")
        self._device: str | None = None
        self.patcher = None  # the host's record of the loaded weights (ComfyUI: a ModelPatcher)
        self.loads = 0  # how often this handle read its weights from disk
        config = json.loads((self.path / "config.json").read_text())
        self.config = config
        self.hidden_size = int(config.get("hidden_size", 384))
        self.patch_size = int(config.get("patch_size", 14))
        self.num_register_tokens = int(config.get("num_register_tokens", 0) or 0)
        self.default_resolution = _default_resolution(self.path)
        self._identity: str | None = None
        self._model = None
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.name

    @property
    def dim(self) -> int:
        return self.hidden_size

    @property
    def identity(self) -> str:
        """The weights hash: part of every cache key, so other weights never reuse these features."""
        if self._identity is None:
            self._identity = weights_hash(self.path)
        return self._identity

    def weights_bytes(self) -> int:
        """Size of the weights once loaded in the chosen dtype (the files may be stored in fp32)."""
        stored = sum(f.stat().st_size for f in weight_files(self.path))
        return stored if self.torch_dtype == _torch().float32 else stored // 2

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str:
        """The host's device for the requested one (ComfyUI's inside ComfyUI), resolved on first use: a fully
        cached pass never imports torch."""
        if self._device is None:
            self._device = residency.host().device(self.requested_device)
        return self._device

    @property
    def torch_dtype(self) -> torch.dtype:
        return _resolve_dtype(self.requested_dtype, self.device)

    @property
    def model(self):
        """The transformers model, ready for a forward pass: loaded on first access, on the host's device."""
        residency.host().use(self)
        return self._model

    # -- residency (what the host calls) --------------------------------------------------
    @property
    def weights_loaded(self) -> bool:
        return self._model is not None

    def memory_needed(self) -> int:
        return int(self.weights_bytes() * 1.2)

    def load_weights(self, device: str) -> None:
        with self._lock:
            if self._model is None:
                from transformers import AutoModel

                model = AutoModel.from_pretrained(str(self.path), dtype=self.torch_dtype,
                                                  attn_implementation="sdpa", local_files_only=True)
                self._model = model.to(device).eval().requires_grad_(False)
                self.loads += 1
                print(f"[rezcty] DINOv2 weights loaded from disk: {self.name} on {device} "
                      f"(load {self.loads} of this handle)", file=sys.stderr, flush=True)

    def weight_modules(self) -> dict:
        return {"dinov2": self._model} if self._model is not None else {}

    def drop_weights(self) -> None:
        """Forget the weights (the handle stays usable and reloads on next use) and give the memory back."""
        with self._lock:
            if self._model is None:
                return
            self._model = None  # `patcher` is the host's to replace
        gc.collect()
        torch = _torch()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        print(f"[rezcty] DINOv2 weights dropped: {self.name}", file=sys.stderr, flush=True)

    def preprocessing(self, resolution: int | None = None) -> Preprocessing:
        resolution = int(resolution or self.default_resolution)
        if resolution <= 0 or resolution % self.patch_size:
            raise ValueError(f"resolution {resolution} must be a positive multiple of the patch size "
                             f"{self.patch_size} (e.g. 224, 448, 518)")
        return Preprocessing(resolution, int(round(resolution * RESIZE_RATIO)))

    def unload(self) -> None:
        """Free the weights now, through the host (the handle stays usable and reloads on next use)."""
        residency.host().unload(self)

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"Dino({self.name}, dim={self.dim}, patch={self.patch_size}, {state}, path={self.path})"


# Weak: a handle is shared while someone holds it (ComfyUI's node cache, a script), never kept alive here.
_LOADED: weakref.WeakValueDictionary[tuple, Dino] = weakref.WeakValueDictionary()
_LOADED_LOCK = threading.Lock()


def load_dinov2(name_or_path: str | os.PathLike = "embedded", device: str = "auto", dtype: str = "auto") -> Dino:
    """A (shared) handle on a DINOv2 folder; the weights load lazily on the first forward pass."""
    path = resolve_model_path(name_or_path)
    key = (str(path.resolve()), device, dtype)
    with _LOADED_LOCK:
        dino = _LOADED.get(key)
        if dino is None:
            dino = _LOADED[key] = Dino(path, device, dtype)
    keep = getattr(residency.host(), "keep", None)
    if keep is not None:  # scripts: stays loaded until unload(), as the node's weights stay until ComfyUI evicts them
        keep(dino, True)
    return dino


def unload_all() -> None:
    """Drop the weights of every live handle."""
    with _LOADED_LOCK:
        items = list(_LOADED.values())
    for dino in items:
        dino.unload()


def _default_resolution(path: Path) -> int:
    try:
        cfg = json.loads((path / "preprocessor_config.json").read_text())
        crop = cfg.get("crop_size", DEFAULT_RESOLUTION)
        return int(crop["height"] if isinstance(crop, dict) else crop)
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_RESOLUTION


def _torch():
    import torch

    return torch


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    torch = _torch()
    if dtype == "auto":  # the pack's precision policy: a T4 reports bf16 "supported" but only emulates it
        from rezcty_core.common.precision import choose_precision

        return choose_precision(device).torch_dtype
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


# ---------------------------------------------------------------------------------------------
# preprocessing and the forward pass


def preprocess(images: Sequence[np.ndarray], prep: Preprocessing, device: str = "cpu") -> torch.Tensor:
    """RGB uint8 HWC arrays -> normalised (B, 3, R, R) float32: short side to `prep.resize`, centre crop."""
    torch = _torch()
    import torch.nn.functional as F

    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1) * 255.0
    out = []
    for image in images:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {arr.dtype} {arr.shape}")
        arr = arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr, copy=True)
        x = torch.from_numpy(arr).to(device).permute(2, 0, 1)[None].float()
        h, w = arr.shape[:2]
        scale = prep.resize / min(h, w)
        nh, nw = max(prep.resolution, round(h * scale)), max(prep.resolution, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 255)
        top, left = (nh - prep.resolution) // 2, (nw - prep.resolution) // 2
        out.append(x[..., top:top + prep.resolution, left:left + prep.resolution])
    return (torch.cat(out) - mean) / std


def pool(hidden: torch.Tensor, pooling: str, num_register_tokens: int = 0) -> torch.Tensor:
    """last_hidden_state (B, 1 + registers + patches, D) -> (B, D), (B, 2D) or (B, patches, D)."""
    torch = _torch()
    cls = hidden[:, 0]
    patches = hidden[:, 1 + num_register_tokens:]
    if pooling == "cls":
        return cls
    if pooling == "mean":
        return patches.mean(1)
    if pooling == "cls+mean":
        return torch.cat([cls, patches.mean(1)], dim=-1)
    if pooling == "patch":
        return patches
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def forward(dino: Dino, pixel_values: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pooled features (float32, on CPU) for a preprocessed batch."""
    torch = _torch()
    model = dino.model
    with torch.inference_mode():
        hidden = model(pixel_values=pixel_values.to(dino.device, dtype=dino.torch_dtype)).last_hidden_state
        return pool(hidden.float(), pooling, dino.num_register_tokens).cpu()


@dataclass
class _Pending:
    index: int
    image: np.ndarray
    meta: dict


def embedding_meta(dino: Dino, image: np.ndarray, pooling: str, prep: Preprocessing, source: str) -> dict:
    """Everything that describes one embedding, including its cache key; needs no torch."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    grid = prep.resolution // dino.patch_size
    dim = dino.dim * 2 if pooling == "cls+mean" else dino.dim
    meta = {"model": dino.name, "model_hash": dino.identity, "dim": dim, "hidden_size": dino.dim,
            "pooling": pooling, "resolution": prep.resolution, "patch_size": dino.patch_size,
            "source": source, "image_size": [int(image.shape[1]), int(image.shape[0])],
            "shape": [grid * grid, dim] if pooling == "patch" else [dim]}
    if pooling == "patch":
        meta["grid"] = [grid, grid]
    meta["key"] = cache_key(pixel_hash(image), dino.identity, prep.as_dict(), pooling)
    return meta


def embed_images(dino: Dino, images: Sequence[np.ndarray], pooling: str = "cls", resolution: int | None = None,
                 cache_dir: str | os.PathLike | None = None, *, sources: Sequence[str] | None = None,
                 batch_size: int = 16, progress: Callable[[int, int], None] | None = None) -> EmbeddingList:
    """One ImageEmbedding per RGB uint8 image, in order. Cached files are reused; a corrupt one is recomputed."""
    prep = dino.preprocessing(resolution)
    total = len(images)
    results: list[ImageEmbedding | None] = [None] * total
    pending: list[_Pending] = []
    done = 0
    for i, image in enumerate(images):
        source = sources[i] if sources is not None else f"image[{i}]"
        meta = embedding_meta(dino, image, pooling, prep, source)
        cached = read_cache(cache_dir, meta) if cache_dir is not None else None
        if cached is not None:
            results[i] = cached
            done += 1
        else:
            pending.append(_Pending(i, image, meta))
    if progress:
        progress(done, total)
    for start in range(0, len(pending), max(1, batch_size)):
        chunk = pending[start:start + batch_size]
        features = forward(dino, preprocess([p.image for p in chunk], prep, dino.device), pooling)
        for item, vector in zip(chunk, features):
            vector = vector.clone()
            emb = ImageEmbedding(vector, dict(item.meta, dtype=str(dino.torch_dtype).replace("torch.", "")))
            if cache_dir is not None:
                write_embedding_file(cache_path(cache_dir, item.meta["key"]), vector, emb.meta)
            results[item.index] = emb
        done += len(chunk)
        if progress:
            progress(done, total)
    return EmbeddingList(results)

