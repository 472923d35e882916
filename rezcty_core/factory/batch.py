"""Batch items (ideas, prompts, images), their stable keys, and the append-only manifest a batch resumes from."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rezcty_core.factory.api import IMAGE_EXTS
from rezcty_core.factory.errors import ClientError


@dataclass
class Item:
    """One unit of a batch: a key that survives restarts, the values bound into the graph, a label."""

    key: str
    label: str
    values: dict  # "NODE.INPUT" -> value
    prompt: str | None = None  # the text this item is about (written next to its images)
    source: dict = field(default_factory=dict)


def _stable_keys(contents: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for text in contents:
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        seen[h] = seen.get(h, 0) + 1
        keys.append(h if seen[h] == 1 else f"{h}-{seen[h]}")
    return keys


def items_from_ideas(path: Path, bind: str) -> list[Item]:
    """One idea per non-empty line (`#` starts a comment line)."""
    ideas = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    ideas = [i for i in ideas if i and not i.startswith("#")]
    return [Item(k, i[:60], {bind: i}, prompt=None, source={"idea": i}) for k, i in zip(_stable_keys(ideas), ideas)]


def items_from_prompts(path: Path, bind: str, maps: dict[str, str]) -> list[Item]:
    """A JSON list of strings or of objects with at least "prompt" (line 1's prompts.json works as is)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ClientError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if not isinstance(data, list):
        raise ClientError(f"{path}: expected a JSON list of prompts (strings or objects with \"prompt\")")
    rows = []
    for n, entry in enumerate(data, 1):
        if isinstance(entry, str):
            entry = {"prompt": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise ClientError(f"{path}: entry {n} has no \"prompt\" text")
        rows.append(entry)
    keys = _stable_keys([json.dumps(r, sort_keys=True) for r in rows])
    items = []
    for key, row in zip(keys, rows):
        values = {bind: row["prompt"]}
        for field_name, target in maps.items():
            if field_name in row:
                values[target] = row[field_name]
        items.append(Item(key, row["prompt"][:60], values, prompt=row["prompt"], source=row))
    return items


def items_from_images(folder: Path, bind: str, text_bind: str | None) -> list[Item]:
    """Every image under a folder (sorted); a sidecar NAME.txt holds the image's prompt when present."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ClientError(f"{folder}: no images (looked for {', '.join(sorted(IMAGE_EXTS))})")
    contents = []
    for p in files:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        contents.append(f"{p.relative_to(folder)}|{digest}")
    items = []
    for key, p in zip(_stable_keys(contents), files):
        values: dict = {bind: str(p.resolve())}
        prompt = None
        sidecar = p.with_suffix(".txt")
        if sidecar.is_file():
            prompt = sidecar.read_text(encoding="utf-8").strip()
            if text_bind and prompt:
                values[text_bind] = prompt
        items.append(Item(key, str(p.relative_to(folder)), values, prompt=prompt, source={"image": str(p)}))
    return items


def default_bind(graph: dict, kind: str) -> str | None:
    """Where a batch item goes when --bind is not given, from the node types in the workflow."""
    prefs = {
        "ideas": [("RezctyWhispererExpand", "prompt"), ("PrimitiveStringMultiline", "value"), ("PrimitiveString", "value")],
        "prompts": [("RezctyEmbeddingBridge", "text"), ("CLIPTextEncode", "text"), ("PrimitiveStringMultiline", "value")],
        "images": [("LoadImage", "image")],
        "image_text": [("RezctyMetadataWriter", "prompt")],
    }[kind]
    for class_type, name in prefs:
        ids = sorted((k for k, v in graph.items() if v.get("class_type") == class_type), key=_node_sort_key)
        if ids:
            return f"{ids[0]}.{name}"
    return None


def _node_sort_key(node_id: str) -> tuple:
    return (0, int(node_id)) if str(node_id).isdigit() else (1, str(node_id))


class Manifest:
    """Append-only JSON lines; the last line about an item is its state. Safe across threads."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.state: dict[str, dict] = {}
        if path.exists():
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    # a line cut short by a kill: everything before it still counts
                    print(f"[client] {path}:{n}: unreadable line ignored", file=sys.stderr)
                    continue
                if rec.get("key"):
                    self.state[rec["key"]] = {**self.state.get(rec["key"], {}), **rec}

    def write(self, record: dict) -> None:
        record = {**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self.lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if record.get("key"):
                self.state[record["key"]] = {**self.state.get(record["key"], {}), **record}


@dataclass
class BatchReport:
    done: list[str]
    failed: dict[str, str]
    pending: list[str]
    out_dir: Path

    @property
    def complete(self) -> bool:
        return not self.pending


def write_prompts_json(results: list[dict], collect: str | None, path: Path) -> list[dict]:
    """From an ideas batch's results: [{"idea", "prompt"}] for line 2 (`--prompts`)."""
    rows = []
    for r in results:
        if r.get("status") != "done":
            continue
        texts = r.get("texts", {})
        chosen = texts.get(collect) if collect else None
        if chosen is None and texts:
            chosen = texts[sorted(texts, key=_node_sort_key)[-1]]
        for text in chosen or []:
            rows.append({"idea": r.get("idea", r.get("label")), "prompt": text})
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return rows


