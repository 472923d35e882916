"""A batch: its items (ideas, prompts, images) with stable keys, the append-only manifest it resumes from, and
`Batch`, which runs the items of one workflow on a pool of servers (`pool.run_pool`): each item queued once,
resumed after a stop, one failure never stops the rest."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rezcty_core.factory import blueprint
from rezcty_core.factory.api import IMAGE_EXTS, ComfyClient
from rezcty_core.factory.errors import ClientError, PromptFailed, ServerUnavailable, ValidationFailed
from rezcty_core.factory.pool import run_pool
from rezcty_core.factory.workflow import set_input

NAMESPACE = uuid.UUID("5b0c7a4e-7d1e-4f8e-9a53-2f3c1e0a9d10")


def prompt_id(batch_id: str, key: str, attempt: int) -> str:
    """The ComfyUI prompt id of one attempt at one item: a new attempt (a redelivered item) gets a new id."""
    return str(uuid.uuid5(NAMESPACE, f"{batch_id}|{key}|{attempt}"))


def write_prompt_sidecars(files: list[Path], prompt: str | None) -> None:
    """NAME.txt beside each image holds the item's prompt (line 2's files/ is line 3's --images)."""
    if prompt:
        for f in files:
            if f.suffix.lower() in IMAGE_EXTS:
                f.with_suffix(".txt").write_text(prompt + "\n", encoding="utf-8")


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


