"""The factory on a task queue against the direct path: items per minute, overhead per item, recovery time.

Debian's redis-server on a free port, two real ComfyUI servers, the client commands as a user runs them. The item:
LoadImage (a 512 px noise image) -> ImageScaleBy lanczos x4 -> SaveImage, a 4 MP PNG (CPU-bound: the resize and
the PNG encoding). Each configuration gets its own images (ComfyUI would serve a repeated graph from its cache).

  * direct: `batch --server S1` (the plain baseline, one machine);
  * queue, 1 worker: `batch --queue URL` with one `worker` beside S1;
  * queue, 2 workers: the same with a second worker beside S2;
  * recovery: 2 workers, `--timeout 60`; worker B is SIGKILLed as soon as it starts an item; the time until
    worker A starts that item again (the bound: item timeout + 35 s after B took it).

    ./rezcty bench queue                               # 8 items x 3 interleaved rounds per configuration
    .venv/bin/python bench/bench_queue.py --items 4 --rounds 1 --no-recovery
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from comfy_server import ComfyProcess, free_port  # noqa: E402

from harness import ensure_debian_binary  # noqa: E402
from rezcty_core.factory.queue import recovery_bound  # noqa: E402

PY = sys.executable
GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
    "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "scale_by": 4.0}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench/scaled"}},
}


def commands(url: str) -> int:
    """Commands the broker has served so far (hosted Redis tiers meter them)."""
    import redis

    return int(redis.Redis.from_url(url).info("stats")["total_commands_processed"])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def images(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (512, 512 + i, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def batch(tmp: Path, name: str, target: list[str], n: int, seed: int, extra: list[str] = ()) -> float:
    wf = tmp / "graph.json"
    wf.write_text(json.dumps(GRAPH))
    src = images(tmp / f"images_{name}", n, seed)
    t0 = time.time()
    res = subprocess.run([PY, "-m", "rezcty_core.client", "batch", str(wf), *target, "--images", str(src),
                          "--out", str(tmp / f"out_{name}"), "--quiet", *extra], cwd=REPO, capture_output=True,
                         text=True, timeout=3600)
    seconds = time.time() - t0
    if res.returncode != 0 or f"{n} done" not in res.stdout:
        raise SystemExit(f"{name}: batch failed ({res.returncode}):\n{res.stdout}\n{res.stderr[-3000:]}")
    return seconds


class Worker:
    def __init__(self, name: str, url: str, server: str, folder: Path, timeout: float = 600):
        self.name, self.log_path = name, folder / f"worker_{name}.log"
        self.proc = subprocess.Popen([PY, "-m", "rezcty_core.client", "worker", "--queue", url, "--server", server,
                                      "--timeout", str(timeout), "--name", name], cwd=REPO,
                                     stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while "ready:" not in self.log() and time.time() < deadline and self.proc.poll() is None:
            time.sleep(0.2)
        if "ready:" not in self.log():
            raise SystemExit(f"worker {name} did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=120)


def started(worker: Worker, since: int) -> list[str]:
    return [line.split("'")[1] for line in worker.log()[since:].splitlines() if "started (prompt" in line]


def recovery(tmp: Path, url: str, s1: str, s2: str, n: int) -> dict:
    """Seconds from the kill of worker B (mid-item) to worker A starting that item again."""
    a, b = Worker("rA", url, s1, tmp, timeout=60), Worker("rB", url, s2, tmp, timeout=60)
    wf = tmp / "graph.json"
    src = images(tmp / "images_recovery", n, 99)
    since_a, since_b = len(a.log()), len(b.log())
    t0 = time.time()
    proc = subprocess.Popen([PY, "-m", "rezcty_core.client", "batch", str(wf), "--queue", url, "--images", str(src),
                             "--out", str(tmp / "out_recovery"), "--quiet", "--timeout", "60"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not started(b, since_b):
        time.sleep(0.05)
    t_take = time.time()  # B logged "started" just now (within the 50 ms poll)
    item = started(b, since_b)[0]
    b.stop(signal.SIGKILL)
    t_kill = time.time()
    while item not in started(a, since_a):
        time.sleep(0.05)
    t_again = time.time()
    out, err = proc.communicate(timeout=900)
    t_end = time.time()
    a.stop()
    if proc.returncode != 0:
        raise SystemExit(f"recovery batch failed:\n{out}\n{err[-3000:]}")
    return {"kill_after_s": t_kill - t0, "rerun_after_kill_s": t_again - t_kill, "rerun_after_take_s": t_again - t_take,
            "batch_end_after_kill_s": t_end - t_kill, "bound_after_take_s": recovery_bound(60)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-recovery", action="store_true")
    args = ap.parse_args()
    try:  # Debian's redis-server, installed with apt-get when missing (as root), as the queue test does
        redis_exe = shutil.which("redis-server") or ensure_debian_binary("/usr/bin/redis-server", ["redis-server"])
    except (AssertionError, subprocess.CalledProcessError) as e:
        print(f"redis-server: {e}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="rezcty-bench-queue-"))
    port = free_port()
    redis = subprocess.Popen([redis_exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
                              "--appendonly", "no"], stdout=open(tmp / "redis.log", "w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    servers = [ComfyProcess(tmp / "s1"), ComfyProcess(tmp / "s2")]
    workers: list[Worker] = []
    n = args.items
    try:
        for s in servers:
            s.start()
        s1, s2 = servers[0].url, servers[1].url
        print(f"load before: {uptime()}", flush=True)
        # warm both servers (first run loads nodes' code, torch kernels)
        batch(tmp, "warm1", ["--server", s1], 1, 1000)
        batch(tmp, "warm2", ["--server", s2], 1, 1001)
        times: dict[str, list[float]] = {"direct": [], "one": [], "two": []}
        w1 = Worker("w1", url, s1, tmp)
        workers.append(w1)
        idle = per_item = 0.0
        for r in range(args.rounds):  # interleaved, so a change of load hits every path alike
            seed = 10 * r
            times["direct"].append(batch(tmp, f"direct{r}", ["--server", s1], n, seed + 1))
            times["one"].append(batch(tmp, f"queue1_{r}", ["--queue", url], n, seed + 2))
            w2 = Worker("w2", url, s2, tmp)
            workers.append(w2)
            if r == 0:
                c0 = commands(url)
                time.sleep(30)
                idle = (commands(url) - c0) / 30 * 3600 / 2
            c0 = commands(url)
            times["two"].append(batch(tmp, f"queue2_{r}", ["--queue", url], n, seed + 3))
            per_item = (commands(url) - c0) / n
            w2.stop()
            workers.remove(w2)
            print(f"round {r + 1}: direct {times['direct'][-1]:.1f} s, 1 worker {times['one'][-1]:.1f} s, "
                  f"2 workers {times['two'][-1]:.1f} s  ({uptime()})", flush=True)
        for w in workers:
            w.stop()
        workers.clear()
        direct, one, two = (float(np.median(times[k])) for k in ("direct", "one", "two"))
        rows = [("direct --server (1 server)", direct), ("--queue, 1 worker", one), ("--queue, 2 workers", two)]
        print(f"\n{n} items, each 512 px -> lanczos x4 -> 4 MP PNG; wall time of the command (start-up included), "
              f"median of {args.rounds} interleaved rounds")
        print(f"{'path':<30} {'seconds':>8} {'items/min':>10} {'vs direct':>10}")
        for label, sec in rows:
            print(f"{label:<30} {sec:8.1f} {60 * n / sec:10.1f} {sec / direct:9.2f}x")
        ratios = [o / d for o, d in zip(times["one"], times["direct"])]
        print(f"queue overhead per item (1 worker vs direct): {(one - direct) / n:+.2f} s; ratio per round "
              f"{', '.join(f'{x:.2f}' for x in ratios)} (median {float(np.median(ratios)):.2f}); "
              f"2 workers vs 1: {one / two:.2f}x the throughput")
        print(f"broker commands: {idle:.0f} per idle worker per hour; {per_item:.0f} per item (2 workers, the batch's "
              f"polling included)")
        if not args.no_recovery:
            rec = recovery(tmp, url, s1, s2, 6)
            print("\nrecovery (2 workers, --timeout 60, worker B SIGKILLed mid-item):")
            for k, v in rec.items():
                print(f"  {k}: {v:.1f}")
        print(f"\nload after: {uptime()}")
    finally:
        for w in workers:
            w.stop(signal.SIGKILL)
        for s in servers:
            s.stop()
        os.killpg(redis.pid, signal.SIGTERM)
        redis.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
