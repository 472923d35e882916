"""Drive the real ComfyUI server headless from tests, through its HTTP and websocket API.

The server is started through the very code path of `./rezcty comfy` (a subprocess of the
`rezcty` script), on a free port, with a temporary base directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".comfyui" / "cache"
sys.path.insert(0, str(REPO / "tools"))
from comfy_server import IMPORT_FAILURE_PATTERNS, ComfyProcess, ComfyStartError, free_port  # noqa: E402, F401


def contract_nodes() -> list[str]:
    """The node ids docs/CONTRACT.md fixes (its Nodes table): every one must be registered by the server."""
    text = (REPO / "docs/CONTRACT.md").read_text(encoding="utf-8")
    nodes = re.findall(r"^\| `(Rezcty\w+)` \|", text, flags=re.M)
    if not nodes:
        raise AssertionError("docs/CONTRACT.md: no node rows (| `RezctyName` | ...) in its Nodes table")
    return nodes


CONTRACT_NODES = contract_nodes()


def missing_contract_nodes(info: dict) -> list[str]:
    """The contract's nodes a server's /object_info lacks (the session fails on any)."""
    return [n for n in CONTRACT_NODES if n not in info]


class ComfyError(AssertionError):
    """A prompt was rejected or failed; the message carries ComfyUI's error and the server log."""

    def __init__(self, message: str, payload: dict | None = None):
        super().__init__(message)
        self.payload = payload or {}


@dataclass
class RunResult:
    prompt_id: str
    outputs: dict
    status: dict
    messages: list = field(default_factory=list)

    def ui(self, node_id: str) -> dict:
        """The `ui` dict a node returned (e.g. {'text': [...]} or {'images': [...]})."""
        return self.outputs.get(str(node_id), {})

    def text(self, node_id: str) -> list[str]:
        return list(self.ui(node_id).get("text", []))

    def executed_nodes(self) -> set[str]:
        return {m["data"]["node"] for m in self.messages if m.get("type") == "executing" and m["data"].get("node")}

    def cached_nodes(self) -> set[str]:
        found: set[str] = set()
        for m in self.messages:
            if m.get("type") == "execution_cached":
                found.update(m["data"].get("nodes", []))
        return found


class ComfyServer(ComfyProcess):
    """The real server for tests: lifecycle and folders from tools/comfy_server.py, plus HTTP helpers."""

    def start(self, timeout: float = 240.0, env: dict | None = None) -> ComfyServer:
        try:
            super().start(timeout, env)
        except ComfyStartError as e:
            raise ComfyError(str(e)) from None
        return self

    # -- HTTP ----------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 30) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str, timeout: float = 60) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def post(self, path: str, payload: dict, timeout: float = 30) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
                return json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                payload_out = json.loads(body)
            except json.JSONDecodeError:
                payload_out = {"raw": body}
            raise ComfyError(f"POST {path} -> HTTP {e.code}: {body}\n{self.log_tail(30)}", payload_out) from None

    def object_info(self, node: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{node}" if node else ""))

    def free(self, unload_models: bool = True) -> None:
        """Ask ComfyUI to unload models and drop its execution cache."""
        self.post("/free", {"unload_models": unload_models, "free_memory": True})

    # -- prompts -------------------------------------------------------------------------
    def queue(self, graph: dict, client_id: str | None = None) -> str:
        res = self.post("/prompt", {"prompt": graph, "client_id": client_id or uuid.uuid4().hex})
        return res["prompt_id"]

    def run(self, graph: dict, timeout: float = 600) -> RunResult:
        """Queue an API-format graph, wait for it, return its outputs; raise ComfyError on failure."""
        import websocket  # websocket-client

        client_id = uuid.uuid4().hex
        messages: list[dict] = []
        ws = None
        try:
            ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=5)
        except Exception:
            ws = None  # fall back to polling /history
        prompt_id = self.queue(graph, client_id)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if ws is not None:
                    try:
                        raw = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        raw = None
                    except Exception:
                        ws = None
                        raw = None
                    if isinstance(raw, str):
                        msg = json.loads(raw)
                        if msg.get("data", {}).get("prompt_id") in (None, prompt_id):
                            messages.append(msg)
                        kind = msg.get("type")
                        data = msg.get("data", {})
                        if data.get("prompt_id") == prompt_id and kind in ("execution_success", "execution_error", "execution_interrupted"):
                            break
                        if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                            break
                    if raw is not None:
                        continue
                hist = self.get(f"/history/{prompt_id}")
                if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                    if hist[prompt_id]["status"].get("status_str") in ("success", "error"):
                        break
                if ws is None:
                    time.sleep(0.3)
            else:
                raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")
        finally:
            if ws is not None:
                ws.close()
        # the history entry can land a moment after the websocket says done
        for _ in range(50):
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist:
                break
            time.sleep(0.1)
        entry = hist.get(prompt_id, {})
        status = entry.get("status", {})
        if status.get("status_str") != "success":
            err = next((m for m in status.get("messages", []) if m[0] == "execution_error"), None)
            detail = json.dumps(err[1], indent=1)[:4000] if err else json.dumps(status)[:2000]
            raise ComfyError(f"prompt {prompt_id} failed: {detail}\n{self.log_tail()}", err[1] if err else status)
        return RunResult(prompt_id, entry.get("outputs", {}), status, messages)

    def run_error(self, graph: dict, timeout: float = 600) -> str:
        """Run a graph that must fail; return the error text (validation or execution)."""
        try:
            self.run(graph, timeout)
        except ComfyError as e:
            p = e.payload
            if "exception_message" in p:
                return f"{p.get('exception_type', '')}: {p['exception_message']}"
            return json.dumps(p)
        raise AssertionError("the graph was expected to fail but succeeded")

    def output_file(self, item: dict) -> Path:
        """Path of an output listed in a node's ui (`{'filename', 'subfolder', 'type'}`)."""
        root = {"output": self.output_dir, "temp": self.base_dir / "temp", "input": self.input_dir}[item.get("type", "output")]
        return root / item.get("subfolder", "") / item["filename"]


