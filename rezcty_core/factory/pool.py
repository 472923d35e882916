"""A batch over one workflow and a pool of servers: each item queued once, resumed after a stop, one failure never stops the rest."""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rezcty_core.factory.api import IMAGE_EXTS, ComfyClient
from rezcty_core.factory.batch import BatchReport, Item, Manifest
from rezcty_core.factory.errors import ClientError, PromptFailed, ServerUnavailable, ValidationFailed
from rezcty_core.factory.workflow import set_input

NAMESPACE = uuid.UUID("5b0c7a4e-7d1e-4f8e-9a53-2f3c1e0a9d10")
class Batch:
    """A batch of items over one workflow and a pool of servers, resumable from OUT/manifest.jsonl."""

    def __init__(self, graph: dict, items: list[Item], servers: list[str], out_dir: str | Path,
                 timeout: float = 3600.0, unreachable_timeout: float = 60.0, retry_failed: bool = False,
                 progress: bool = True, log: Callable[[str], None] | None = None):
        if not servers:
            raise ClientError("no --server given")
        self.graph = graph
        self.items = items
        self.out_dir = Path(out_dir)
        self.files_dir = self.out_dir / "files"
        self.timeout = timeout
        self.retry_failed = retry_failed
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.clients = [ComfyClient(u, unreachable_timeout=unreachable_timeout, log=self.log) for u in servers]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.out_dir / "manifest.jsonl")
        self.batch_id = str(self.out_dir.resolve())
        self.stop_all = threading.Event()

    # -- per item ---------------------------------------------------------------------------
    def prompt_id(self, key: str, attempt: int) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{self.batch_id}|{key}|{attempt}"))

    def item_graph(self, item: Item) -> dict:
        graph = json.loads(json.dumps(self.graph))
        for target, value in item.values.items():
            set_input(graph, target, value)
        return graph

    def _finish(self, client: ComfyClient, item: Item, graph: dict, pid: str, entry: dict, attempt: int) -> None:
        prefix = f"{item.key[:8]}_"
        result = client.collect(pid, entry, graph, self.files_dir, file_prefix=prefix)
        if item.prompt:
            for f in result.files:
                if f.suffix.lower() in IMAGE_EXTS:
                    f.with_suffix(".txt").write_text(item.prompt + "\n", encoding="utf-8")
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
        attempt = int(state.get("attempt", 0)) + 1
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
        work: queue.Queue[Item] = queue.Queue()
        for item in todo:
            work.put(item)
        bar = _progress_bar(len(self.items), len(self.items) - len(todo), self.progress)
        lock = threading.Lock()
        dead: set[str] = set()
        in_flight = [0]  # items being run by some worker: one may come back if its server dies

        def take() -> Item | None:
            """The next item; None when the batch is over. Waits while others still hold items."""
            while not self.stop_all.is_set():
                with lock:
                    try:
                        item = work.get_nowait()
                    except queue.Empty:
                        if in_flight[0] == 0:
                            return None
                    else:
                        in_flight[0] += 1
                        return item
                time.sleep(0.2)
            return None

        def worker(client: ComfyClient) -> None:
            down_since: float | None = None
            while (item := take()) is not None:
                try:
                    self.run_item(client, item)
                except ServerUnavailable as e:
                    with lock:
                        work.put(item)  # another server (or this one, once back) takes it
                        in_flight[0] -= 1
                    down_since = down_since or time.time()
                    self.log(f"[client] {client.url}: {e}")
                    while not client.alive():
                        if time.time() - down_since > client.unreachable_timeout:
                            with lock:
                                dead.add(client.url)
                                if len(dead) == len(self.clients):
                                    self.stop_all.set()
                            return
                        time.sleep(1.0)
                    client.object_info(refresh=True)
                    continue
                except BaseException:
                    with lock:
                        in_flight[0] -= 1
                    raise
                down_since = None
                with lock:
                    in_flight[0] -= 1
                    bar.update(1)

        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bar.close()
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


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="item", desc="batch", file=sys.stderr)


