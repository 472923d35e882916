"""Drive a ComfyUI server headless through its HTTP and websocket API: one run or a resumable batch.

    python -m rezcty_core.client run WORKFLOW_API.json --server URL [--set NODE.INPUT=VALUE ...] [--out DIR]
    python -m rezcty_core.client batch WORKFLOW_API.json --server URL [--server URL2 ...] --out DIR
        (--ideas FILE | --prompts FILE.json | --images DIR) [--bind NODE.INPUT] [--set ...]
    python -m rezcty_core.client check WORKFLOW_API.json --server URL [--set ...]
    python -m rezcty_core.client free --server URL

Before anything is queued the graph is checked against the server's /object_info: unknown
(missing) node types, missing models, bad combo values, out-of-range numbers and broken links are
listed together, one line each. Local image files given to an image-upload input are uploaded
through /upload/image. Progress comes from the websocket, with /history polled as a fallback, and
every wait has a timeout. Outputs are downloaded through /view.

A batch keeps an append-only manifest (OUT/manifest.jsonl). Every item has a stable key (a hash
of its content and occurrence) and every attempt a deterministic prompt_id, so a re-run of the
same command after the client or the server was stopped asks the server what happened to each
unfinished prompt: finished ones are collected, running ones awaited, lost ones queued again —
no item is lost and none is produced twice. One failing item is recorded and the rest go on;
several --server URLs share one batch.

Standard library plus websocket-client (and tqdm for the progress bar when installed); never
imports ComfyUI, so it runs on any machine that can reach the server (a laptop, Colab).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")
# input name -> models/ folder, to name the folder when a model is missing
MODEL_FOLDERS = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "style_lora": "loras", "structure_lora": "loras",
    "vae_name": "vae", "embedding": "embeddings", "model_name": "upscale_models", "base_model": "LLM",
    "adapter": "rezcty_adapters", "unet_name": "diffusion_models", "clip_name": "text_encoders",
    "control_net_name": "controlnet",
}
FOLDER_BY_CLASS_INPUT = {("RezctyDINOv2Loader", "model"): "dinov2"}
NAMESPACE = uuid.UUID("5b0c7a4e-7d1e-4f8e-9a53-2f3c1e0a9d10")


# ---------------------------------------------------------------------------------------------
# errors

class ClientError(Exception):
    """Anything the user must act on; the message says what and where."""


class ValidationFailed(ClientError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the workflow does not fit this server:\n" + "\n".join(f"  - {p}" for p in problems))


class ServerUnavailable(ClientError):
    """The server could not be reached (down, restarted, wrong URL)."""


class PromptFailed(ClientError):
    """The server rejected or failed this prompt; retrying the same item will fail the same way."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


# ---------------------------------------------------------------------------------------------
# workflow files

def load_workflow(path: str | Path) -> dict:
    """Read an API-format workflow; a UI-format file is refused with what to do instead."""
    path = Path(path)
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClientError(f"{path}: no such workflow file") from None
    except json.JSONDecodeError as e:
        raise ClientError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise ClientError(f"{path}: this is a UI-format workflow; use its API-format twin "
                          f"(workflows/*.api.json) or, in ComfyUI, Workflow > Export (API)")
    if isinstance(graph, dict) and "prompt" in graph and isinstance(graph["prompt"], dict):
        graph = graph["prompt"]
    if not isinstance(graph, dict) or not all(isinstance(v, dict) and "class_type" in v for v in graph.values()):
        raise ClientError(f"{path}: expected an API-format workflow: {{node_id: {{class_type, inputs}}}}")
    return graph


def find_node(graph: dict, ref: str) -> str:
    """A node id from an id, a title (`_meta.title`) or a class_type that occurs once."""
    if ref in graph:
        return ref
    by_title = [k for k, v in graph.items() if v.get("_meta", {}).get("title") == ref]
    if len(by_title) == 1:
        return by_title[0]
    by_class = [k for k, v in graph.items() if v.get("class_type") == ref]
    if len(by_class) == 1:
        return by_class[0]
    if len(by_title) > 1 or len(by_class) > 1:
        raise ClientError(f"node '{ref}' is ambiguous (ids {sorted(by_title or by_class)}); use the node id")
    known = ", ".join(f"{k} ({v.get('class_type')})" for k, v in graph.items())
    raise ClientError(f"no node '{ref}' in the workflow (nodes: {known})")


