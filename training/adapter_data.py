"""The adapter training data: `dataset.jsonl` lines -> checked examples with their image vectors.

One line per example:
    {"image_embedding_path": "embeddings/img001.safetensors", "input_text": "a knight", "output_text": "..."}
`image_embedding_path` is optional (relative to the JSONL's folder); for the judge, `output_text`
is a JSON object (or a string holding one) with verdict, reasons, title, keywords.

Bad lines are reported as `FILE:LINE: problem` and skipped (or fatal with strict=True); embeddings
from another DINOv2 model, dimension or pooling than the rest are refused the same way.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rezcty_core.eye.embedding import load_embedding, read_embedding_header


class DatasetError(ValueError):
    """A dataset problem that stops training (strict mode, or nothing usable left)."""


@dataclass
class Example:
    line: int
    input_text: str
    output_text: str
    embedding_path: Path | None = None
    image_path: Path | None = None  # only for --encode-inline benchmarking
    eye: tuple | None = None  # (model_hash, dim, pooling) of the embedding
    meta: dict = field(default_factory=dict)
    vector: Any = None


@dataclass
class Dataset:
    examples: list[Example]
    problems: list[str]
    eye: dict | None  # {"model", "model_hash", "dim", "pooling"} shared by every embedding, or None

    @property
    def has_images(self) -> bool:
        return any(e.embedding_path or e.image_path for e in self.examples)


def _answer_text(value: Any, specialist: str) -> str:
    if specialist == "judge":
        obj = json.loads(value) if isinstance(value, str) else value
        if not isinstance(obj, dict) or "verdict" not in obj:
            raise ValueError("judge output_text must be a JSON object with at least 'verdict'")
        return json.dumps(obj, ensure_ascii=False)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("output_text must be a non-empty string")
    return value.strip()


def parse_line(raw: str, lineno: int, root: Path, specialist: str, text_only: bool = False) -> Example:
    """One JSONL line -> Example; raises ValueError with what is wrong."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    text = obj.get("input_text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'input_text'")
    if "output_text" not in obj:
        raise ValueError("missing 'output_text'")
    try:
        answer = _answer_text(obj["output_text"], specialist)
    except json.JSONDecodeError as e:
        raise ValueError(f"judge output_text is not valid JSON ({e.msg})") from None
    example = Example(lineno, text.strip(), answer)
    if text_only:
        return example
    if obj.get("image_embedding_path"):
        path = root / str(obj["image_embedding_path"])
        if not path.is_file():
            raise ValueError(f"embedding file {obj['image_embedding_path']} not found (looked in {path.parent})")
        meta = read_embedding_header(path)
        if meta is None:
            raise ValueError(f"embedding file {obj['image_embedding_path']} is corrupt or not a rezcty embedding")
        example.embedding_path, example.meta = path, meta
        example.eye = (meta.get("model_hash"), int(meta.get("dim", 0)), meta.get("pooling"))
    if obj.get("image_path"):
        path = root / str(obj["image_path"])
        if not path.is_file():
            raise ValueError(f"image file {obj['image_path']} not found")
        example.image_path = path
    return example


def read_dataset(path: str | Path, specialist: str = "whisperer", strict: bool = False,
                 text_only: bool = False, load_vectors: bool = True) -> Dataset:
    """Read and check a dataset.jsonl; problems are collected as `FILE:LINE: what` strings."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    examples: list[Example] = []
    problems: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                examples.append(parse_line(raw, lineno, path.parent, specialist, text_only))
            except ValueError as e:
                problems.append(f"{path}:{lineno}: {e}; line skipped")
    eyes = Counter(e.eye for e in examples if e.eye)
    eye = None
    if eyes:
        majority = eyes.most_common(1)[0][0]
        kept = []
        for e in examples:
            if e.eye and e.eye != majority:
                problems.append(f"{path}:{e.line}: embedding from model hash {e.eye[0]} dim {e.eye[1]} pooling {e.eye[2]} "
                                f"differs from the rest (hash {majority[0]} dim {majority[1]} pooling {majority[2]}); "
                                "refused, line skipped")
            else:
                kept.append(e)
        examples = kept
        first = next(e.meta for e in examples if e.eye)
        eye = {"model": first.get("model"), "model_hash": majority[0], "dim": majority[1], "pooling": majority[2]}
    if problems and strict:
        raise DatasetError(problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
    if not examples:
        raise DatasetError(f"{path}: no usable example" + (f" ({len(problems)} lines skipped)" if problems else ""))
    if load_vectors:
        for e in examples:
            if e.embedding_path:
                e.vector = load_embedding(e.embedding_path).vector
    return Dataset(examples, problems, eye)


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A deterministic held-out split (at least one held-out example when fraction > 0 and n >= 2)."""
    import random

    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]
