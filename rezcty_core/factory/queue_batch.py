"""`batch --queue URL`: a batch whose items go to a task queue instead of being pushed to servers.

Same OUT folder as `batch --server` (`manifest.jsonl`, `files/`, `results.json`, the progress bar), same item
keys and resume. Each item is sent once as a task (`queue.TASK`) and recorded `queued` with its task id before
it is sent; a re-run sends nothing for an item that is done, still waiting on the broker, held by a worker or
finished but not collected yet, and sends again only an item the broker lost (a Redis restarted without its
data). Input files go to the workers through the store (`store.py`), outputs come back the same way; the
manifest records where each file came from. The first result per item key is kept; a late duplicate (an item
run twice after a worker was thought lost) is dropped, so each item's output is in OUT exactly once.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rezcty_core.factory.batch import Batch, Item, write_prompt_sidecars
from rezcty_core.factory.pool import _progress_bar
from rezcty_core.factory.queue import (
    KEEP,
    PREFIX,
    QUEUE,
    TASK,
    QueueUnavailable,
    check_broker,
    connection_errors,
    display_url,
    live_workers,
    make_app,
    redact,
    register_batch,
    resolve_url,
    task_id,
    tasks_on_broker,
    unregister_batch,
)
from rezcty_core.factory.store import INLINE_MAX, Store, StoreError, receive_output

LOST_CHECK = 30.0  # seconds between looks for items the broker lost while the batch waits


class QueueBatch(Batch):
    """A batch over a task queue, resumable from OUT/manifest.jsonl like `Batch` (whose folder logic it shares)."""

    def __init__(self, graph: dict, items: list[Item], queue_url: str, out_dir: str | Path, timeout: float = 3600.0,
                 store: str | None = None, inline_max: int = INLINE_MAX, broker_timeout: float = 60.0,
                 retry_failed: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                 workflow_label: str = ""):
        self._open_folder(graph, items, out_dir, timeout, retry_failed, progress, log)  # Batch's, without servers
        self.url = resolve_url(queue_url)
        self.shown = display_url(self.url)
        self.inline_max = inline_max
        self.broker_timeout = broker_timeout
        self.workflow_label = workflow_label
        self.store_url = str(store) if store else str((self.out_dir / "store").resolve())
        # the batch's name on the queue: kept from the first run (the folder may move or be mounted elsewhere), new
        # for a new folder, so a folder deleted and run again is a new batch, not one the queue remembers as done
        first = next((json.loads(line).get("queue_batch") for line in self._lines() if '"queue_batch"' in line), None)
        self.qid = first or uuid.uuid4().hex[:16]

    def _lines(self) -> list[str]:
        path = self.out_dir / "manifest.jsonl"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    # -- sending ----------------------------------------------------------------------------
    def job(self, item: Item, store: Store) -> dict:
        """The task's one argument (JSON): the graph with the item's values set, its input files described."""
        graph = self.item_graph(item)
        inputs = {}
        for node_id, node in graph.items():
            for name, value in node.get("inputs", {}).items():
                if isinstance(value, str) and value and Path(os.path.expanduser(value)).is_file():
                    inputs[f"{node_id}.{name}"] = store.send_input(Path(os.path.expanduser(value)), self.inline_max)
        return {"v": 1, "batch": self.qid, "key": item.key, "label": item.label, "graph": graph, "inputs": inputs,
                "store": self.store_url, "timeout": self.timeout, "inline_max": self.inline_max}

    def in_flight(self, app: Any, redis: Any, ids: list[str]) -> set[str]:
        """Which of these task ids the queue still has: waiting, held by a worker, or finished uncollected."""
        if not ids:
            return set()
        found = tasks_on_broker(redis) & set(ids)
        for tid in set(ids) - found:
            if app.backend.get_task_meta(tid).get("status") != "PENDING":  # STARTED, SUCCESS, FAILURE…
                found.add(tid)
        return found

    def lost(self, app: Any, redis: Any, ids: list[str]) -> set[str]:
        """Task ids the queue no longer has, seen twice a second apart (a message moving to a worker is in
        neither list for an instant)."""
        gone = set(ids) - self.in_flight(app, redis, ids)
        if gone:
            time.sleep(1.0)
            gone -= self.in_flight(app, redis, list(gone))
        return gone

    def send(self, app: Any, store: Store, item: Item) -> str | None:
        """Record the item queued, then send it; None when its input files cannot be read or stored."""
        state = self.manifest.state.get(item.key, {})
        send = int(state.get("send", 0)) + 1
        tid = task_id(self.qid, item.key, send)
        try:
            job = self.job(item, store)
        except (OSError, StoreError) as e:
            self.manifest.write({"key": item.key, "status": "failed", "label": item.label, "source": item.source,
                                 "error": f"input file: {e}"})
            self.log(f"[client] item {item.label!r} failed: input file: {e}")
            return None
        inputs = {target: {"from": spec["from"], "via": f"store:{spec['ref']}" if "ref" in spec else "message"}
                  for target, spec in job["inputs"].items()}
        self.manifest.write({"key": item.key, "status": "queued", "task_id": tid, "send": send, "queue": self.shown,
                             "label": item.label, **({"inputs": inputs} if inputs else {})})
        app.send_task(TASK, args=[job], task_id=tid, queue=QUEUE)
        return tid

    # -- collecting --------------------------------------------------------------------------
    def collect(self, app: Any, redis: Any, store: Store, item: Item, tid: str, meta: dict) -> None:
        """Write one finished task's outputs into OUT (once per item key) and record it."""
        res = meta.get("result")
        done_before = self.manifest.state.get(item.key, {}).get("status") == "done"
        if meta.get("status") != "SUCCESS" or not isinstance(res, dict):
            if not done_before:
                self._failed(item, tid, {}, f"the task failed on the worker: {res!r}"[:2000])
        elif res.get("status") == "duplicate" or done_before:
            if done_before:
                self.log(f"[client] item {item.label!r}: a second result (duplicate delivery) dropped")
        elif res.get("status") == "failed":
            self._failed(item, tid, res, res.get("error", ""))
        else:
            try:
                self._done(item, tid, res, store)
                redis.set(f"{PREFIX}done:{self.qid}:{item.key}", "1", ex=KEEP)
            except (OSError, StoreError) as e:
                self._failed(item, tid, res, f"collecting the outputs: {e}")
        if isinstance(res, dict) and res.get("files"):
            store.remove_tree(f"outputs/{self.qid}/{item.key}")  # this run's files and any duplicate's
        app.AsyncResult(tid).forget()

    def _done(self, item: Item, tid: str, res: dict, store: Store) -> None:
        prefix = f"{item.key[:8]}_"
        files: list[Path] = []
        origins = {}
        for spec in res.get("files", []):
            dest = self.files_dir / (prefix + Path(spec["name"]).name)
            n = 2
            while dest in files:  # two outputs of one item with one name
                dest = dest.with_name(f"{Path(spec['name']).stem}_{n}{dest.suffix}")
                n += 1
            via = receive_output(spec, store, dest)
            files.append(dest)
            origins[str(dest.relative_to(self.out_dir))] = {"worker": res.get("worker"), "server": res.get("server"),
                                                           "via": via, "sha256": spec.get("sha256")}
        write_prompt_sidecars(files, item.prompt)
        self.manifest.write({"key": item.key, "status": "done", "task_id": tid, "prompt_id": res.get("prompt_id"),
                             "worker": res.get("worker"), "server": res.get("server"), "attempt": res.get("attempt"),
                             "label": item.label, "source": item.source,
                             "files": [str(f.relative_to(self.out_dir)) for f in files], "texts": res.get("texts", {}),
                             "origins": origins})

    def _failed(self, item: Item, tid: str, res: dict, message: str) -> None:
        self.manifest.write({"key": item.key, "status": "failed", "task_id": tid, "prompt_id": res.get("prompt_id"),
                             "worker": res.get("worker"), "server": res.get("server"), "attempt": res.get("attempt"),
                             "label": item.label, "source": item.source, "error": message})
        self.log(f"[client] item {item.label!r} failed: {message.splitlines()[0] if message else ''}")

    # -- the batch ---------------------------------------------------------------------------
    def run(self):
        todo = self.todo()
        redis = check_broker(self.url)  # one clear line when the broker is down, before anything is written
        app = make_app(self.url, self.timeout)
        store = Store(self.store_url)
        marker = Path(self.out_dir / ".store_marker")
        marker.write_text(json.dumps({"batch": self.qid}), encoding="utf-8")
        store.put_file(marker, f"batches/{self.qid}")  # a worker checks it sees this store before it uses it
        marker.unlink()
        if todo:
            register_batch(redis, self.qid, self.graph, self.workflow_label)
        self.manifest.write({"event": "start", "items": len(self.items), "todo": len(todo), "queue": self.shown,
                             "store": redact(self.store_url, self.url), "queue_batch": self.qid})
        by_tid: dict[str, Item] = {}
        sent = 0
        try:
            queued = [self.manifest.state[i.key].get("task_id") for i in todo
                      if self.manifest.state.get(i.key, {}).get("status") == "queued"]
            alive = self.in_flight(app, redis, [t for t in queued if t])
            for item in todo:
                tid = self.manifest.state.get(item.key, {}).get("task_id")
                if self.manifest.state.get(item.key, {}).get("status") == "queued" and tid in alive:
                    by_tid[tid] = item  # waiting, running or finished: collect it, send nothing
                    continue
                tid = self.send(app, store, item)
                if tid:
                    by_tid[tid] = item
                    sent += 1
        except connection_errors() as e:  # recorded "queued" but not sent: the next run sends it
            raise QueueUnavailable(f"queue {self.shown} was lost while sending ({type(e).__name__}: "
                                   f"{redact(str(e), self.url)}); run the same command again") from None
        self.log(f"[client] {len(self.items)} items: {len(self.items) - len(todo)} done before, {sent} queued, "
                 f"{len(by_tid) - sent} still on the queue, on {self.shown}")
        if by_tid and not live_workers(redis):
            self.log("[client] no worker is on the queue yet; start one beside each ComfyUI: python -m "
                     "rezcty_core.client worker --queue URL --server COMFY_URL (the items wait)")
        self.wait(app, redis, store, by_tid)
        report = self.report()
        self.write_results()
        self.manifest.write({"event": "end", "done": len(report.done), "failed": len(report.failed),
                             "pending": len(report.pending)})
        if not report.pending:
            store.remove_tree(f"outputs/{self.qid}")
            try:
                unregister_batch(redis, self.qid)
            except connection_errors():
                pass
        return report

    def wait(self, app: Any, redis: Any, store: Store, by_tid: dict[str, Item]) -> None:
        """Collect results as they come; send again what the broker lost; stop if the broker stays away."""
        from celery.exceptions import TimeoutError as ResultTimeout

        bar = _progress_bar(len(self.items), len(self.items) - len(by_tid), self.progress)
        down_since: float | None = None
        last_check = time.time()
        try:
            while by_tid:
                try:
                    for tid, meta in app.backend.get_many(set(by_tid), timeout=10, interval=1.0):
                        item = by_tid.pop(tid, None)
                        if item is not None:
                            self.collect(app, redis, store, item, tid, meta)
                            bar.update(1)
                    down_since = None
                except ResultTimeout:
                    down_since = None
                    if time.time() - last_check > LOST_CHECK:
                        last_check = time.time()
                        for tid in self.lost(app, redis, list(by_tid)):
                            item = by_tid.pop(tid)
                            self.log(f"[client] item {item.label!r} is no longer on the queue; sent again")
                            new = self.send(app, store, item)
                            if new:
                                by_tid[new] = item
                except connection_errors() as e:
                    down_since = down_since or time.time()
                    if time.time() - down_since > self.broker_timeout:
                        self.log(f"[client] queue {self.shown} unreachable for {self.broker_timeout:.0f} s "
                                 f"({type(e).__name__}); the workers keep the items: run the same command to collect")
                        return
                    time.sleep(2.0)
        finally:
            bar.close()