def parse_value(text: str, current: Any = None) -> Any:
    """`--set` value: JSON when it parses (numbers, true/false, lists), kept a string where the input is one.

    `null` on a linked or absent input removes it (disconnects an optional input)."""
    if isinstance(current, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_input(graph: dict, target: str, value: Any, parse: bool = False) -> None:
    """Set NODE.INPUT (NODE = id, title or unique class_type) on a graph in place."""
    node_ref, sep, input_name = target.rpartition(".")
    if not sep or not node_ref or not input_name:
        raise ClientError(f"'{target}': expected NODE.INPUT, e.g. 5.seed or KSampler.steps")
    node_id = find_node(graph, node_ref)
    inputs = graph[node_id].setdefault("inputs", {})
    if parse:
        current = inputs.get(input_name)
        value = None if value == "null" and not isinstance(current, str) else parse_value(value, current)
    if value is None:  # `NODE.INPUT=null` disconnects an (optional) input
        inputs.pop(input_name, None)
    else:
        inputs[input_name] = value


def apply_sets(graph: dict, sets: Iterable[str]) -> dict:
    """Apply `NODE.INPUT=VALUE` strings; returns the graph (changed in place)."""
    for item in sets:
        target, sep, value = item.partition("=")
        if not sep:
            raise ClientError(f"--set '{item}': expected NODE.INPUT=VALUE")
        set_input(graph, target.strip(), value, parse=True)
    return graph


# ---------------------------------------------------------------------------------------------
# validation against /object_info

def _input_specs(info: dict) -> dict[str, tuple[list, bool]]:
    specs: dict[str, tuple[list, bool]] = {}
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            specs[name] = (spec if isinstance(spec, list) else [spec], required)
    return specs


def _combo_options(spec: list) -> list | None:
    kind = spec[0] if spec else None
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return list(opts.get("options", [])) if "options" in opts else None
    return None


def _types_match(out_type: str, in_type: str) -> bool:
    if "*" in (out_type, in_type) or out_type == in_type:
        return True
    return bool(set(str(out_type).split(",")) & set(str(in_type).split(",")))


def _model_folder(class_type: str, name: str, options: list) -> str | None:
    if (class_type, name) in FOLDER_BY_CLASS_INPUT:
        return FOLDER_BY_CLASS_INPUT[(class_type, name)]
    if name in MODEL_FOLDERS:
        return MODEL_FOLDERS[name]
    if any(str(o).lower().endswith(MODEL_EXTS) for o in options):
        return "the matching models/ folder"
    return None


def validate_graph(graph: dict, object_info: dict, uploaded: Iterable[str] = ()) -> list[str]:
    """Every problem ComfyUI would refuse the graph for (and a few it would only fail on), one line each."""
    problems: list[str] = []
    uploaded = set(uploaded)
    if not graph:
        return ["the workflow is empty"]
    has_output = False
    for node_id, node in graph.items():
        class_type = node.get("class_type")
        label = f"node {node_id} ({class_type})"
        info = object_info.get(class_type)
        if info is None:
            problems.append(f"{label}: missing node type '{class_type}' — install the custom node pack "
                            f"that provides it (or update it) and restart ComfyUI")
            continue
        has_output = has_output or bool(info.get("output_node"))
        specs = _input_specs(info)
        inputs = node.get("inputs", {})
        for name, (spec, required) in specs.items():
            if name not in inputs:
                if required:
                    problems.append(f"{label}: missing required input '{name}'")
                continue
            problems.extend(_check_value(graph, object_info, label, class_type, name, spec, inputs[name], uploaded))
    if not has_output:
        problems.append("the workflow has no output node (SaveImage, PreviewAny, a writer…): nothing would run")
    return problems


def _check_value(graph: dict, object_info: dict, label: str, class_type: str, name: str, spec: list,
                 value: Any, uploaded: set[str]) -> list[str]:
    kind = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    where = f"{label}.{name}"
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
        src = graph.get(value[0])
        if src is None:
            return [f"{where}: linked to node {value[0]}, which is not in the workflow"]
        src_info = object_info.get(src.get("class_type"))
        if src_info is None:
            return []  # reported as a missing node already
        outs = src_info.get("output", [])
        if value[1] >= len(outs):
            return [f"{where}: linked to output {value[1]} of node {value[0]} ({src['class_type']}), "
                    f"which has only {len(outs)} outputs"]
        in_type = "COMBO" if isinstance(kind, list) else str(kind)
        if not _types_match(str(outs[value[1]]), in_type) and not (isinstance(kind, list) and outs[value[1]] == "COMBO"):
            return [f"{where}: expects {in_type} but is linked to {outs[value[1]]} "
                    f"(output {value[1]} of node {value[0]} {src['class_type']})"]
        return []
    options = _combo_options(spec)
    if options is not None:
        if opts.get("image_upload") and (value in uploaded or value in options):
            return []
        if opts.get("multiselect") and isinstance(value, list):
            bad = [v for v in value if v not in options]
            return [f"{where}: bad values {bad} (allowed: {_preview(options)})"] if bad else []
        if value in options:
            return []
        if opts.get("image_upload"):
            return [f"{where}: input file '{value}' is neither a local file nor in the server's input/ folder"]
        folder = _model_folder(class_type, name, options)
        if folder:
            return [f"{where}: missing model '{value}' — put it in models/{folder}/ on the server "
                    f"(available: {_preview(options)})"]
        return [f"{where}: bad value {value!r} (allowed: {_preview(options)})"]
    if kind == "INT" or kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and isinstance(value, float) and not value.is_integer()):
            return [f"{where}: expected {'an integer' if kind == 'INT' else 'a number'}, got {value!r}"]
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and value < lo:
            return [f"{where}: {value} is out of range (minimum {lo})"]
        if hi is not None and value > hi:
            return [f"{where}: {value} is out of range (maximum {hi})"]
        return []
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return [f"{where}: expected true or false, got {value!r}"]
    if kind == "STRING" and not isinstance(value, str):
        return [f"{where}: expected text, got {value!r}"]
    return []


