"""The embedding record and its content-addressed feature cache: one safetensors file per
(pixels, model weights, preprocessing, pooling).

`ImageEmbedding` (`.vector`, `.meta`) is what `dinov2.embed_images` returns and `REZCTY_EMBEDDING` carries
(in an `EmbeddingList`); `cache_key` is the key the DINOv2 Embed node and `training.precompute_dinov2` share,
so a picture gets the same file name in training and inference. Reading a cache file needs no torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

CACHE_FORMAT = "rezcty-embedding/1"


@dataclass
class ImageEmbedding:
    """One image's features. `meta`: model, model_hash, dim, pooling, resolution, source, key (+ shape, grid)."""

    vector: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.meta.get("dim", self.vector.shape[-1]))

    @property
    def pooling(self) -> str:
        return str(self.meta.get("pooling", "cls"))

    @property
    def key(self) -> str:
        return str(self.meta.get("key", ""))

    def summary(self) -> str:
        shape = "x".join(str(s) for s in self.vector.shape)
        return (f"{self.meta.get('model')} ({str(self.meta.get('model_hash', ''))[:12]}) dim={self.dim} "
                f"pooling={self.pooling} tensor={shape} resolution={self.meta.get('resolution')} "
                f"norm={float(self.vector.float().norm()):.3f} source={self.meta.get('source')} key={self.key[:16]}")

    def __repr__(self) -> str:
        return f"ImageEmbedding({self.summary()})"

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as safetensors (tensor `embedding`, metadata as JSON)."""
        return write_embedding_file(Path(path), self.vector, self.meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImageEmbedding:
        return load_embedding(path)


class EmbeddingList(list):
    """What REZCTY_EMBEDDING carries: a list of ImageEmbedding (one per image) that prints usefully."""

    def __str__(self) -> str:
        if not self:
            return "0 DINOv2 embeddings"
        first = self[0].meta
        head = (f"{len(self)} DINOv2 embedding(s): model {first.get('model')} "
                f"(weights {str(first.get('model_hash', ''))[:12]}), dim {first.get('dim')}, "
                f"pooling {first.get('pooling')}, {first.get('resolution')} px")
        return "\n".join([head, *(f"[{i}] {e.summary()}" for i, e in enumerate(self))])

    __repr__ = __str__


def cosine_similarity(a: ImageEmbedding, b: ImageEmbedding) -> float:
    """Cosine similarity of two embeddings (token grids are mean-pooled first)."""
    va, vb = a.vector.float(), b.vector.float()
    if va.dim() > 1:
        va = va.mean(0)
    if vb.dim() > 1:
        vb = vb.mean(0)
    denom = float(va.norm() * vb.norm())
    return float((va * vb).sum()) / denom if denom > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# the cache: one safetensors file per (pixels, model, preprocessing, pooling)


def pixel_hash(image: np.ndarray) -> str:
    """Hash of decoded pixels (H, W, 3 uint8): the same picture gives the same hash whatever its file."""
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    h = hashlib.sha256(f"{arr.shape}".encode())
    h.update(arr.data)
    return h.hexdigest()


def cache_key(pixels: str, model_hash: str, preprocessing: dict, pooling: str) -> str:
    """Content-addressed key; also the cache file name (`<key>.safetensors`)."""
    payload = json.dumps({"format": CACHE_FORMAT, "pixels": pixels, "model": model_hash,
                          "preprocessing": preprocessing, "pooling": pooling}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"{key}.safetensors"


def write_embedding_file(path: Path, vector: torch.Tensor, meta: dict) -> Path:
    """Atomic write (temp file + rename): a crash never leaves a half-written cache file behind."""
    import torch
    from safetensors.torch import save

    data = vector.detach().to("cpu", dtype=torch.float32).contiguous()
    blob = save({"embedding": data}, metadata={
        "format": CACHE_FORMAT, "meta": json.dumps(meta, sort_keys=True),
        "sha256": hashlib.sha256(data.numpy().tobytes()).hexdigest(),
        "model": str(meta.get("model")), "dim": str(meta.get("dim")), "pooling": str(meta.get("pooling"))})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_embedding_header(path: str | os.PathLike) -> dict | None:
    """Validate a cache file without torch: header, sizes and data checksum. Its meta, or None if unusable."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        info = header["embedding"]
        start, end = info["data_offsets"]
        data = raw[8 + n + start:8 + n + end]
        extra = header.get("__metadata__", {})
        if (info["dtype"] != "F32" or len(data) != end - start or 8 + n + end != len(raw)
                or extra.get("format") != CACHE_FORMAT
                or hashlib.sha256(data).hexdigest() != extra.get("sha256")):
            return None
        return json.loads(extra["meta"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_embedding(path: str | os.PathLike) -> ImageEmbedding:
    """Read one embedding file (as written by the node or `training.precompute_dinov2`)."""
    from safetensors import safe_open

    meta = read_embedding_header(path)
    if meta is None:
        raise ValueError(f"{path}: not a valid rezcty embedding file (corrupt or truncated); delete it to recompute")
    with safe_open(str(path), framework="pt") as f:
        vector = f.get_tensor("embedding")
    return ImageEmbedding(vector, meta)


def read_cache(cache_dir: str | os.PathLike, meta: dict) -> ImageEmbedding | None:
    """The cached embedding of `meta["key"]` (its source set to `meta["source"]`), or None: absent or corrupt."""
    path = cache_path(cache_dir, meta["key"])
    if not path.exists():
        return None
    try:
        emb = load_embedding(path)
    except Exception:
        return None  # corrupt or truncated: recompute and overwrite
    if emb.meta.get("key") != meta["key"]:
        return None
    emb.meta["source"] = meta["source"]
    return emb
