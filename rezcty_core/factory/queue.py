"""The factory on a task queue (Celery, Redis): one batch item is one task, run by workers that pull.

A worker sits beside one ComfyUI (`python -m rezcty_core.client worker --queue URL --server COMFY_URL`) and
takes one item at a time; `batch --queue URL` (`queue_batch.py`) enqueues the items and collects the results
into the same OUT folder as `batch --server`. Workers need no inbound port, so Colab and Kaggle notebooks
behind their proxies can share one batch through a hosted Redis.

Delivery: broker and result backend are one Redis URL; messages are JSON only (never pickle); a task is
acknowledged late (after it ran) and each worker holds one at a time (prefetch 1). A worker killed mid-item
never acknowledges it, so Redis hands it to another worker once the visibility timeout has passed; that timeout
is the item timeout plus `SLACK` (store copies), and a live worker looks for such items every
`RESTORE_INTERVAL`: a killed worker's item runs again within `recovery_bound(timeout)` (item timeout + 35 s,
inside the item timeout + a minute). Every run of an item gets its own attempt number, hence its own ComfyUI
prompt id (`batch.prompt_id`); the batch keeps the first result per item key and drops any other.

Keys this module keeps in Redis besides Celery's (all under `rezcty:`): `worker:NAME` (a live worker, 30 s
heartbeat), `batches` (the node types each open batch needs, checked by a worker before it takes work),
`attempt:BATCH:KEY`, `done:BATCH:KEY` (collected: a late duplicate is skipped), `refused:BATCH:KEY`
(the workers that cannot run an item, with why).
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
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rezcty_core.factory.api import ComfyClient
from rezcty_core.factory.batch import prompt_id
from rezcty_core.factory.errors import ClientError, PromptFailed, ServerUnavailable, ValidationFailed
from rezcty_core.factory.store import INLINE_MAX, Store, StoreError, fetch_input, send_output
from rezcty_core.factory.workflow import set_input

QUEUE = "rezcty"  # our own queue name: a Redis shared with other Celery apps stays apart
TASK = "rezcty.run_item"
PREFIX = "rezcty:"
SLACK = 25.0  # seconds past the item timeout a worker may hold an item (fetching inputs, storing outputs)
RESTORE_INTERVAL = 10  # seconds between a live worker's sweeps for items of lost workers (5 commands each)
HEARTBEAT = 10.0  # a worker renews its `worker:NAME` key this often ...
HEARTBEAT_TTL = 30  # ... and it lapses this long after the worker stopped
KEEP = 7 * 86400  # seconds results, attempt counters and done marks stay in Redis
SCHEMES = ("redis", "rediss")
TASK_NAMESPACE = uuid.UUID("0d1f6a52-9d0e-4d0b-b8a7-52f4b3c1e6a9")


class QueueUnavailable(ServerUnavailable):
    """The broker could not be reached; the message names its URL with the password hidden."""


# ---------------------------------------------------------------------------------------------
# the URL: where it comes from, how it is shown

def resolve_url(url: str) -> str:
    """The broker URL: `env:NAME` reads it from the environment (keeps the password out of `ps`)."""
    if url.startswith("env:"):
        name = url[4:]
        url = os.environ.get(name, "")
        if not url:
            raise ClientError(f"--queue env:{name}: the environment variable {name} is not set")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ClientError(f"--queue {display_url(url)}: expected redis://HOST:PORT/DB or rediss://… (TLS, a hosted "
                          f"Redis), got {scheme or 'no scheme'}")
    return url


def display_url(url: str) -> str:
    """The URL as it may appear in a log or an error line: any password replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user = creds.split(":", 1)[0] if ":" in creds else ""
        netloc = f"{user}:***@{host}"
    query = "&".join(f"{k}=***" if "pass" in k.lower() or "token" in k.lower() else f"{k}={v}"
                     for k, v in urllib.parse.parse_qsl(parts.query))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact(text: str, url: str) -> str:
    """`text` with the URL's password removed wherever it occurs (error messages of libraries included)."""
    try:
        parts = urllib.parse.urlsplit(url)
        secrets = [parts.password or ""]
        secrets += [v for k, v in urllib.parse.parse_qsl(parts.query) if "pass" in k.lower() or "token" in k.lower()]
    except ValueError:
        secrets = []
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***").replace(urllib.parse.quote(secret, safe=""), "***")
    return text.replace(url, display_url(url))


# ---------------------------------------------------------------------------------------------
# the Celery app and Redis

def visibility_timeout(item_timeout: float) -> float:
    """How long Redis waits before an unacknowledged item (its worker lost) goes to another worker."""
    return float(item_timeout) + SLACK


