"""The multi-server pool: one worker per server takes items from one shared queue until none is left; an item
whose server goes down goes back to the queue for another server (or the same one once back), and a server that
stays down past its `unreachable_timeout` leaves the pool (when all have left, the run stops)."""
from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rezcty_core.factory.api import ComfyClient
from rezcty_core.factory.errors import ServerUnavailable

T = TypeVar("T")


def run_pool(clients: list[ComfyClient], todo: Sequence[T], run_item: Callable[[ComfyClient, T], None], *,
             total: int, progress: bool, log: Callable[[str], None], stop_all: threading.Event) -> None:
    """Run `run_item(client, item)` for every item of `todo` over `clients`, one worker thread per server.

    `total` sizes the progress bar (items already done before count as done); `stop_all` is set when every
    server has left the pool, and ends the run when set by anyone else."""
    work: queue.Queue[T] = queue.Queue()
    for item in todo:
        work.put(item)
    bar = _progress_bar(total, total - len(todo), progress)
    lock = threading.Lock()
    dead: set[str] = set()
    in_flight = [0]  # items being run by some worker: one may come back if its server dies

    def take() -> T | None:
        """The next item; None when the batch is over. Waits while others still hold items."""
        while not stop_all.is_set():
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
                run_item(client, item)
            except ServerUnavailable as e:
                with lock:
                    work.put(item)  # another server (or this one, once back) takes it
                    in_flight[0] -= 1
                down_since = down_since or time.time()
                log(f"[client] {client.url}: {e}")
                while not client.alive():
                    if time.time() - down_since > client.unreachable_timeout:
                        with lock:
                            dead.add(client.url)
                            if len(dead) == len(clients):
                                stop_all.set()
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

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()


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
