"""The HTTP and websocket API of one ComfyUI server: queue, wait with progress, collect, upload, free.

"""
from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rezcty_core.factory.errors import ClientError, PromptFailed, ServerUnavailable, ValidationFailed
from rezcty_core.factory.validate import combo_options, input_specs, validate_graph

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# the client

@dataclass
class RunOutput:
    """What one prompt produced: ComfyUI's outputs, the files downloaded, the texts shown on nodes."""

    prompt_id: str
    outputs: dict
    files: list[Path] = field(default_factory=list)

    def texts(self) -> dict[str, list[str]]:
        found = {}
        for node_id, ui in self.outputs.items():
            if isinstance(ui, dict) and ui.get("text"):
                found[node_id] = [str(t) for t in ui["text"]]
        return found


class ComfyClient:
    """One ComfyUI server. `run(graph)` checks, uploads, queues, waits and downloads."""

    def __init__(self, url: str, timeout: float = 30.0, unreachable_timeout: float = 60.0, log: Callable[[str], None] | None = None):
        url = url.rstrip("/")
        if "://" not in url:
            url = "http://" + url
        self.url = url
        self.timeout = timeout
        self.unreachable_timeout = unreachable_timeout
        self.client_id = uuid.uuid4().hex
        self._object_info: dict | None = None
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    # -- HTTP -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", errors="replace")
            raise PromptFailed(f"{method} {path} -> HTTP {e.code}: {text[:2000]}", _json_or_raw(text)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            raise ServerUnavailable(f"{self.url} is not reachable ({getattr(e, 'reason', e)})") from None

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        return json.loads(self._request("GET", path, timeout=timeout) or b"null")

    def post_json(self, path: str, payload: dict, timeout: float | None = None) -> Any:
        body = self._request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}, timeout)
        return json.loads(body) if body else {}

    def alive(self) -> bool:
        try:
            self.get_json("/system_stats", timeout=5)
            return True
        except ClientError:
            return False

    def object_info(self, refresh: bool = False) -> dict:
        if self._object_info is None or refresh:
            self._object_info = self.get_json("/object_info", timeout=max(self.timeout, 120))
        return self._object_info

    def free(self, unload_models: bool = True) -> None:
        """Unload models and free memory (between factory lines, so each gets the whole GPU)."""
        self.post_json("/free", {"unload_models": unload_models, "free_memory": True})

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def in_queue(self, prompt_id: str) -> bool:
        q = self.get_json("/queue")
        return any(len(item) > 1 and item[1] == prompt_id for item in q.get("queue_running", []) + q.get("queue_pending", []))

    # -- inputs -----------------------------------------------------------------------------
    def upload_image(self, path: str | Path, subfolder: str = "rezcty") -> str:
        """Upload a local image to the server's input/ and return the value LoadImage takes.

        The stored name carries a hash of the content, so uploading the same file twice is free
        of side effects and two files with one name never overwrite each other.
        """
        path = Path(path)
        data = path.read_bytes()
        name = f"{hashlib.sha256(data).hexdigest()[:10]}_{_ascii_name(path.name)}"
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = []
        for key, val in (("subfolder", subfolder), ("type", "input"), ("overwrite", "true")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{val}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        res = json.loads(self._request("POST", "/upload/image", b"".join(parts),
                                       {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=120))
        return f"{res['subfolder']}/{res['name']}" if res.get("subfolder") else res["name"]

    def upload_local_inputs(self, graph: dict) -> set[str]:
        """Replace local file paths given to image-upload inputs by the uploaded names."""
        info = self.object_info()
        uploaded: set[str] = set()
        for node in graph.values():
            specs = input_specs(info.get(node.get("class_type"), {}))
            for name, value in list(node.get("inputs", {}).items()):
                spec = specs.get(name, ([None], False))[0]
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if opts.get("image_upload") and isinstance(value, str) and value not in (combo_options(spec) or []):
                    local = Path(os.path.expanduser(value))
                    if local.is_file():
                        node["inputs"][name] = self.upload_image(local)
                        uploaded.add(node["inputs"][name])
        return uploaded

    def check(self, graph: dict, uploaded: Iterable[str] = ()) -> None:
        problems = validate_graph(graph, self.object_info(), uploaded)
        if problems and self._object_info is not None:
            # a model added since the last look: ask the server again before giving up
            problems = validate_graph(graph, self.object_info(refresh=True), uploaded)
        if problems:
            raise ValidationFailed(problems)

    # -- run --------------------------------------------------------------------------------
    def queue(self, graph: dict, prompt_id: str | None = None) -> str:
        payload = {"prompt": graph, "client_id": self.client_id}
        if prompt_id:
            payload["prompt_id"] = prompt_id
        try:
            return self.post_json("/prompt", payload)["prompt_id"]
        except PromptFailed as e:
            raise PromptFailed(_describe_rejection(e.details) or str(e), e.details) from None

    def wait(self, prompt_id: str, timeout: float = 3600.0, on_event: Callable[[dict], None] | None = None,
             ws: Any = None) -> dict:
        """Wait for a queued prompt; return its /history entry. Websocket first, /history as the fallback."""
        deadline = time.time() + timeout
        unreachable_since: float | None = None
        last_poll = 0.0
        interval = 2.0 if ws is not None else 0.5
        while time.time() < deadline:
            if ws is not None:
                try:
                    raw = ws.recv()
                except Exception as e:  # a quiet second, or the socket closed (server gone): poll /history
                    if type(e).__name__ != "WebSocketTimeoutException":
                        ws, interval = None, 0.5
                    raw = None
                if isinstance(raw, str):  # binary frames are previews
                    msg = json.loads(raw)
                    data = msg.get("data") or {}
                    if data.get("prompt_id") == prompt_id:
                        if on_event:
                            on_event(msg)
                        kind = msg.get("type")
                        if kind in ("execution_success", "execution_error", "execution_interrupted") or (
                                kind == "executing" and data.get("node") is None):
                            interval = 0.1  # done: the history entry lands a moment later
            else:
                time.sleep(0.25)
            if time.time() - last_poll < interval:
                continue
            last_poll = time.time()
            try:
                entry = self.history(prompt_id)
                unreachable_since = None
            except ServerUnavailable:
                unreachable_since = unreachable_since or time.time()
                if time.time() - unreachable_since > self.unreachable_timeout:
                    raise
                time.sleep(1.0)
                continue
            status = (entry or {}).get("status", {})
            if entry and (status.get("completed") is not None or status.get("status_str") in ("success", "error")):
                return entry
            if entry is None and not self.in_queue(prompt_id):
                time.sleep(0.5)  # neither finished nor queued: re-check once, then the server lost it
                if self.history(prompt_id) is None and not self.in_queue(prompt_id):
                    raise ServerUnavailable(f"{self.url} no longer knows prompt {prompt_id} (server restarted?)")
        raise ClientError(f"prompt {prompt_id} did not finish within {timeout:.0f} s on {self.url}")

    def open_ws(self) -> Any:
        try:
            import websocket  # websocket-client

            scheme = "wss" if self.url.startswith("https") else "ws"
            host = self.url.split("://", 1)[1]
            return websocket.create_connection(f"{scheme}://{host}/ws?clientId={self.client_id}", timeout=1.0)
        except Exception:
            return None  # no websocket: /history polling still works

    def run(self, graph: dict, out_dir: str | Path | None = None, timeout: float = 3600.0,
            prompt_id: str | None = None, on_event: Callable[[dict], None] | None = None,
            validate: bool = True, file_prefix: str = "") -> RunOutput:
        """Check, upload, queue, wait and download one graph."""
        graph = json.loads(json.dumps(graph))
        uploaded = self.upload_local_inputs(graph)
        if validate:
            self.check(graph, uploaded)
        ws = self.open_ws()
        try:
            pid = self.queue(graph, prompt_id)
            entry = self.wait(pid, timeout, on_event, ws)
        finally:
            if ws is not None:
                ws.close()
        return self.collect(pid, entry, graph, out_dir, file_prefix)

    def collect(self, prompt_id: str, entry: dict, graph: dict | None = None, out_dir: str | Path | None = None,
                file_prefix: str = "") -> RunOutput:
        """Turn a finished /history entry into a RunOutput (raise PromptFailed for a failed prompt)."""
        status = entry.get("status", {})
        if status.get("status_str") != "success":
            raise PromptFailed(_describe_failure(status, graph or entry.get("prompt", [None, None, {}])[2]), status)
        result = RunOutput(prompt_id, entry.get("outputs", {}))
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for ui in result.outputs.values():
                for items in (ui or {}).values():
                    for item in items if isinstance(items, list) else []:
                        if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                            result.files.append(self.download(item, out, file_prefix))
        return result

    def download(self, item: dict, out_dir: Path, prefix: str = "") -> Path:
        """Fetch one output file through /view; same name + same content is not fetched twice."""
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        data = self._request("GET", f"/view?{query}", timeout=300)
        dest = out_dir / (prefix + Path(item["filename"]).name)
        if dest.exists() and dest.read_bytes() != data:
            stem, n = dest.stem, 2
            while dest.exists() and dest.read_bytes() != data:
                dest = out_dir / f"{stem}_{n}{dest.suffix}"
                n += 1
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest


def _ascii_name(name: str) -> str:
    keep = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    return keep[-80:] or "image"


def _json_or_raw(text: str) -> dict:
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else {"raw": value}
    except json.JSONDecodeError:
        return {"raw": text}


def _describe_rejection(details: dict) -> str:
    """ComfyUI's 400 answer to /prompt, as one readable message."""
    if not details or "error" not in details:
        return ""
    err = details["error"]
    lines = [f"server refused the prompt: {err.get('message', err) if isinstance(err, dict) else err}"]
    for node_id, node_err in (details.get("node_errors") or {}).items():
        for e in node_err.get("errors", []):
            lines.append(f"  node {node_id} ({node_err.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "\n".join(lines)


def _describe_failure(status: dict, graph: dict | None) -> str:
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            node = data.get("node_id")
            cls = data.get("node_type") or (graph or {}).get(node, {}).get("class_type")
            return f"node {node} ({cls}) failed: {data.get('exception_type', '')}: {data.get('exception_message', '').strip()}"
        if kind == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')}"
    return f"prompt failed: {json.dumps(status)[:500]}"


# ---------------------------------------------------------------------------------------------
# batches