def recovery_bound(item_timeout: float) -> float:
    """At most this long after a worker took an item and died, another worker starts it again."""
    return visibility_timeout(item_timeout) + RESTORE_INTERVAL


def _ssl_options(url: str) -> dict | None:
    if urllib.parse.urlsplit(url).scheme != "rediss":
        return None
    import ssl

    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def make_app(url: str, item_timeout: float = 3600.0) -> Any:
    """The Celery app of one queue: broker and results in the same Redis, JSON only, late acknowledgement."""
    from celery import Celery

    url = resolve_url(url)
    app = Celery("rezcty", broker=url, backend=url, set_as_current=False)
    transport = {
        "visibility_timeout": visibility_timeout(item_timeout),
        "unacked_restore_interval": RESTORE_INTERVAL,
        "unacked_restore_throttle": 1,  # every sweep looks (the default looks every 10th: 100 s)
        "polling_interval": 5,  # kombu's BRPOP timeout: an idle worker asks every 5 s, not every second
        "socket_connect_timeout": 10, "socket_timeout": 30, "socket_keepalive": True,
    }
    app.conf.update(
        task_serializer="json", result_serializer="json", event_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=QUEUE, task_track_started=True, result_expires=KEEP,
        broker_transport_options=transport, broker_connection_timeout=10,
        redis_socket_connect_timeout=10, redis_socket_timeout=30, redis_retry_on_timeout=True,
        worker_send_task_events=False, task_send_sent_event=False, worker_enable_remote_control=False,
        worker_redirect_stdouts=False, worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    ssl_opts = _ssl_options(url)
    if ssl_opts:
        app.conf.update(broker_use_ssl=ssl_opts, redis_backend_use_ssl=ssl_opts)
    app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(_run_item_task)
    return app


def redis_client(url: str) -> Any:
    import redis

    url = resolve_url(url)
    opts: dict[str, Any] = {"socket_connect_timeout": 10, "socket_timeout": 30, "health_check_interval": 25}
    if urllib.parse.urlsplit(url).scheme == "rediss" and "ssl_cert_reqs" not in url:
        opts["ssl_cert_reqs"] = "required"
    return redis.Redis.from_url(url, **opts)


def check_broker(url: str) -> Any:
    """A Redis client of the queue, or QueueUnavailable with one line naming the URL (password hidden)."""
    import redis

    url = resolve_url(url)
    client = redis_client(url)
    try:
        client.ping()
    except (redis.exceptions.RedisError, OSError) as e:
        raise QueueUnavailable(f"queue {display_url(url)} is not reachable "
                               f"({type(e).__name__}: {redact(str(e), url)})") from None
    return client


def connection_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            ConnectionError, TimeoutError)


def task_id(batch: str, key: str, send: int) -> str:
    """The task id of an item's n-th send: the same item sent again (lost broker) gets a new one."""
    return str(uuid.uuid5(TASK_NAMESPACE, f"{batch}|{key}|{send}"))


def tasks_on_broker(client: Any, queue: str = QUEUE) -> set[str]:
    """Ids of the tasks waiting in the queue or held by a worker (not yet acknowledged) in kombu's Redis lists."""
    found: set[str] = set()
    for name in [queue] + [f"{queue}\x06\x16{p}" for p in (3, 6, 9)]:  # kombu's priority sub-queues
        for raw in client.lrange(name, 0, -1):
            found.update(_message_id(raw))
    for raw in client.hvals("unacked"):
        found.update(_message_id(raw, held=True))
    return found


def _message_id(raw: bytes, held: bool = False) -> list[str]:
    try:
        msg = json.loads(raw)
        if held:
            msg = msg[0]
        tid = msg.get("headers", {}).get("id")
        return [tid] if tid else []
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return []


def live_workers(client: Any) -> dict[str, dict]:
    found = {}
    for k in client.scan_iter(match=f"{PREFIX}worker:*", count=200):
        raw = client.get(k)
        name = k.decode().split(":", 2)[2]
        try:
            found[name] = json.loads(raw) if raw else {}
        except ValueError:
            found[name] = {}
    return found


def register_batch(client: Any, batch: str, graph: dict, label: str) -> None:
    nodes = sorted({n.get("class_type") for n in graph.values() if n.get("class_type")})
    client.hset(f"{PREFIX}batches", batch, json.dumps({"nodes": nodes, "workflow": label}))
    client.expire(f"{PREFIX}batches", KEEP)


def unregister_batch(client: Any, batch: str) -> None:
    client.hdel(f"{PREFIX}batches", batch)


# ---------------------------------------------------------------------------------------------
# the worker

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


def _run_item_task(task: Any, job: dict) -> dict:
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
    app = make_app(url, timeout)
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