def _preview(options: list, limit: int = 8) -> str:
    if not options:
        return "none — the folder is empty"
    shown = ", ".join(str(o) for o in options[:limit])
    return shown + (f", … ({len(options)} in all)" if len(options) > limit else "")


# ---------------------------------------------------------------------------------------------
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
            specs = _input_specs(info.get(node.get("class_type"), {}))
            for name, value in list(node.get("inputs", {}).items()):
                spec = specs.get(name, ([None], False))[0]
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if opts.get("image_upload") and isinstance(value, str) and value not in (_combo_options(spec) or []):
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

@dataclass
class Item:
    """One unit of a batch: a key that survives restarts, the values bound into the graph, a label."""

    key: str
    label: str
    values: dict  # "NODE.INPUT" -> value
    prompt: str | None = None  # the text this item is about (written next to its images)
    source: dict = field(default_factory=dict)


def _stable_keys(contents: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for text in contents:
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        seen[h] = seen.get(h, 0) + 1
        keys.append(h if seen[h] == 1 else f"{h}-{seen[h]}")
    return keys


def items_from_ideas(path: Path, bind: str) -> list[Item]:
    """One idea per non-empty line (`#` starts a comment line)."""
    ideas = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    ideas = [i for i in ideas if i and not i.startswith("#")]
    return [Item(k, i[:60], {bind: i}, prompt=None, source={"idea": i}) for k, i in zip(_stable_keys(ideas), ideas)]


def items_from_prompts(path: Path, bind: str, maps: dict[str, str]) -> list[Item]:
    """A JSON list of strings or of objects with at least "prompt" (line 1's prompts.json works as is)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ClientError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if not isinstance(data, list):
        raise ClientError(f"{path}: expected a JSON list of prompts (strings or objects with \"prompt\")")
    rows = []
    for n, entry in enumerate(data, 1):
        if isinstance(entry, str):
            entry = {"prompt": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise ClientError(f"{path}: entry {n} has no \"prompt\" text")
        rows.append(entry)
    keys = _stable_keys([json.dumps(r, sort_keys=True) for r in rows])
    items = []
    for key, row in zip(keys, rows):
        values = {bind: row["prompt"]}
        for field_name, target in maps.items():
            if field_name in row:
                values[target] = row[field_name]
        items.append(Item(key, row["prompt"][:60], values, prompt=row["prompt"], source=row))
    return items


def items_from_images(folder: Path, bind: str, text_bind: str | None) -> list[Item]:
    """Every image under a folder (sorted); a sidecar NAME.txt holds the image's prompt when present."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ClientError(f"{folder}: no images (looked for {', '.join(sorted(IMAGE_EXTS))})")
    contents = []
    for p in files:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        contents.append(f"{p.relative_to(folder)}|{digest}")
    items = []
    for key, p in zip(_stable_keys(contents), files):
        values: dict = {bind: str(p.resolve())}
        prompt = None
        sidecar = p.with_suffix(".txt")
        if sidecar.is_file():
            prompt = sidecar.read_text(encoding="utf-8").strip()
            if text_bind and prompt:
                values[text_bind] = prompt
        items.append(Item(key, str(p.relative_to(folder)), values, prompt=prompt, source={"image": str(p)}))
    return items


def default_bind(graph: dict, kind: str) -> str | None:
    """Where a batch item goes when --bind is not given, from the node types in the workflow."""
    prefs = {
        "ideas": [("RezctyWhispererExpand", "prompt"), ("PrimitiveStringMultiline", "value"), ("PrimitiveString", "value")],
        "prompts": [("RezctyEmbeddingBridge", "text"), ("CLIPTextEncode", "text"), ("PrimitiveStringMultiline", "value")],
        "images": [("LoadImage", "image")],
        "image_text": [("RezctyMetadataWriter", "prompt")],
    }[kind]
    for class_type, name in prefs:
        ids = sorted((k for k, v in graph.items() if v.get("class_type") == class_type), key=_node_sort_key)
        if ids:
            return f"{ids[0]}.{name}"
    return None


def _node_sort_key(node_id: str) -> tuple:
    return (0, int(node_id)) if str(node_id).isdigit() else (1, str(node_id))


class Manifest:
    """Append-only JSON lines; the last line about an item is its state. Safe across threads."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.state: dict[str, dict] = {}
        if path.exists():
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    # a line cut short by a kill: everything before it still counts
                    print(f"[client] {path}:{n}: unreadable line ignored", file=sys.stderr)
                    continue
                if rec.get("key"):
                    self.state[rec["key"]] = {**self.state.get(rec["key"], {}), **rec}

    def write(self, record: dict) -> None:
        record = {**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self.lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if record.get("key"):
                self.state[record["key"]] = {**self.state.get(record["key"], {}), **record}


@dataclass
class BatchReport:
    done: list[str]
    failed: dict[str, str]
    pending: list[str]
    out_dir: Path

    @property
    def complete(self) -> bool:
        return not self.pending


class Batch:
    """A batch of items over one workflow and a pool of servers, resumable from OUT/manifest.jsonl."""

    def __init__(self, graph: dict, items: list[Item], servers: list[str], out_dir: str | Path,
                 timeout: float = 3600.0, unreachable_timeout: float = 60.0, retry_failed: bool = False,
                 progress: bool = True, log: Callable[[str], None] | None = None):
        if not servers:
            raise ClientError("no --server given")
        self.graph = graph
        self.items = items
        self.out_dir = Path(out_dir)
        self.files_dir = self.out_dir / "files"
        self.timeout = timeout
        self.retry_failed = retry_failed
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.clients = [ComfyClient(u, unreachable_timeout=unreachable_timeout, log=self.log) for u in servers]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.out_dir / "manifest.jsonl")
        self.batch_id = str(self.out_dir.resolve())
        self.stop_all = threading.Event()

    # -- per item ---------------------------------------------------------------------------
    def prompt_id(self, key: str, attempt: int) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{self.batch_id}|{key}|{attempt}"))

    def item_graph(self, item: Item) -> dict:
        graph = json.loads(json.dumps(self.graph))
        for target, value in item.values.items():
            set_input(graph, target, value)
        return graph

    def _finish(self, client: ComfyClient, item: Item, graph: dict, pid: str, entry: dict, attempt: int) -> None:
        prefix = f"{item.key[:8]}_"
        result = client.collect(pid, entry, graph, self.files_dir, file_prefix=prefix)
        if item.prompt:
            for f in result.files:
                if f.suffix.lower() in IMAGE_EXTS:
                    f.with_suffix(".txt").write_text(item.prompt + "\n", encoding="utf-8")
        self.manifest.write({"key": item.key, "status": "done", "prompt_id": pid, "server": client.url,
                             "attempt": attempt, "label": item.label, "source": item.source,
                             "files": [str(f.relative_to(self.out_dir)) for f in result.files],
                             "texts": result.texts()})

    def _fail(self, client: ComfyClient, item: Item, pid: str, attempt: int, message: str) -> None:
        self.manifest.write({"key": item.key, "status": "failed", "prompt_id": pid, "server": client.url,
                             "attempt": attempt, "label": item.label, "source": item.source, "error": message})
        self.log(f"[client] item {item.label!r} failed: {message.splitlines()[0]}")

    def resume_item(self, client: ComfyClient, item: Item, state: dict) -> bool:
        """An item queued by an earlier run: collect it, wait for it, or report it lost (False)."""
        url, pid, attempt = state.get("server"), state.get("prompt_id"), int(state.get("attempt", 0))
        owner = next((c for c in self.clients if c.url == url), None) or ComfyClient(url, unreachable_timeout=5)
        try:
            entry = owner.history(pid)
            if entry is None and owner.in_queue(pid):
                entry = owner.wait(pid, self.timeout)
        except ServerUnavailable:
            return False
        if entry is None:
            return False
        graph = self.item_graph(item)
        try:
            self._finish(owner, item, graph, pid, entry, attempt)
        except PromptFailed as e:
            self._fail(owner, item, pid, attempt, str(e))
        return True

    def run_item(self, client: ComfyClient, item: Item) -> None:
        """Queue and finish one item on `client`; ServerUnavailable leaves it for another try."""
        state = self.manifest.state.get(item.key, {})
        if state.get("status") == "queued" and self.resume_item(client, item, state):
            return
        attempt = int(state.get("attempt", 0)) + 1
        pid = self.prompt_id(item.key, attempt)
        graph = self.item_graph(item)
        try:
            uploaded = client.upload_local_inputs(graph)
            try:
                client.check(graph, uploaded)
            except ValidationFailed as e:
                raise PromptFailed("; ".join(e.problems)) from None
            ws = client.open_ws()
            try:
                self.manifest.write({"key": item.key, "status": "queued", "prompt_id": pid, "server": client.url,
                                     "attempt": attempt, "label": item.label})
                client.queue(graph, pid)
                entry = client.wait(pid, self.timeout, ws=ws)
            finally:
                if ws is not None:
                    ws.close()
            self._finish(client, item, graph, pid, entry, attempt)
        except PromptFailed as e:
            self._fail(client, item, pid, attempt, str(e))
        except (OSError, ValueError) as e:  # an unreadable input file etc.: this item only
            self._fail(client, item, pid, attempt, f"{type(e).__name__}: {e}")

    # -- the pool ---------------------------------------------------------------------------
    def todo(self) -> list[Item]:
        out = []
        for item in self.items:
            status = self.manifest.state.get(item.key, {}).get("status")
            if status == "done" or (status == "failed" and not self.retry_failed):
                continue
            out.append(item)
        return out

    def preflight(self, todo: list[Item]) -> None:
        """Check the workflow once before anything is queued, so a wrong model name fails fast."""
        if not todo:
            return
        graph = self.item_graph(todo[0])
        local = {v for node in graph.values() for v in node.get("inputs", {}).values()
                 if isinstance(v, str) and Path(os.path.expanduser(v)).is_file()}
        for client in self.clients:
            try:
                client.check(graph, local)
                return
            except ServerUnavailable:
                continue
        raise ServerUnavailable("no server of the pool is reachable: " + ", ".join(c.url for c in self.clients))

    def run(self) -> BatchReport:
        todo = self.todo()
        self.preflight(todo)
        self.manifest.write({"event": "start", "items": len(self.items), "todo": len(todo),
                             "servers": [c.url for c in self.clients]})
        work: queue.Queue[Item] = queue.Queue()
        for item in todo:
            work.put(item)
        bar = _progress_bar(len(self.items), len(self.items) - len(todo), self.progress)
        lock = threading.Lock()
        dead: set[str] = set()
        in_flight = [0]  # items being run by some worker: one may come back if its server dies

        def take() -> Item | None:
            """The next item; None when the batch is over. Waits while others still hold items."""
            while not self.stop_all.is_set():
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
                    self.run_item(client, item)
                except ServerUnavailable as e:
                    with lock:
                        work.put(item)  # another server (or this one, once back) takes it
                        in_flight[0] -= 1
                    down_since = down_since or time.time()
                    self.log(f"[client] {client.url}: {e}")
                    while not client.alive():
                        if time.time() - down_since > client.unreachable_timeout:
                            with lock:
                                dead.add(client.url)
                                if len(dead) == len(self.clients):
                                    self.stop_all.set()
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

        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bar.close()
        report = self.report()
        self.write_results()
        self.manifest.write({"event": "end", "done": len(report.done), "failed": len(report.failed),
                             "pending": len(report.pending)})
        return report

    def report(self) -> BatchReport:
        done, failed, pending = [], {}, []
        for item in self.items:
            state = self.manifest.state.get(item.key, {})
            if state.get("status") == "done":
                done.append(item.key)
            elif state.get("status") == "failed":
                failed[item.key] = state.get("error", "")
            else:
                pending.append(item.key)
        return BatchReport(done, failed, pending, self.out_dir)

    def write_results(self) -> None:
        """results.json: one entry per item in input order, with its status, files and texts."""
        rows = []
        for item in self.items:
            state = self.manifest.state.get(item.key, {})
            rows.append({"key": item.key, "label": item.label, **item.source, "status": state.get("status", "pending"),
                         "files": state.get("files", []), "texts": state.get("texts", {}),
                         **({"error": state["error"]} if state.get("status") == "failed" else {})})
        tmp = self.out_dir / "results.json.part"
        tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.out_dir / "results.json")


def write_prompts_json(results: list[dict], collect: str | None, path: Path) -> list[dict]:
    """From an ideas batch's results: [{"idea", "prompt"}] for line 2 (`--prompts`)."""
    rows = []
    for r in results:
        if r.get("status") != "done":
            continue
        texts = r.get("texts", {})
        chosen = texts.get(collect) if collect else None
        if chosen is None and texts:
            chosen = texts[sorted(texts, key=_node_sort_key)[-1]]
        for text in chosen or []:
            rows.append({"idea": r.get("idea", r.get("label")), "prompt": text})
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return rows


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


# ---------------------------------------------------------------------------------------------
# command line

def _event_printer() -> Callable[[dict], None]:
    def show(msg: dict) -> None:
        data = msg.get("data") or {}
        if msg.get("type") == "executing" and data.get("node"):
            print(f"[client] running node {data['node']}", file=sys.stderr, flush=True)
        elif msg.get("type") == "progress":
            print(f"\r[client] node {data.get('node')}: {data.get('value')}/{data.get('max')}", end="",
                  file=sys.stderr, flush=True)
    return show


def cmd_run(args: argparse.Namespace) -> int:
    graph = apply_sets(load_workflow(args.workflow), args.set)
    client = ComfyClient(args.server[0])
    result = client.run(graph, out_dir=args.out, timeout=args.timeout, on_event=_event_printer())
    texts = result.texts()
    for node_id, values in texts.items():
        title = graph.get(node_id, {}).get("_meta", {}).get("title", graph.get(node_id, {}).get("class_type"))
        for v in values:
            print(f"{title} [{node_id}]: {v}")
    if args.out:
        Path(args.out, "outputs.json").write_text(json.dumps({"prompt_id": result.prompt_id, "outputs": result.outputs},
                                                             indent=1, ensure_ascii=False), encoding="utf-8")
        for f in result.files:
            print(f)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    graph = apply_sets(load_workflow(args.workflow), args.set)
    client = ComfyClient(args.server[0])
    uploaded = {v for node in graph.values() for v in node.get("inputs", {}).values()
                if isinstance(v, str) and Path(os.path.expanduser(v)).is_file()}
    client.check(graph, uploaded)
    print(f"{args.workflow}: OK on {client.url}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    graph = apply_sets(load_workflow(args.workflow), args.set)
    sources = [s for s in (args.ideas, args.prompts, args.images) if s]
    if len(sources) != 1:
        raise ClientError("batch: give exactly one of --ideas FILE, --prompts FILE.json, --images DIR")
    kind = "ideas" if args.ideas else "prompts" if args.prompts else "images"
    bind = args.bind or default_bind(graph, kind)
    if not bind:
        raise ClientError(f"batch: no input to bind the {kind} to; give --bind NODE.INPUT")
    maps = dict(m.split("=", 1) for m in args.map)
    if kind == "ideas":
        items = items_from_ideas(Path(args.ideas), bind)
    elif kind == "prompts":
        items = items_from_prompts(Path(args.prompts), bind, maps)
    else:
        text_bind = args.bind_text if args.bind_text is not None else default_bind(graph, "image_text")
        items = items_from_images(Path(args.images), bind, text_bind or None)
    batch = Batch(graph, items, args.server, args.out, timeout=args.timeout,
                  unreachable_timeout=args.server_timeout, retry_failed=args.retry_failed, progress=not args.quiet)
    report = batch.run()
    if kind == "ideas":
        rows = json.loads((batch.out_dir / "results.json").read_text(encoding="utf-8"))
        write_prompts_json(rows, args.collect, batch.out_dir / "prompts.json")
    print(f"{len(report.done)} done, {len(report.failed)} failed, {len(report.pending)} pending -> {batch.out_dir}")
    for key, err in report.failed.items():
        print(f"  failed {key}: {err.splitlines()[0] if err else ''}")
    if report.pending:
        print("  pending items remain (server unreachable?): run the same command again to resume")
        return 3
    return 1 if report.failed else 0


def cmd_free(args: argparse.Namespace) -> int:
    for url in args.server:
        ComfyClient(url).free()
        print(f"{url}: models unloaded")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m rezcty_core.client", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, workflow: bool = True) -> None:
        if workflow:
            p.add_argument("workflow", help="API-format workflow JSON (workflows/*.api.json)")
            p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                           help="change an input; NODE is an id, a title or a class used once")
        p.add_argument("--server", action="append", required=True, metavar="URL",
                       help="ComfyUI server, e.g. http://127.0.0.1:8188 (repeat for a pool in batch mode)")

    p = sub.add_parser("run", help="run one workflow and download its outputs")
    common(p)
    p.add_argument("--out", default=None, help="folder for the downloaded outputs")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the prompt")
    p = sub.add_parser("check", help="only check the workflow against the server")
    common(p)
    p = sub.add_parser("batch", help="run a workflow once per idea, prompt or image, resumably")
    common(p)
    p.add_argument("--out", required=True, help="batch folder (manifest.jsonl, results.json, files/)")
    p.add_argument("--ideas", help="text file, one idea per line (line 1)")
    p.add_argument("--prompts", help="JSON list of prompts, e.g. line 1's prompts.json (line 2)")
    p.add_argument("--images", help="folder of images, NAME.txt next to an image holds its prompt (line 3)")
    p.add_argument("--bind", help="NODE.INPUT that receives each item (default: from the node types)")
    p.add_argument("--bind-text", default=None, help="NODE.INPUT for an image's sidecar prompt ('' for none)")
    p.add_argument("--map", action="append", default=[], metavar="FIELD=NODE.INPUT",
                   help="with --prompts: bind another field of each entry, e.g. seed=KSampler.seed")
    p.add_argument("--collect", default=None, help="node id whose text is the prompt in prompts.json (ideas)")
    p.add_argument("--retry-failed", action="store_true", help="run items that failed before once more")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one item")
    p.add_argument("--server-timeout", type=float, default=60.0,
                   help="seconds a server may stay unreachable before the batch stops (resume later)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("free", help="unload models on the server(s) (between lines)")
    common(p, workflow=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "check": cmd_check, "batch": cmd_batch, "free": cmd_free}[args.command]
    try:
        return handler(args)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
