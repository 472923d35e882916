"""`batch --queue` and `worker` on a real broker: Debian's redis-server (with a password) on a free port, two real
ComfyUI servers (the session one and a second), a worker beside each (subprocesses), batches of a core-only graph.

The item graph: LoadImage -> ImageScaleBy x4 -> SaveImage (+ the width as text): a 512 px input gives a 4 MP PNG,
which travels back through the store; a 256 px input travels to the worker inside the message."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import (
    REPO,
    ComfyServer,
    batch_manifest,
    done_records,
    ensure_debian_binary,
    free_port,
    sd15_graph,
    wait_for,
)

PY = sys.executable
REDIS = "/usr/bin/redis-server"
PASSWORD = f"pw-{uuid.uuid4().hex[:12]}"


def ensure_redis() -> str:
    """Debian's redis-server; installed with apt-get when missing and we are root (fresh CI machine)."""
    return ensure_debian_binary(REDIS, ["redis-server"])


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "rezcty_core.client", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def scale_graph() -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "scale_by": 4.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "queue/scaled"}},
        "4": {"class_type": "GetImageSize", "inputs": {"image": ["2", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }


def work(tmp_path: Path, n: int, size: int = 512, seed: int = 0) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + i, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    wf = tmp_path / "scale4.json"
    wf.write_text(json.dumps(scale_graph()))
    return wf, folder


manifest = batch_manifest


class Worker:
    """`python -m rezcty_core.client worker` beside one ComfyUI, in its own process group, its log in a file."""

    def __init__(self, name: str, url: str, server: str, folder: Path):
        self.name, self.log_path = name, folder / f"worker_{name}.log"
        self.proc = subprocess.Popen(
            [PY, "-m", "rezcty_core.client", "worker", "--queue", url, "--server", server, "--timeout", "60",
             "--name", name], cwd=REPO, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    exe = ensure_redis()
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                             "--appendonly", "no", "--requirepass", PASSWORD], stdout=open(folder / "redis.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return proc.poll() is not None
    wait_for(up, 30, "redis-server to answer")
    assert proc.poll() is None, (folder / "redis.log").read_text()
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def workers(broker, comfy, tmp_path_factory):
    """wA beside the session server, wB beside a second one; both ready (taking work) before any test."""
    second = ComfyServer(tmp_path_factory.mktemp("comfy-queue"))
    second.start()
    folder = tmp_path_factory.mktemp("workers")
    pool = {"wA": Worker("wA", broker, comfy.url, folder), "wB": Worker("wB", broker, second.url, folder)}
    try:
        for w in pool.values():
            wait_for(lambda w=w: "ready:" in w.log() or w.proc.poll() is not None, 120, f"worker {w.name}")
            assert w.proc.poll() is None, w.log()
        yield pool
    finally:
        for w in pool.values():
            w.signal(signal.SIGKILL)
        second.stop()
        for w in pool.values():
            assert PASSWORD not in w.log(), f"the broker password is in worker {w.name}'s log"


def started(worker: Worker, since: int) -> list[str]:
    """Labels of the items this worker started after log offset `since`."""
    return [line.split("'")[1] for line in worker.log()[since:].splitlines() if "started (prompt" in line]


# ---------------------------------------------------------------------------------------------

def test_queue_settings_json_late_ack_one_at_a_time_and_the_recovery_bound():
    from rezcty_core.factory.queue import display_url, make_app, recovery_bound, redact
    from rezcty_core.factory.queue_worker import run_item

    url = f"redis://:{PASSWORD}@127.0.0.1:6399/0"
    app = make_app(url, item_timeout=60, task=run_item)
    conf = app.conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"] and list(conf.result_accept_content) == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.broker_url == conf.result_backend == url
    opts = conf.broker_transport_options
    assert opts["visibility_timeout"] == 85 and opts["unacked_restore_throttle"] == 1
    # a killed worker's item is visible again after the timeout + slack and found by the next sweep
    assert recovery_bound(60) == opts["visibility_timeout"] + opts["unacked_restore_interval"] <= 60 + 60
    task = app.tasks["rezcty.run_item"]
    assert task.acks_late and task.reject_on_worker_lost
    assert display_url(url) == "redis://:***@127.0.0.1:6399/0"
    assert display_url("rediss://default:tok@eu1.example.io:6379") == "rediss://default:***@eu1.example.io:6379"
    assert PASSWORD not in redact(f"AUTH {PASSWORD} failed for {url}", url)


def test_broker_down_is_one_clear_line_without_the_password(broker, comfy, tmp_path):
    wf, images = work(tmp_path, 1, size=32)
    down = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    res = cli("batch", str(wf), "--queue", down, "--images", str(images), "--out", str(tmp_path / "b"), "--quiet")
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: queue redis://:***@127.0.0.1:{down.rsplit(':', 1)[1]} is not reachable")
    assert PASSWORD not in res.stdout + res.stderr
    assert not (tmp_path / "b" / "manifest.jsonl").exists()  # nothing recorded as queued
    # a worker checks the broker, then its server, before it takes work
    res = cli("worker", "--queue", down, "--server", comfy.url)
    assert res.returncode == 2 and "is not reachable" in res.stderr and PASSWORD not in res.stderr
    res = cli("worker", "--queue", broker, "--server", f"http://127.0.0.1:{free_port()}")
    assert res.returncode == 2 and "worker: ComfyUI" in res.stderr and "is not reachable" in res.stderr, res.stderr


def test_a_worker_refuses_to_start_when_its_server_lacks_a_node_the_queue_needs(broker, comfy):
    from rezcty_core.factory.queue import redis_client, register_batch, unregister_batch

    r = redis_client(broker)
    register_batch(r, "needs-missing-node", {"1": {"class_type": "RezctyNoSuchNode", "inputs": {}}}, "odd.json")
    try:
        res = cli("worker", "--queue", broker, "--server", comfy.url, "--name", "wX")
    finally:
        unregister_batch(r, "needs-missing-node")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "needs node type(s) RezctyNoSuchNode" in res.stderr and "odd.json" in res.stderr


def test_an_item_no_worker_can_run_goes_back_to_the_queue_then_fails_with_each_reason(broker, workers, tmp_path):
    wf = tmp_path / "sd.json"
    wf.write_text(json.dumps(sd15_graph("absent.safetensors")))
    (tmp_path / "prompts.json").write_text(json.dumps(["a red cube"]))
    offsets = {n: len(w.log()) for n, w in workers.items()}
    res = cli("batch", str(wf), "--queue", broker, "--prompts", str(tmp_path / "prompts.json"), "--bind", "2.text",
              "--out", str(tmp_path / "out"), "--quiet", "--timeout", "60")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "0 done, 1 failed, 0 pending" in res.stdout
    error = json.loads((tmp_path / "out" / "results.json").read_text())[0]["error"]
    assert error.startswith("no worker on the queue can run this item")
    assert "wA: " in error and "wB: " in error and "missing model 'absent.safetensors'" in error
    handed_back = [n for n, w in workers.items() if "handed back to the queue" in w.log()[offsets[n]:]]
    assert handed_back, "the first worker to refuse gave the item back to the queue"


def test_a_killed_client_rerun_sends_nothing_that_is_in_flight(broker, workers, tmp_path):
    wf, images = work(tmp_path, 4, seed=1)
    out = tmp_path / "out"
    args = ["batch", str(wf), "--queue", broker, "--images", str(images), "--out", str(out), "--quiet",
            "--timeout", "60"]
    log = tmp_path / "client.log"
    proc = subprocess.Popen([PY, "-m", "rezcty_core.client", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True)
    try:  # killed once every item is sent (the client says so), while the workers run them
        wait_for(lambda: "4 queued" in log.read_text() or proc.poll() is not None, what="4 items sent")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sent = {r["key"]: r["task_id"] for r in manifest(out) if r.get("status") == "queued"}
    lines = len(manifest(out))
    res = cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 done, 0 failed, 0 pending" in res.stdout
    assert not [r for r in manifest(out)[lines:] if r.get("status") == "queued"], "an item in flight was sent again"
    done = done_records(out)
    assert len(done) == 4 and all(len(v) == 1 for v in done.values())
    assert {k: v[0]["task_id"] for k, v in done.items()} == sent
    assert len(list((out / "files").glob("*.png"))) == 4


def test_a_killed_worker_item_runs_again_elsewhere_and_each_output_lands_once(broker, workers, tmp_path):
    wf, images = work(tmp_path, 8, seed=2)
    out = tmp_path / "out"
    args = ["batch", str(wf), "--queue", broker, "--images", str(images), "--out", str(out), "--timeout", "60"]
    wb = workers["wB"]
    since = len(wb.log())
    t0 = time.time()
    proc = subprocess.Popen([PY, "-m", "rezcty_core.client", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: started(wb, since) or proc.poll() is not None, what="worker wB to start an item")
        killed_item = started(wb, since)[0]
        wb.signal(signal.SIGKILL)  # a lost Colab runtime: no goodbye, the item stays unacknowledged
        t_kill = time.time()
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"killed wB {t_kill - t0:.1f} s into the batch; the batch ended {time.time() - t_kill:.1f} s later")
    assert proc.returncode == 0, stdout + stderr
    assert "8 done, 0 failed, 0 pending" in stdout
    assert PASSWORD not in stdout + stderr
    done = done_records(out)
    assert len(done) == 8 and all(len(v) == 1 for v in done.values())
    pngs = sorted((out / "files").glob("*.png"))
    assert len(pngs) == 8 and len({p.name[:8] for p in pngs}) == 8  # one output per item key
    with Image.open(pngs[0]) as im:
        assert im.size[0] * im.size[1] >= 4_000_000
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results] == [f"img_{i:02d}.png" for i in range(8)]
    rec = next(v[0] for v in done.values() if v[0]["label"] == killed_item)
    print(f"wB was running {killed_item}: done by {rec['worker']} as attempt {rec['attempt']}")
    if f"'{killed_item}' attempt 1 done" not in wb.log()[since:]:  # killed mid-item (not in the instant after)
        assert rec["worker"] == "wA" and rec["attempt"] >= 2, rec
    # where each file came from: the worker, its server, the store (4 MP PNGs are too big for the message)
    for recs in done.values():
        (origin,) = recs[0]["origins"].values()
        assert origin["worker"] in ("wA", "wB") and origin["via"].startswith("store:outputs/")
    queued = [r for r in manifest(out) if r.get("status") == "queued"]
    assert all(r["inputs"]["1.image"]["via"].startswith("store:inputs/") for r in queued)
    assert not list((out / "store" / "outputs").rglob("*.png"))  # collected outputs leave the store

    # the same command again: nothing queued, no file added
    lines = len(manifest(out))
    res = cli(*args, "--quiet")
    assert res.returncode == 0 and "8 done, 0 failed, 0 pending" in res.stdout, res.stdout + res.stderr
    assert [r.get("event") for r in manifest(out)[lines:]] == ["start", "end"]
    assert sorted((out / "files").glob("*.png")) == pngs


def test_a_batch_folder_deleted_and_run_again_is_a_new_batch(broker, workers, tmp_path):
    wf, images = work(tmp_path, 1, size=32, seed=4)
    out = tmp_path / "out"
    args = ["batch", str(wf), "--queue", broker, "--images", str(images), "--out", str(out), "--quiet"]
    first = cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    shutil.rmtree(out)  # starting over: the queue must not remember these items as collected
    again = cli(*args)
    assert again.returncode == 0 and "1 done, 0 failed, 0 pending" in again.stdout, again.stdout + again.stderr
    assert len(list((out / "files").glob("*.png"))) == 1


def test_sigterm_lets_a_worker_finish_its_item_then_stop(broker, workers, tmp_path):
    wa = workers["wA"]
    assert wa.proc.poll() is None
    wf, images = work(tmp_path, 1, size=256, seed=3)  # a small input: it travels inside the message
    out = tmp_path / "out"
    since = len(wa.log())
    proc = subprocess.Popen([PY, "-m", "rezcty_core.client", "batch", str(wf), "--queue", broker, "--images",
                             str(images), "--out", str(out), "--quiet", "--timeout", "60"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: started(wa, since) or proc.poll() is not None, what="worker wA to start the item")
        wa.signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "1 done, 0 failed, 0 pending" in stdout, stdout + stderr
    assert wa.proc.wait(timeout=120) == 0, wa.log()
    assert "stopped" in wa.log()[since:]
    (rec,) = [r for r in manifest(out) if r.get("status") == "queued"]
    assert rec["inputs"]["1.image"]["via"] == "message"
    assert done_records(out)[rec["key"]][0]["worker"] == "wA"
