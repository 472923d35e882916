"""The worker of the task queue (`python -m rezcty_core.client worker --queue URL --server COMFY_URL`).

It checks its ComfyUI (the node types every open batch needs), then takes items one at a time: each is run on the
worker's own ComfyUI through `factory/api.py`, its input files fetched from the store and its outputs sent back
(`factory/store.py`). SIGTERM finishes the item in hand; a server gone past `server_timeout` stops the worker
(exit 3). The broker, its URL rules and Redis keys are `queue.py`'s.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rezcty_core.factory.api import ComfyClient
from rezcty_core.factory.batch import prompt_id
from rezcty_core.factory.errors import ClientError, PromptFailed, ServerUnavailable, ValidationFailed
from rezcty_core.factory.queue import (
    HEARTBEAT,
    HEARTBEAT_TTL,
    KEEP,
    PREFIX,
    QUEUE,
    check_broker,
    connection_errors,
    display_url,
    live_workers,
    make_app,
    recovery_bound,
    redact,
    resolve_url,
)
from rezcty_core.factory.store import INLINE_MAX, Store, StoreError, fetch_input, send_output
from rezcty_core.factory.workflow import set_input


@dataclass
class WorkerContext:
    """What every task of one worker process shares: its ComfyUI, its view of the store, its Redis."""

    name: str
    server: str
    url: str
    timeout: float
    server_timeout: float = 60.0
    store_url: str | None = None
    redis: Any = None
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    server_lost: bool = False

    def say(self, msg: str) -> None:
        self.log(f"[worker {self.name}] {redact(msg, self.url)}")

    def store_for(self, job: dict) -> Store | None:
        url = self.store_url or job.get("store")
        return Store(url) if url else None

    def run(self, task: Any, job: dict) -> dict:
        from celery.exceptions import Reject

        try:
            return self._run(job)
        except connection_errors() as e:  # the broker blinked: the item goes back (or returns after the timeout)
            self.say(f"item {job.get('label', job.get('key'))!r}: queue connection lost ({type(e).__name__}); "
                     f"the item goes back to the queue")
            raise Reject("queue connection lost", requeue=True) from None

    def _run(self, job: dict) -> dict:
        from celery.exceptions import Reject

        batch, key, label = job["batch"], job["key"], job.get("label", job["key"])
        r = self.redis
        if r.exists(f"{PREFIX}done:{batch}:{key}"):
            self.say(f"item {label!r}: already collected by its batch; this second delivery is skipped")
            return {"status": "duplicate", "key": key, "worker": self.name}
        attempt = int(r.incr(f"{PREFIX}attempt:{batch}:{key}"))
        r.expire(f"{PREFIX}attempt:{batch}:{key}", KEEP)
        pid = prompt_id(batch, key, attempt)
        timeout = min(float(job.get("timeout", self.timeout)), self.timeout)
        base = {"key": key, "attempt": attempt, "prompt_id": pid, "worker": self.name, "server": self.server}
        self.say(f"item {label!r} attempt {attempt} started (prompt {pid})")
        tmp = Path(tempfile.mkdtemp(prefix="rezcty-item-"))
        try:
            try:
                store = self.store_for(job)
                if store is not None and store.size(f"batches/{batch}") is None:
                    raise StoreError(f"this worker does not see the batch's store {display_url(store.url)}: give the "
                                     f"worker --store with its own path or URL of the same place")
                graph = job["graph"]
                for target, spec in (job.get("inputs") or {}).items():
                    set_input(graph, target, str(fetch_input(spec, store)))
            except StoreError as e:
                return self.refuse(job, str(e), base)
            client = ComfyClient(self.server, unreachable_timeout=self.server_timeout, log=self.say)
            uploaded = client.upload_local_inputs(graph)
            try:
                client.check(graph, uploaded)
            except ValidationFailed as e:
                mine = [p for p in e.problems if "missing model" in p or "missing node type" in p]
                if mine:  # another worker may have it: back to the queue with the reason
                    return self.refuse(job, "; ".join(mine), base)
                return {**base, "status": "failed", "error": "; ".join(e.problems)}
            ws = client.open_ws()
            try:
                client.queue(graph, pid)
                try:
                    entry = client.wait(pid, timeout, ws=ws)
                except ServerUnavailable:
                    raise
                except ClientError:
                    self._cancel(client, pid)
                    raise
            finally:
                if ws is not None:
                    ws.close()
            result = client.collect(pid, entry, graph, tmp)
            store = self.store_for(job)
            inline_max = int(job.get("inline_max", INLINE_MAX))
            files = [send_output(f, store, f"outputs/{batch}/{key}/{attempt}/{f.name}", inline_max)
                     for f in result.files]
            self.say(f"item {label!r} attempt {attempt} done: {len(files)} file(s)")
            return {**base, "status": "done", "texts": result.texts(), "files": files}
        except Reject:
            raise
        except PromptFailed as e:
            self.say(f"item {label!r} failed: {str(e).splitlines()[0]}")
            return {**base, "status": "failed", "error": str(e)}
        except ServerUnavailable as e:
            self.server_down(str(e))
            raise Reject(f"ComfyUI at {self.server} is unreachable", requeue=True) from None
        except StoreError as e:
            return self.refuse(job, str(e), base)
        except (ClientError, OSError, ValueError) as e:  # a timeout, an unreadable file: this item only
            self.say(f"item {label!r} failed: {type(e).__name__}: {e}")
            return {**base, "status": "failed", "error": f"{type(e).__name__}: {e}" if not isinstance(e, ClientError)
                    else str(e)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def refuse(self, job: dict, reason: str, base: dict) -> dict:
        """Hand an item this worker cannot run back to the queue, or fail it once every live worker said no."""
        from celery.exceptions import Reject

        batch, key, label = job["batch"], job["key"], job.get("label", job["key"])
        rkey = f"{PREFIX}refused:{batch}:{key}"
        again = not self.redis.hset(rkey, self.name, reason)
        self.redis.expire(rkey, KEEP)
        refused = {k.decode(): v.decode() for k, v in self.redis.hgetall(rkey).items()}
        if set(live_workers(self.redis)) <= set(refused):
            why = "; ".join(f"{name}: {text}" for name, text in sorted(refused.items()))
            self.say(f"item {label!r} failed: no worker on the queue can run it")
            return {**base, "status": "failed", "error": f"no worker on the queue can run this item: {why}"}
        self.say(f"item {label!r} handed back to the queue: {reason}")
        if again:
            time.sleep(2.0)  # this worker had it before: give one that can run it the time to take it
        raise Reject(reason, requeue=True)

    def server_down(self, message: str) -> None:
        """The worker's ComfyUI stopped answering: wait for it a while, else stop taking work."""
        self.say(f"{message}; the item goes back to the queue")
        client = ComfyClient(self.server)
        deadline = time.time() + self.server_timeout
        while time.time() < deadline:
            if client.alive():
                return
            time.sleep(1.0)
        self.say(f"ComfyUI at {self.server} stayed unreachable for {self.server_timeout:.0f} s: the worker stops")
        self.server_lost = True
        os.kill(os.getpid(), signal.SIGTERM)  # a warm shutdown: the item is handed back first

    @staticmethod
    def _cancel(client: ComfyClient, pid: str) -> None:
        """A prompt past its timeout: take it out of ComfyUI's queue, or interrupt it if it is the one running."""
        try:
            q = client.get_json("/queue")
            if any(len(i) > 1 and i[1] == pid for i in q.get("queue_running", [])):
                client.post_json("/interrupt", {"prompt_id": pid})
            else:
                client.post_json("/queue", {"delete": [pid]})
        except ClientError:
            pass


