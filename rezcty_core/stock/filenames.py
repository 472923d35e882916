"""File names and paths of everything the Metadata Writer creates.

User-given names are reduced to safe relative paths inside the output folder; stock file names are ASCII,
at most 30 characters (Adobe's limit, the strictest of the agencies) and never given twice under one output folder.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

MAX_FILENAME = 30


def ascii_slug(text: str, keep: str = "-") -> str:
    """ASCII letters, digits and `keep` characters; accents folded, everything else becomes '-'."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(rf"[^A-Za-z0-9{re.escape(keep)}]+", "-", folded)
    return re.sub(r"-{2,}", "-", slug).strip("-._")


def safe_relative(value: str, default_name: str = "") -> tuple[list[str], str, bool]:
    """Split a user path (`stock/batch1/sunset`) into safe sub-folders and a last name.

    `..`, absolute roots, drive letters and odd characters are dropped, so the result always
    stays inside the folder it is joined to. Returns (folders, name, changed).
    """
    raw = str(value or "").replace("\\", "/")
    parts = [p for p in raw.split("/")]
    safe: list[str] = []
    for part in parts:
        if part in ("", ".", "..") or re.fullmatch(r"[A-Za-z]:", part):
            continue
        slug = ascii_slug(part, keep="-_.")
        if slug and slug not in (".", ".."):
            safe.append(slug)
    name = default_name
    if safe and not raw.endswith("/"):
        name = safe.pop()
    rebuilt = "/".join(safe + ([name] if name else []))
    changed = bool(raw.strip()) and rebuilt != raw.strip().strip("/")
    return safe, name, changed


def inside(root: Path, path: Path) -> Path:
    """`path` resolved, or ValueError when it would leave `root` (also through symlinks)."""
    root_r = root.resolve()
    resolved = path.resolve()
    if resolved != root_r and root_r not in resolved.parents:
        raise ValueError(f"refusing to write '{path}': it is outside the output folder '{root_r}'")
    return resolved


CLAIMS_DIR = ".rezcty_names"  # under the output folder: one empty file per name ever given, created O_EXCL
CLAIM_SUFFIX = ".claim"  # `name.jpg.claim`: a glob for *.jpg never mistakes a claim for an image


def _short(stem: str, digits: str, ext: str) -> str:
    room = MAX_FILENAME - len(ext) - 1 - len(digits)
    if room < 1:
        raise ValueError(f"no free file name left for '{stem}'")
    short = stem[:room]
    if len(stem) > room and "-" in short and len(short.rsplit("-", 1)[0]) >= room // 2:
        short = short.rsplit("-", 1)[0]  # end at a word
    return short.rstrip("-_.") or "image"


def _numbers(folder: Path, short: str, ext: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(short)}_(\d+){re.escape(ext)}$")
    try:
        return [int(m.group(1)) for entry in os.scandir(folder) if (m := pattern.match(entry.name))]
    except OSError:  # a folder that does not exist (yet) holds no name
        return []


def reserve_filename(folder: Path, stem: str, ext: str = ".jpg", claims: Path | None = None,
                     also: tuple[Path, ...] | list[Path] = ()) -> Path:
    """Create (empty, exclusively) and return `folder/<stem>_<n><ext>`, ASCII and <= 30 characters.

    With `claims` (a folder), the name is first claimed there with an O_EXCL create, so it is unique across every
    folder that shares the claims folder (verdict folders, runs, servers writing to one output folder) and never
    given twice, even after the image was moved or deleted. `also` lists folders whose existing names (written
    before claims existed) are skipped too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = ascii_slug(stem).lower() or "image"
    shorts = {_short(stem, "0" * width, ext) for width in (4, 5, 6)}
    used = [n for short in shorts for d in (folder, *also) for n in _numbers(d, short, ext)]
    if claims is not None:
        used += [n for short in shorts for n in _numbers(claims / short, short, ext + CLAIM_SUFFIX)]
    counter = 1 + max(used, default=0)
    while True:
        digits = f"{counter:04d}"
        short = _short(stem, digits, ext)
        name = f"{short}_{digits}{ext}"
        if claims is not None:
            (claims / short).mkdir(parents=True, exist_ok=True)
            try:
                os.close(os.open(claims / short / (name + CLAIM_SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:  # another writer (this process, another prompt, another server) has it
                counter += 1
                continue
        path = folder / name
        try:
            with open(path, "xb"):
                return path
        except FileExistsError:
            counter += 1
