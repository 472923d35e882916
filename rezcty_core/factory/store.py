"""The shared file store of a queued batch: input files go to the workers, output files come back.

A store is a folder every machine sees (a mounted Google Drive, a network share) or any fsspec URL
(`s3://bucket/rezcty`, `gs://…`, `memory://` in a test). Hosted Redis tiers hold a few MB, so a 4 MP PNG
travels here and the queue only carries its name; a file up to `inline_max` bytes may travel inside the
message or the result instead (base64 in the JSON), with no store involved.

Layout: `inputs/SHA16_NAME` (content-addressed: the same image is stored once however many batches use it),
`outputs/BATCH/KEY/ATTEMPT/NAME` (one folder per run of an item, removed once the client has collected it).
"""
from __future__ import annotations

import base64
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from rezcty_core.common.hashing import file_sha256
from rezcty_core.factory.errors import ClientError

INLINE_MAX = 256 * 1024  # bytes: files up to this size ride in the message / result (hosted Redis tiers are small)


class StoreError(ClientError):
    """The store cannot be read or written from this machine; the message names it and says what to do."""


def _safe_name(name: str) -> str:
    keep = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)
    return keep[-80:] or "file"


class Store:
    """One store URL (a folder or an fsspec URL) with the few operations a batch needs."""

    def __init__(self, url: str | Path):
        import fsspec

        self.url = str(url)
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as e:  # an fsspec protocol whose package is not installed, a bad URL
            raise StoreError(f"store {self.url}: cannot be opened ({e})") from None
        self.root = root.rstrip("/")
        self.local = getattr(self.fs, "protocol", None) in ("file", "local", ("file", "local"))

    def path(self, ref: str) -> str:
        return f"{self.root}/{ref}"

    def put_file(self, local: Path, ref: str) -> None:
        """Copy a local file to `ref`, whole or not at all (a reader never sees half a file)."""
        dest = self.path(ref)
        try:
            self.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            if self.local:
                tmp = f"{dest}.part{os.getpid()}"
                self.fs.put_file(str(local), tmp)
                os.replace(tmp, dest)
            else:  # object stores write a whole object at once
                self.fs.put_file(str(local), dest)
        except OSError as e:
            raise StoreError(f"store {self.url}: cannot write {ref} ({e})") from None

    def get_file(self, ref: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + f".part{os.getpid()}")
        try:
            self.fs.get_file(self.path(ref), str(tmp))
            os.replace(tmp, local)
        except (OSError, FileNotFoundError) as e:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"store {self.url}: cannot read {ref} ({e}); does this machine see the same store? "
                             f"give the worker --store with its own path or URL of it") from None

    def size(self, ref: str) -> int | None:
        try:
            return int(self.fs.size(self.path(ref)))
        except (OSError, FileNotFoundError):
            return None

    def remove_tree(self, ref: str) -> None:
        try:
            if self.fs.exists(self.path(ref)):
                self.fs.rm(self.path(ref), recursive=True)
        except OSError:
            pass  # a leftover folder costs space, never a wrong result

    # -- what a batch sends ----------------------------------------------------------------
    def send_input(self, path: Path, inline_max: int = INLINE_MAX) -> dict:
        """Describe a local input file for a worker: inline when small, else stored once by content."""
        digest = file_sha256(path)
        size = path.stat().st_size
        spec: dict[str, Any] = {"name": _safe_name(path.name), "sha256": digest, "size": size, "from": str(path)}
        if size <= inline_max:
            spec["data"] = base64.b64encode(path.read_bytes()).decode("ascii")
            return spec
        ref = f"inputs/{digest[:16]}_{spec['name']}"
        if self.size(ref) != size:
            self.put_file(path, ref)
        spec["ref"] = ref
        return spec


def fetch_input(spec: dict, store: Store | None, cache_dir: Path | None = None) -> Path:
    """A worker's local copy of an input described by `Store.send_input` (cached by content)."""
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "rezcty-inputs"
    local = cache_dir / f"{spec['sha256'][:16]}_{_safe_name(spec['name'])}"
    if local.is_file() and local.stat().st_size == spec["size"]:
        return local
    if "data" in spec:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + f".part{os.getpid()}")
        tmp.write_bytes(base64.b64decode(spec["data"]))
        os.replace(tmp, local)
    elif store is None:
        raise StoreError(f"input {spec['name']} is in a store and this worker has none")
    else:
        store.get_file(spec["ref"], local)
    if file_sha256(local) != spec["sha256"]:
        local.unlink(missing_ok=True)
        raise StoreError(f"input {spec['name']} arrived damaged (SHA-256 differs); the item goes back to the queue")
    return local


def send_output(path: Path, store: Store | None, ref: str, inline_max: int = INLINE_MAX) -> dict:
    """Describe an output file for the client: inline when small or when there is no store, else stored."""
    data_size = path.stat().st_size
    spec: dict[str, Any] = {"name": path.name, "sha256": file_sha256(path), "size": data_size}
    if data_size <= inline_max or store is None:
        spec["data"] = base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        store.put_file(path, ref)
        spec["ref"] = ref
    return spec


def receive_output(spec: dict, store: Store | None, dest: Path) -> str:
    """Write an output described by `send_output` to `dest` (whole or not at all); return where it came from."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    if "data" in spec:
        tmp.write_bytes(base64.b64decode(spec["data"]))
        via = "result"
    elif store is None:
        raise StoreError(f"output {spec['name']} is in a store and this batch has none")
    else:
        store.get_file(spec["ref"], tmp)
        via = f"store:{spec['ref']}"
    if file_sha256(tmp) != spec["sha256"]:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"output {spec['name']} arrived damaged (SHA-256 differs)")
    os.replace(tmp, dest)
    return via