def items_from_prompts(path: Path, bind: str, maps: dict[str, str], graph: dict | None = None,
                       log=None) -> list[Item]:
    """A JSON list of strings or of objects with at least "prompt" (line 1's prompts.json works as is).

    With the workflow `graph`, an entry's blueprint fields (rezcty_core/factory/blueprint.py: seeds, preset,
    negative, checkpoint, LoRAs, embedding, VAE, upscaler) are bound into it; one item per seed. Absent
    fields keep the workflow's values (logged); an entry with a malformed field is reported and skipped."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
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
        rows.append((n, entry))
    where = blueprint.targets(graph) if graph is not None else None
    contents, plans = [], []
    defaulted: dict[str, int] = {}
    for n, row in rows:
        seeds, bound = None, None
        if where is not None:
            try:
                seeds = blueprint.seeds_of(row)
                bound = blueprint.bind(row, graph, where)
            except blueprint.BlueprintError as e:
                log(f"[client] {path}: entry {n} skipped: {e}")
                continue
            for name in bound.defaulted:
                defaulted[name] = defaulted.get(name, 0) + 1
            if bound.ignored:
                log(f"[client] {path}: entry {n}: {', '.join(bound.ignored)} not applied (no such node in the workflow)")
        base = json.dumps(row, sort_keys=True)
        for seed in seeds or [None]:
            # an entry without seeds keeps the key it always had (resuming an older batch works)
            contents.append(base if seed is None else f"{base}#seed={seed}")
            plans.append((n, row, seed, bound))
    if defaulted:
        shown = []
        for name in sorted(defaulted):
            current = _current(graph, where[name]) if where and where[name] else None
            shown.append(f"{name} ({defaulted[name]} of {len(rows)}" + (f", workflow value {current!r})" if current is not None else ")"))
        log(f"[client] {path}: blueprint fields absent, the workflow's values are used: {'; '.join(shown)}")
    items = []
    for key, (_n, row, seed, bound) in zip(_stable_keys(contents), plans):
        values = dict(bound.values) if bound else {}
        if seed is not None:
            for target in where["seeds"]:
                values[target] = seed
        values[bind] = row["prompt"]
        for field_name, target in maps.items():
            if field_name in row:
                values[target] = row[field_name]
        label = row["prompt"][:60] if seed is None else f"{row['prompt'][:48]} #seed {seed}"
        items.append(Item(key, label, values, prompt=row["prompt"], source={**row, **({"seed": seed} if seed is not None else {})}))
    return items


def _current(graph: dict, targets: list[str]):
    node, _, name = targets[0].rpartition(".")
    if not name or node not in graph:
        return None
    v = graph[node].get("inputs", {}).get(name)
    return None if isinstance(v, list) else v


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


def write_prompts_json(results: list[dict], collect: str | None, path: Path, defaults: dict | None = None,
                       variations: int = 1, base_seed: int = 0, preset: str | None = None) -> list[dict]:
    """From an ideas batch's results: [{"idea", "prompt", "seeds", ...blueprint}] for line 2 (`--prompts`).

    Each prompt gets `variations` distinct recorded seeds, the preset when given and the `defaults`
    (blueprint fields read from a line-2 workflow, `blueprint.defaults_from_graph`)."""
    rows = []
    for r in results:
        if r.get("status") != "done":
            continue
        texts = r.get("texts", {})
        chosen = texts.get(collect) if collect else None
        if chosen is None and texts:
            chosen = texts[sorted(texts, key=_node_sort_key)[-1]]
        chosen = chosen or []
        # ideas sent together as one item (one prompt each, in order): each prompt names its own idea
        ideas = r.get("ideas") if isinstance(r.get("ideas"), list) and len(r["ideas"]) == len(chosen) else None
        for n, text in enumerate(chosen):
            idea = ideas[n] if ideas else r.get("idea", r.get("label"))
            rows.append(blueprint.make_entry(idea, text, defaults or {}, variations, base_seed, preset))
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return rows


class Batch:
    """A batch of items over one workflow and a pool of servers, resumable from OUT/manifest.jsonl."""

    def __init__(self, graph: dict, items: list[Item], servers: list[str], out_dir: str | Path,
                 timeout: float = 3600.0, unreachable_timeout: float = 60.0, retry_failed: bool = False,
                 progress: bool = True, log: Callable[[str], None] | None = None):
        if not servers:
            raise ClientError("no --server given")
        self._open_folder(graph, items, out_dir, timeout, retry_failed, progress, log)
        self.clients = [ComfyClient(u, unreachable_timeout=unreachable_timeout, log=self.log) for u in servers]

    def _open_folder(self, graph: dict, items: list[Item], out_dir: str | Path, timeout: float, retry_failed: bool,
                     progress: bool, log: Callable[[str], None] | None) -> None:
        """The batch's items and its folder: OUT/files/ and the manifest (shared with the queue's batch)."""
        self.graph = graph
        self.items = items
        self.out_dir = Path(out_dir)
        self.files_dir = self.out_dir / "files"
        self.timeout = timeout
        self.retry_failed = retry_failed
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.clients = []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.out_dir / "manifest.jsonl")
        self.batch_id = str(self.out_dir.resolve())
        self.stop_all = threading.Event()

    # -- per item ---------------------------------------------------------------------------
    def prompt_id(self, key: str, attempt: int) -> str:
        return prompt_id(self.batch_id, key, attempt)

    def item_graph(self, item: Item) -> dict:
        graph = json.loads(json.dumps(self.graph))
        for target, value in item.values.items():
            set_input(graph, target, value)
        return graph

    def _finish(self, client: ComfyClient, item: Item, graph: dict, pid: str, entry: dict, attempt: int) -> None:
        prefix = f"{item.key[:8]}_"
        result = client.collect(pid, entry, graph, self.files_dir, file_prefix=prefix)
        write_prompt_sidecars(result.files, item.prompt)
        self.manifest.write({"key": item.key, "status": "done", "prompt_id": pid, "server": client.url,
                             "attempt": attempt, "label": item.label, "source": item.source,
                             "files": [str(f.relative_to(self.out_dir)) for f in result.files],
                             "texts": result.texts()})

    def _fail(self, client: ComfyClient, item: Item, pid: str, attempt: int, message: str) -> None:
        self.manifest.write({"key": item.key, "status": "failed", "prompt_id": pid, "server": client.url,
                             "attempt": attempt, "label": item.label, "source": item.source, "error": message})
        self.log(f"[client] item {item.label!r} failed: {message.splitlines()[0]}")

    def resume_item(self, client: ComfyClient, item: Item, state: dict) -> bool:
        """An item queued by an earlier run: collect it, wait for it, or report it lost (False)."""
        url, pid, attempt = state.get("server"), state.get("prompt_id"), int(state.get("attempt", 0))
        owner = next((c for c in self.clients if c.url == url), None) or ComfyClient(url, unreachable_timeout=5)
        try:
            entry = owner.history(pid)
            if entry is None and owner.in_queue(pid):
                entry = owner.wait(pid, self.timeout)
        except ServerUnavailable:
            return False
        if entry is None:
            return False
        graph = self.item_graph(item)
        try:
            self._finish(owner, item, graph, pid, entry, attempt)
        except PromptFailed as e:
            self._fail(owner, item, pid, attempt, str(e))
        return True

    def run_item(self, client: ComfyClient, item: Item) -> None:
        """Queue and finish one item on `client`; ServerUnavailable leaves it for another try."""
        state = self.manifest.state.get(item.key, {})
        if state.get("status") == "queued" and self.resume_item(client, item, state):
            return
        # an attempt left "queued" that no server knows (the client died before its POST) is still the same
        # attempt: same prompt id, so a kill in that gap never looks like a second run of the item
        attempt = max(1, int(state.get("attempt", 0)) + (0 if state.get("status") == "queued" else 1))
        pid = self.prompt_id(item.key, attempt)
        graph = self.item_graph(item)
        try:
            uploaded = client.upload_local_inputs(graph)
            try:
                client.check(graph, uploaded)
            except ValidationFailed as e:
                raise PromptFailed("; ".join(e.problems)) from None
            ws = client.open_ws()
            try:
                self.manifest.write({"key": item.key, "status": "queued", "prompt_id": pid, "server": client.url,
                                     "attempt": attempt, "label": item.label})
                client.queue(graph, pid)
                entry = client.wait(pid, self.timeout, ws=ws)
            finally:
                if ws is not None:
                    ws.close()
            self._finish(client, item, graph, pid, entry, attempt)
        except PromptFailed as e:
            self._fail(client, item, pid, attempt, str(e))
        except (OSError, ValueError) as e:  # an unreadable input file etc.: this item only
            self._fail(client, item, pid, attempt, f"{type(e).__name__}: {e}")

    # -- the pool ---------------------------------------------------------------------------
    def todo(self) -> list[Item]:
        out = []
        for item in self.items:
            status = self.manifest.state.get(item.key, {}).get("status")
            if status == "done" or (status == "failed" and not self.retry_failed):
                continue
            out.append(item)
        return out

    def preflight(self, todo: list[Item]) -> None:
        """Check the workflow once before anything is queued, so a wrong model name fails fast."""
        if not todo:
            return
        graph = self.item_graph(todo[0])
        local = {v for node in graph.values() for v in node.get("inputs", {}).values()
                 if isinstance(v, str) and Path(os.path.expanduser(v)).is_file()}
        for client in self.clients:
            try:
                client.check(graph, local)
                return
            except ServerUnavailable:
                continue
        raise ServerUnavailable("no server of the pool is reachable: " + ", ".join(c.url for c in self.clients))

    def run(self) -> BatchReport:
        todo = self.todo()
        self.preflight(todo)
        self.manifest.write({"event": "start", "items": len(self.items), "todo": len(todo),
                             "servers": [c.url for c in self.clients]})
        run_pool(self.clients, todo, self.run_item, total=len(self.items), progress=self.progress, log=self.log,
                 stop_all=self.stop_all)
        report = self.report()
        self.write_results()
        self.manifest.write({"event": "end", "done": len(report.done), "failed": len(report.failed),
                             "pending": len(report.pending)})
        return report

    def report(self) -> BatchReport:
        done, failed, pending = [], {}, []
        for item in self.items:
            state = self.manifest.state.get(item.key, {})
            if state.get("status") == "done":
                done.append(item.key)
            elif state.get("status") == "failed":
                failed[item.key] = state.get("error", "")
            else:
                pending.append(item.key)
        return BatchReport(done, failed, pending, self.out_dir)

    def write_results(self) -> None:
        """results.json: one entry per item in input order, with its status, files and texts."""
        rows = []
        for item in self.items:
            state = self.manifest.state.get(item.key, {})
            rows.append({"key": item.key, "label": item.label, **item.source, "status": state.get("status", "pending"),
                         "files": state.get("files", []), "texts": state.get("texts", {}),
                         **({"error": state["error"]} if state.get("status") == "failed" else {})})
        tmp = self.out_dir / "results.json.part"
        tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.out_dir / "results.json")
