"""Duplicate and near-duplicate detection: perceptual hash plus DINOv2 cosine, with a persistent history.

* `phash(rgb)`: 64-bit DCT perceptual hash (grey, 32x32 area resize, 8x8 lowest frequencies vs
  their median, DC left out). Robust to resizing, mild JPEG, small brightness changes.
* Cosine similarity of DINOv2 embeddings when they are given (tokens are mean-pooled); embeddings
  are only compared when they come from the same model (`meta["model_hash"]` or `meta["model"]`).
* `History`: one JSON line per accepted image in a file the caller places (the node uses
  `<ComfyUI output>/rezcty_qc/history.jsonl`, so a fresh base directory starts with none). A file lock
  keeps two runs from interleaving writes; a corrupt line is skipped with a warning, never fatal.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

log = logging.getLogger("rezcty.dedup")


def phash(rgb: np.ndarray) -> int:
    """64-bit perceptual hash of a uint8 HxWx3 (or HxW) image."""
    arr = np.asarray(rgb)
    grey = Image.fromarray(arr if arr.ndim == 2 else arr[..., :3]).convert("L")
    small = np.asarray(grey.resize((32, 32), Image.BOX), dtype=np.float64)
    low = dctn(small, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False  # the DC term only says how bright the image is
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return int(bin(a ^ b).count("1"))


def pooled_vector(vector: Any) -> np.ndarray:
    """An embedding vector (torch tensor or array, `(dim,)` or `(tokens, dim)`) as a float32 `(dim,)` array."""
    if hasattr(vector, "detach"):
        vector = vector.detach().float().cpu().numpy()
    arr = np.asarray(vector, dtype=np.float32)
    return arr.mean(axis=0) if arr.ndim == 2 else arr.ravel()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0 or a.shape != b.shape:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass
class Fingerprint:
    phash: int
    embedding: np.ndarray | None = None
    embedding_model: str | None = None
    label: str = ""

    def to_json(self) -> dict:
        return {"phash": f"{self.phash:016x}", "label": self.label, "embedding_model": self.embedding_model,
                "embedding": None if self.embedding is None else [round(float(v), 5) for v in self.embedding]}

    @classmethod
    def from_json(cls, data: dict) -> Fingerprint:
        emb = data.get("embedding")
        return cls(int(data["phash"], 16), None if emb is None else np.asarray(emb, dtype=np.float32),
                   data.get("embedding_model"), data.get("label", ""))


def fingerprint(rgb: np.ndarray, embedding: Any | None = None, label: str = "") -> Fingerprint:
    """pHash of the pixels plus, when given, the pooled vector of an `ImageEmbedding`-like object."""
    vec, model = None, None
    if embedding is not None:
        vec = pooled_vector(getattr(embedding, "vector", embedding))
        meta = getattr(embedding, "meta", {}) or {}
        model = str(meta.get("model_hash") or meta.get("model") or "") or None
    return Fingerprint(phash(rgb), vec, model, label)


@dataclass
class DuplicateIndex:
    """Fingerprints of accepted images; `match` finds the closest one within the thresholds."""

    phash_max_distance: int = 8
    embedding_min_cosine: float = 0.97
    items: list[Fingerprint] = field(default_factory=list)

    def add(self, fp: Fingerprint) -> None:
        self.items.append(fp)

    def match(self, fp: Fingerprint) -> dict | None:
        best: dict | None = None
        for other in self.items:
            dist = hamming(fp.phash, other.phash)
            cos = None
            if fp.embedding is not None and other.embedding is not None and fp.embedding_model == other.embedding_model:
                cos = cosine(fp.embedding, other.embedding)
            hit = dist <= self.phash_max_distance or (cos is not None and cos >= self.embedding_min_cosine)
            if hit and (best is None or dist < best["phash_distance"]):
                best = {"of": other.label, "phash_distance": dist, "cosine": None if cos is None else round(cos, 4)}
        return best


class History:
    """Accepted fingerprints of earlier runs, one JSON line each."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> list[Fingerprint]:
        if not self.path.is_file():
            return []
        out = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(Fingerprint.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                log.warning("%s:%d: skipped an unreadable history line (%s)", self.path, n, e)
        return out

    def append(self, fps: list[Fingerprint]) -> None:
        if not fps:
            return
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with FileLock(str(self.path) + ".lock"), open(self.path, "a") as f:
            for fp in fps:
                f.write(json.dumps({**fp.to_json(), "added": stamp}) + "\n")


# --- the similar-content budget (issue 28): at most `keep` accepted images per cluster of similar ones ---------

SIMILAR_MIN_COSINE = 0.92  # DINOv2 cosine for "similar" (below the duplicate's 0.97; bench/qc_similar_calibration.py)
SIMILAR_KEEP = 2  # accepted images per cluster of similar ones
# the most recent accepted images of earlier runs the budget counts: at 0.92 about 1 in 1000 unrelated images reads
# as similar, so a history of H gives each new image ~H/1000 false neighbours (two are needed to refuse it)
SIMILAR_HISTORY = 200
NO_EMBEDDINGS = "off: no image embeddings (connect DINOv2 Embed of this batch to image_embedding)"


def _similar(a: Fingerprint, b: Fingerprint, min_cosine: float) -> float | None:
    """The cosine when both have embeddings of the same model and it reaches min_cosine, else None."""
    if a.embedding is None or b.embedding is None or a.embedding_model != b.embedding_model:
        return None
    cos = cosine(a.embedding, b.embedding)
    return cos if cos >= min_cosine else None


def apply_similar_budget(entries: list[dict], fingerprints: list[Fingerprint | None], history: list[Fingerprint],
                         profile: dict) -> None:
    """Keep at most `duplicate.similar_keep` images per cluster of similar ones (DINOv2 cosine >= `duplicate.
    similar_min_cosine`), counting the accepted images of earlier runs (`history`) as kept: among this batch's passed
    images the best-scored stay, the rest become `reject` with reason `similar` and `measurements.similar_to`
    {"of": [kept labels], "cosine", "cluster", "keep"}. Members of a cluster get `similar_cluster` (its number) for
    the contact sheet. Only the `duplicate.similar_history` most recent remembered images count (null: all). Without
    embeddings there is no budget: each entry says so in `similar_budget`."""
    opts = profile.get("duplicate", {})
    keep = int(opts.get("similar_keep", SIMILAR_KEEP))
    min_cosine = float(opts.get("similar_min_cosine", SIMILAR_MIN_COSINE))
    recent = opts.get("similar_history", SIMILAR_HISTORY)
    history = history if recent is None else history[-int(recent):] if int(recent) > 0 else []
    passed = [i for i, e in enumerate(entries) if e["verdict"] == "pass" and fingerprints[i] is not None
              and fingerprints[i].embedding is not None]
    if not passed:
        if not any(fp is not None and fp.embedding is not None for fp in fingerprints):
            for entry in entries:
                entry["similar_budget"] = NO_EMBEDDINGS
        return
    if keep <= 0:
        return
    kept = [fp for fp in history if fp.embedding is not None]
    order = sorted(passed, key=lambda i: (-float(entries[i].get("score", 0.0)), i))
    refused: dict[int, dict] = {}
    for i in order:
        near = [(cos, fp.label) for fp in kept if (cos := _similar(fingerprints[i], fp, min_cosine)) is not None]
        if len(near) >= keep:
            near.sort(reverse=True)
            refused[i] = {"of": [label for _, label in near], "cosine": round(near[0][0], 4)}
        else:
            kept.append(fingerprints[i])
    # clusters: connected groups of similar images among this batch's passed ones (the contact sheet shows them)
    parent = {i: i for i in passed}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a_pos, a in enumerate(passed):
        for b in passed[a_pos + 1:]:
            if _similar(fingerprints[a], fingerprints[b], min_cosine) is not None:
                parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for i in passed:
        groups.setdefault(root(i), []).append(i)
    number = 0
    for members in sorted(groups.values()):
        if len(members) < 2 and not any(i in refused for i in members):
            continue
        number += 1
        for i in members:
            entries[i]["similar_cluster"] = number
            if i in refused:
                entry = entries[i]
                entry["verdict"] = "reject"
                entry["reasons"] = [*entry.get("reasons", []), "similar"]
                entry["measurements"]["similar_to"] = {**refused[i], "cluster": number, "keep": keep}
