"""Start and stop the real ComfyUI server with this pack loaded, as a child process.

Used by `./rezcty demo` and by the tests (`tests/harness.py` builds on it). The server is
started through the very code path of `./rezcty comfy` (a subprocess of the `rezcty`
script), on a free port of 127.0.0.1, with the base directory given. Standard library only:
it imports nothing from tests/ and nothing from ComfyUI.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT_FAILURE_PATTERNS = ["IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint"]


class ComfyStartError(RuntimeError):
    """The server exited or did not answer in time; the message carries the log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyProcess:
    """One ComfyUI server process: `start()`, `stop()`, `kill()`, its log and its folders."""

    def __init__(self, base_dir: Path, port: int | None = None, log_path: Path | None = None):
        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or (self.base_dir / "server.log")
        self.proc: subprocess.Popen | None = None

    # -- folders --------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 240.0, env: dict | None = None) -> ComfyProcess:
        """Start the server and return once GET /object_info answers; raise ComfyStartError otherwise."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(REPO / "rezcty"), "comfy", "--port", str(self.port), "--base-directory", str(self.base_dir)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, so stop()/kill() reach ComfyUI itself
        )
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ComfyStartError(f"ComfyUI exited with code {self.proc.returncode} during start\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.5)
        raise ComfyStartError(f"ComfyUI did not answer /object_info within {timeout:.0f} s\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/object_info/PreviewAny", timeout=5) as r:
                json.loads(r.read())
            return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """Kill the server abruptly, as a crash or a lost Colab runtime would (for resume tests)."""
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ComfyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- log ------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()
        return "---- ComfyUI server log (tail) ----\n" + "\n".join(text[-lines:])

    def import_failures(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if any(p in line for p in IMPORT_FAILURE_PATTERNS)]