def tiny_sd15_checkpoint(seed: int = 0) -> Path:
    """The random tiny SD 1.5 checkpoint, generated once per fixture version and cached."""
    import hashlib
    import sys

    script = REPO / "tests" / "fixtures" / "make_tiny_sd15.py"
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:12]
    path = CACHE / f"tiny_sd15_s{seed}_{digest}.safetensors"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(script), str(path), "--seed", str(seed)], check=True, cwd=REPO)
    return path


def link_model(server: ComfyServer, folder: str, source: Path, name: str | None = None) -> str:
    """Make a file or folder visible in the server's models/<folder>/ and return its name."""
    dest = server.models_dir / folder / (name or source.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    dest.symlink_to(source.resolve(), target_is_directory=source.is_dir())
    return dest.name


def sd15_graph(ckpt: str, text: str = "a red cube on a table", seed: int = 1, size: int = 64,
               prefix: str = "tiny") -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode -> KSampler (1 step) -> VAEDecode -> SaveImage."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


# ---------------------------------------------------------------------------------------------
# slow self-contained fixtures run beside the other tests

PREFETCH: dict[str, Callable[[Path], subprocess.Popen]] = {}  # fixture name -> start(folder) -> process
_STARTED: dict[str, tuple[subprocess.Popen, Path, float]] = {}


def prefetch(name: str):
    """Register the starter of a slow fixture that needs nothing from the session (its own server and folders: the
    demo, the Colab notebook). With REZCTY_TEST_PREFETCH=1 conftest starts it in its own process once the tests are
    collected and runs its module last, so it runs beside the other tests; otherwise it starts when its fixture is
    first used. The fixture waits for it either way (`prefetched`)."""
    def register(start: Callable[[Path], subprocess.Popen]) -> Callable[[Path], subprocess.Popen]:
        PREFETCH[name] = start
        return start
    return register


def prefetch_enabled() -> bool:
    """Off unless REZCTY_TEST_PREFETCH=1: on 2 shared cores two torch processes side by side thrash (torch's
    threads spin-wait for each other), measured slower than one after the other; worth it with cores to spare."""
    return os.environ.get("REZCTY_TEST_PREFETCH", "0") == "1"


def start_prefetch(name: str, tmp_path_factory) -> tuple[subprocess.Popen, Path, float]:
    if name not in _STARTED:
        folder = tmp_path_factory.mktemp(name)
        _STARTED[name] = (PREFETCH[name](folder), folder, time.time())
    return _STARTED[name]


def prefetched(name: str, tmp_path_factory, timeout: float = 1800.0) -> tuple[int, Path]:
    """Wait for a prefetched fixture (started now if conftest did not); (exit code, its folder)."""
    proc, folder, started = start_prefetch(name, tmp_path_factory)
    try:
        code = proc.wait(timeout=max(1.0, timeout - (time.time() - started)))
    except subprocess.TimeoutExpired:
        stop_prefetches()
        raise AssertionError(f"{name}: still running after {timeout:.0f} s (see {folder})") from None
    print(f"[prefetch] {name}: exit {code} after {time.time() - started:.1f} s (started with the session)")
    return code, folder


def _pids_using(folder: Path) -> list[int]:
    """Processes whose command line names `folder` (the ComfyUI servers a prefetched job started in their own
    process groups, with their base directory inside it)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if str(folder).encode() in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def stop_prefetches() -> None:
    """End what is still running (an interrupted or failed session): the job's process group, then the servers it
    started in groups of their own."""
    for proc, folder, _ in _STARTED.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            for pid in _pids_using(folder):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def ensure_debian_binary(binary: str, packages: list[str]) -> str:
    """A real program from Debian's packages (Chromium, redis-server), installed with apt-get when it is missing
    and we are root, as on a fresh CI machine; a clear failure otherwise."""
    import os
    import shutil

    if Path(binary).exists():
        return binary
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise AssertionError(f"{binary} is missing: apt-get install -y {' '.join(packages)} (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)
    assert Path(binary).exists(), f"apt-get installed {' '.join(packages)} but {binary} is absent"
    return binary


def batch_manifest(out: Path) -> list[dict]:
    """Every record of a batch folder's OUT/manifest.jsonl."""
    return [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines() if line.strip()]


def done_records(out: Path) -> dict[str, list[dict]]:
    """The `done` records of a batch folder, by item key (a key with two records ran twice)."""
    found: dict[str, list[dict]] = {}
    for rec in batch_manifest(out):
        if rec.get("status") == "done":
            found.setdefault(rec["key"], []).append(rec)
    return found


def wait_for(predicate: Callable[[], object], timeout: float = 300.0, what: str = "") -> None:
    """Poll `predicate` every 0.1 s until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")