_CONTEXT: WorkerContext | None = None


def run_item(task: Any, job: dict) -> dict:
    """The Celery task: run one batch item on this worker's ComfyUI (see `WorkerContext.run`)."""
    if _CONTEXT is None:
        raise RuntimeError("rezcty.run_item runs only inside `python -m rezcty_core.client worker`")
    return _CONTEXT.run(task, job)


def check_server_for_queue(client: ComfyClient, redis: Any) -> list[str]:
    """Problems that keep this worker from the queue: node types an open batch needs that its ComfyUI lacks."""
    info = client.object_info(refresh=True)
    problems = []
    for batch, raw in (redis.hgetall(f"{PREFIX}batches") or {}).items():
        try:
            need = json.loads(raw)
        except ValueError:
            continue
        missing = [n for n in need.get("nodes", []) if n not in info]
        if missing:
            problems.append(f"the queue's batch {batch.decode()} ({need.get('workflow')}) needs node type(s) "
                            f"{', '.join(missing)}, which {client.url} lacks: install the pack that provides them "
                            f"and restart ComfyUI")
    return problems


def run_worker(url: str, server: str, concurrency: int = 1, timeout: float = 3600.0, store: str | None = None,
               server_timeout: float = 60.0, name: str | None = None, loglevel: str = "WARNING") -> int:
    """Check the ComfyUI server, then take items from the queue until SIGTERM (0) or the server is lost (3)."""
    global _CONTEXT

    url = resolve_url(url)
    if concurrency < 1:
        raise ClientError(f"--concurrency: expected 1 or more, got {concurrency}")
    name = name or f"{platform.node()}-{os.getpid()}"
    redis = check_broker(url)
    comfy = ComfyClient(server)
    try:
        info = comfy.object_info(refresh=True)
    except ServerUnavailable as e:
        raise ServerUnavailable(f"worker: ComfyUI {e}; start it first (./rezcty comfy, or the notebook's cell 3)") \
            from None
    problems = check_server_for_queue(comfy, redis)
    if problems:
        raise ClientError("worker: " + "; ".join(problems))
    ctx = WorkerContext(name=name, server=comfy.url, url=url, timeout=timeout, server_timeout=server_timeout,
                        store_url=store, redis=redis)
    _CONTEXT = ctx
    app = make_app(url, timeout, task=run_item)
    stop = threading.Event()
    beat_key = f"{PREFIX}worker:{name}"
    facts = json.dumps({"server": comfy.url, "host": platform.node(), "concurrency": concurrency,
                        "timeout": timeout, "started": time.time()})

    def heartbeat() -> None:
        while not stop.is_set():
            try:
                redis.set(beat_key, facts, ex=HEARTBEAT_TTL)
            except connection_errors():
                pass  # the broker is back soon or Celery says so
            stop.wait(HEARTBEAT)

    from celery import signals

    def on_ready(**_: Any) -> None:
        threading.Thread(target=heartbeat, daemon=True, name="rezcty-heartbeat").start()
        ctx.say(f"ready: ComfyUI {comfy.url} ({len(info)} node types), queue {display_url(url)}, "
                f"{concurrency} at a time; an item of a lost worker runs again within "
                f"{recovery_bound(timeout):.0f} s")

    signals.worker_ready.connect(on_ready, weak=False)
    import warnings

    from celery.exceptions import SecurityWarning

    # Colab and Kaggle run everything as root; Celery's warning is about pickle, which this app never accepts
    warnings.filterwarnings("ignore", category=SecurityWarning)
    worker = app.Worker(hostname=f"{name}@{platform.node()}", pool="threads", concurrency=concurrency,
                        queues=[QUEUE], loglevel=loglevel, quiet=True, without_gossip=True,
                        without_mingle=True, without_heartbeat=True, optimization="fair")
    try:
        worker.start()
    finally:
        stop.set()
        try:
            redis.delete(beat_key)
        except connection_errors():
            pass
        _CONTEXT = None
    ctx.say("stopped")
    if ctx.server_lost:
        return 3
    return int(worker.exitcode or 0)
