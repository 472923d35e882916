"""Adobe Stock's upload CSV and file names: exact header, locked atomic appends, 5,000-row files.

Also the path rules for everything the Metadata Writer creates: user-given names are reduced to
safe relative paths inside the output folder, and stock file names are ASCII and <= 30 characters.
"""
from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

HEADER = ["Filename", "Title", "Keywords", "Category", "Releases"]
HEADER_LINE = ",".join(HEADER)
MAX_ROWS = 5000
MAX_FILENAME = 30
LOCK_TIMEOUT_S = 120


class CsvHeaderError(ValueError):
    """An existing CSV has another header: it is never overwritten."""


@dataclass(frozen=True)
class StockRow:
    filename: str
    title: str
    keywords: list[str]
    category: int
    releases: str = ""

    def cells(self) -> list[str]:
        # Adobe splits Keywords at commas and wants none in the title: a stray comma becomes a space.
        keywords = [re.sub(r"\s*,\s*", " ", _one_line(k)).strip() for k in self.keywords]
        title = re.sub(r"\s+", " ", _one_line(self.title).replace(",", " "))
        return [_one_line(self.filename), title, ", ".join(k for k in keywords if k), str(int(self.category)),
                _one_line(self.releases)]


def _one_line(text: str) -> str:
    return re.sub(r"[\r\n\t]+", " ", str(text)).strip()


# --- safe names ------------------------------------------------------------------------------

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
        used += [n for short in shorts for n in _numbers(claims / short, short, ext)]
    counter = 1 + max(used, default=0)
    while True:
        digits = f"{counter:04d}"
        short = _short(stem, digits, ext)
        name = f"{short}_{digits}{ext}"
        if claims is not None:
            (claims / short).mkdir(parents=True, exist_ok=True)
            try:
                os.close(os.open(claims / short / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:  # another writer (this process, another prompt, another server) has it
                counter += 1
                continue
        path = folder / name
        try:
            with open(path, "xb"):
                return path
        except FileExistsError:
            counter += 1


# --- the CSV ---------------------------------------------------------------------------------

def series_path(csv_path: Path, index: int) -> Path:
    """`adobe_stock.csv`, then `adobe_stock_2.csv`, `adobe_stock_3.csv`, ... (a new file per 5,000 rows)."""
    return csv_path if index == 1 else csv_path.with_name(f"{csv_path.stem}_{index}{csv_path.suffix}")


def _read_state(path: Path) -> int:
    """Rows in an existing CSV after checking its header; -1 when the file does not exist."""
    if not path.exists():
        return -1
    data = path.read_bytes()
    if not data:
        return 0
    first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
    if [c.strip() for c in next(csv.reader([first]), [])] != HEADER:
        raise CsvHeaderError(f"{path}: the first line is '{first[:120]}', expected Adobe's header "
                             f"'{HEADER_LINE}'; choose another csv_name (this file is left untouched)")
    if not data.endswith(b"\n"):
        raise CsvHeaderError(f"{path}: the last line is incomplete (a write was cut off); fix or move the file")
    return data.count(b"\n") - 1


def check_series(csv_path: Path) -> int:
    """Total rows of a CSV series after checking every file's header (CsvHeaderError on a foreign file)."""
    total, index = 0, 1
    while (count := _read_state(series_path(Path(csv_path), index))) >= 0:
        total += count
        index += 1
    return total


def encode_rows(rows: list[StockRow]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    for row in rows:
        writer.writerow(row.cells())
    return buf.getvalue().encode("utf-8")


def append_rows(csv_path: Path, rows: list[StockRow], max_rows: int = MAX_ROWS) -> list[Path]:
    """Append rows under a lock (no row lost with parallel writers), starting a new file after `max_rows`.

    Each file gets the header first; each write is one `write()` of whole lines, flushed and
    fsynced. Returns the files written to.
    """
    if not rows:
        return []
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with FileLock(str(csv_path) + ".lock", timeout=LOCK_TIMEOUT_S):
        index = 1
        while _read_state(series_path(csv_path, index + 1)) >= 0:
            index += 1  # skip to the newest file of the series
        pending = list(rows)
        while pending:
            path = series_path(csv_path, index)
            count = _read_state(path)
            room = max_rows - max(count, 0)
            if room <= 0:
                index += 1
                continue
            batch, pending = pending[:room], pending[room:]
            payload = encode_rows(batch)
            if not path.exists() or path.stat().st_size == 0:
                payload = (HEADER_LINE + "\n").encode() + payload
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            written.append(path)
    return written


def read_rows(csv_path: Path) -> list[dict]:
    """All rows of one CSV as dicts (for checks and tests)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))
