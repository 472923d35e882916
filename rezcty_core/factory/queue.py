"""The factory on a task queue (Celery, Redis): one batch item is one task, run by workers that pull.

A worker (`queue_worker.py`) sits beside one ComfyUI (`python -m rezcty_core.client worker --queue URL --server
COMFY_URL`) and takes one item at a time; `batch --queue URL` (`queue_batch.py`) enqueues the items and collects the results
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
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from rezcty_core.factory.errors import ClientError, ServerUnavailable

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


def make_app(url: str, item_timeout: float = 3600.0, task: Callable[..., dict] | None = None) -> Any:
    """The Celery app of one queue: broker and results in the same Redis, JSON only, late acknowledgement.
    `task` (the worker's `run_item`) is registered as `TASK`; the batch side sends tasks by that name."""
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
    if task is not None:
        app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(task)
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
