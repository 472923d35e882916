"""Any agency's upload CSV as its data file describes it: header, delimiter, quoting, encoding/BOM, line end.

Appends are locked and atomic: one `write()` of whole lines, fsynced, under
`<csv>.lock`; an image already in the series gets no second row; a file whose header is another is never touched.
`write_series` writes a fresh series (exports, the upload set) and `validate_csv` checks a written file against the
data file, byte for byte where the format says how bytes must look.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from filelock import FileLock

from rezcty_core.stock.agencies import AI_WORDS, Agency, key_of

LOCK_TIMEOUT_S = 120
BOM = b"\xef\xbb\xbf"


class AgencyCsvError(ValueError):
    """An existing CSV that is not this agency's (other header, cut-off last line): left untouched."""


def _writer(agency: Agency, buf: io.StringIO) -> csv.writer:
    fmt = agency.csv
    quoting = csv.QUOTE_ALL if fmt.get("quoting") == "all" else csv.QUOTE_MINIMAL
    return csv.writer(buf, delimiter=fmt.get("delimiter", ","), quoting=quoting,
                      lineterminator=fmt.get("line_end", "\n"))


def _encoding(agency: Agency) -> str:
    return agency.csv.get("encoding", "utf-8")


def encode_lines(agency: Agency, rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = _writer(agency, buf)
    for row in rows:
        writer.writerow(row)
    return buf.getvalue().encode(_encoding(agency))


def header_bytes(agency: Agency) -> bytes:
    """The first line, with the BOM when the agency wants one."""
    return (BOM if agency.csv.get("bom") else b"") + encode_lines(agency, [agency.headers])


def series_path(csv_path: Path, index: int) -> Path:
    """`adobe_stock.csv`, then `adobe_stock_2.csv`, `adobe_stock_3.csv`, ... (a new file past `csv.rows_per_file`)."""
    csv_path = Path(csv_path)
    return csv_path if index == 1 else csv_path.with_name(f"{csv_path.stem}_{index}{csv_path.suffix}")


def _parse(agency: Agency, data: bytes) -> list[list[str]]:
    text = data.decode(_encoding(agency), errors="replace").lstrip("\ufeff")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=agency.csv.get("delimiter", ",")))


def _read_state(agency: Agency, path: Path) -> tuple[int, set[str]]:
    """(rows, keys) of an existing file after checking its header; (-1, {}) when it does not exist."""
    if not path.exists():
        return -1, set()
    data = path.read_bytes()
    if not data:
        return 0, set()
    rows = _parse(agency, data)
    if [c.strip() for c in rows[0]] != agency.headers:
        first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip("\r\ufeff")
        raise AgencyCsvError(f"{path}: the first line is '{first[:120]}', expected "
                             f"{'Adobe' if agency.key == 'adobe_stock' else agency.name}'s header "
                             f"'{header_bytes(agency).decode(_encoding(agency)).strip().lstrip(chr(0xfeff))}'; "
                             f"choose another csv_name or move the file (it is left untouched)")
    if not data.endswith(agency.csv.get("line_end", "\n").encode()[-1:]):
        raise AgencyCsvError(f"{path}: the last line is incomplete (a write was cut off); fix or move the file")
    body = [r for r in rows[1:] if r]
    return len(body), {key_of(agency, r) for r in body if len(r) == len(agency.headers)}


def check_series(agency: Agency, csv_path: Path) -> int:
    """Rows in the whole series after checking every file's header (AgencyCsvError on a foreign file)."""
    total, index = 0, 1
    while (state := _read_state(agency, series_path(csv_path, index)))[0] >= 0:
        total += state[0]
        index += 1
    return total


def _append(path: Path, payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def append_rows(agency: Agency, csv_path: Path, rows: list[list[str]]) -> list[Path]:
    """Append rows under a lock; a row whose image (file name) is already in the series is skipped; a new file of
    the series starts after `csv.rows_per_file` rows. Returns the files written to."""
    csv_path = Path(csv_path)
    if not rows:
        return []
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    limit = agency.csv.get("rows_per_file") or 0
    written: list[Path] = []
    with FileLock(str(csv_path) + ".lock", timeout=LOCK_TIMEOUT_S):
        seen: set[str] = set()
        index = 1
        while True:
            count, keys = _read_state(agency, series_path(csv_path, index))
            seen |= keys
            if _read_state(agency, series_path(csv_path, index + 1))[0] < 0:
                break
            index += 1
        pending = []
        for row in rows:
            key = key_of(agency, row)
            if key not in seen:
                seen.add(key)
                pending.append(row)
        while pending:
            path = series_path(csv_path, index)
            count = _read_state(agency, path)[0]
            room = (limit - max(count, 0)) if limit else len(pending)
            if room <= 0:
                index += 1
                continue
            batch, pending = pending[:room], pending[room:]
            payload = encode_lines(agency, batch)
            if not path.exists() or path.stat().st_size == 0:  # a file holding only its header gets no second one
                payload = header_bytes(agency) + payload
            _append(path, payload)
            written.append(path)
    return written


def write_series(agency: Agency, csv_path: Path, rows: list[list[str]]) -> list[Path]:
    """A fresh series holding exactly `rows` (header in each file), each file replaced atomically; files of an
    older, longer series beyond the new end are removed."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    limit = agency.csv.get("rows_per_file") or max(1, len(rows))
    chunks = [rows[i:i + limit] for i in range(0, len(rows), limit)] or [[]]
    written = []
    for n, chunk in enumerate(chunks, 1):
        path = series_path(csv_path, n)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(header_bytes(agency) + encode_lines(agency, chunk))
        tmp.replace(path)
        written.append(path)
    n = len(chunks) + 1
    while (stale := series_path(csv_path, n)).exists():
        stale.unlink()
        n += 1
    return written


def read_series(agency: Agency, csv_path: Path) -> list[dict[str, str]]:
    """Every row of the series as {header: cell}."""
    out: list[dict[str, str]] = []
    index = 1
    while (path := series_path(csv_path, index)).exists():
        rows = _parse(agency, path.read_bytes())
        out += [dict(zip(agency.headers, r)) for r in rows[1:] if r]
        index += 1
    return out


def validate_csv(agency: Agency, path: Path) -> list[str]:
    """What in a written CSV breaks the agency's data file: encoding/BOM, header, delimiter, quoting and line ends
    (the file must be byte-identical to its rows re-encoded), columns per row, limits, AI fields, one row per image.
    One line per problem, naming the file and line; [] when the file is right."""
    path = Path(path)
    data = path.read_bytes()
    problems: list[str] = []
    bom = data.startswith(BOM)
    if bom != bool(agency.csv.get("bom")):
        problems.append(f"{path}:1: BOM {'present' if bom else 'missing'}, the data file says bom={agency.csv.get('bom')}")
    try:
        text = data[len(BOM) if bom else 0:].decode(_encoding(agency))
    except UnicodeDecodeError as e:
        return problems + [f"{path}: not {_encoding(agency)} ({e})"]
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=agency.csv.get("delimiter", ",")))
    if not rows or rows[0] != agency.headers:
        problems.append(f"{path}:1: header {rows[0] if rows else None} is not {agency.headers}")
    if encode_lines(agency, rows) != text.encode(_encoding(agency)):
        problems.append(f"{path}: delimiter, quoting or line ends differ from the data file (the file is not its rows "
                        f"written with delimiter {agency.csv.get('delimiter', ',')!r}, quoting "
                        f"{agency.csv.get('quoting', 'minimal')}, line end {agency.csv.get('line_end', chr(10))!r})")
    limits, values = agency.limits, agency.values
    low, high = agency.keyword_range
    fn_rules = agency.data.get("filename") or {}
    keys: set[str] = set()
    for n, row in enumerate(rows[1:], 2):
        where = f"{path}:{n}"
        if len(row) != len(values):
            problems.append(f"{where}: {len(row)} cells, the header has {len(values)}")
            continue
        cell = dict(zip(values, row))
        key = key_of(agency, row)
        if key in keys:
            problems.append(f"{where}: a second row for '{key}'")
        keys.add(key)
        name = cell.get("filename", cell.get("filename_stem", ""))
        if fn_rules.get("ascii") and not name.isascii():
            problems.append(f"{where}: file name '{name}' is not ASCII")
        if fn_rules.get("max_chars") and len(name) > fn_rules["max_chars"]:
            problems.append(f"{where}: file name '{name}' is longer than {fn_rules['max_chars']} characters")
        if "filename_stem" in cell and "." in cell["filename_stem"] and fn_rules.get("extension") is False:
            problems.append(f"{where}: '{name}' must be given without its extension")
        if "title" in cell and (not cell["title"] or len(cell["title"]) > limits.get("title_max", 10 ** 6)):
            problems.append(f"{where}: title of {len(cell['title'])} characters (1-{limits.get('title_max')})")
        if limits.get("title_commas") is False and "," in cell.get("title", ""):
            problems.append(f"{where}: a comma in the title")
        if "description" in cell:
            d = cell["description"]
            if not limits.get("description_min", 1) <= len(d) <= limits.get("description_max", 10 ** 6):
                problems.append(f"{where}: description of {len(d)} characters "
                                f"({limits.get('description_min', 1)}-{limits.get('description_max')})")
            if agency.ai.get("description_note") and not AI_WORDS.search(d):
                problems.append(f"{where}: the description does not say the image is AI-generated")
        if "keywords" in cell:
            sep = agency.csv.get("keyword_separator", ",")
            kws = [k for k in cell["keywords"].split(sep.strip() or sep)]
            if not low <= len(kws) <= high or any(not k.strip() for k in kws):
                problems.append(f"{where}: {len(kws)} keywords ({low}-{high}), none empty")
            if len({k.strip().lower() for k in kws}) != len(kws):
                problems.append(f"{where}: a keyword twice")
            if agency.ai.get("flag_keyword") and kws[0].strip() != agency.ai["flag_keyword"]:
                problems.append(f"{where}: the first keyword is not {agency.ai['flag_keyword']}")
        if "ai_category" in cell and cell["ai_category"] != str(agency.ai.get("category")):
            problems.append(f"{where}: AI category '{cell['ai_category']}', expected {agency.ai.get('category')}")
        if "ai_model" in cell and agency.ai.get("models") and cell["ai_model"] not in agency.ai["models"]:
            problems.append(f"{where}: model '{cell['ai_model']}' is not one of the agency's list")
        if "prompt" in cell and (not cell["prompt"] or len(cell["prompt"]) > limits.get("prompt_max", 10 ** 6)):
            problems.append(f"{where}: prompt of {len(cell['prompt'])} characters (1-{limits.get('prompt_max')})")
        chars = limits.get("drop_characters", "")
        for v, c in cell.items():
            if v in ("title", "description", "keywords", "prompt") and chars and any(ch in c for ch in chars):
                problems.append(f"{where}: {v} holds a character the agency drops ({chars})")
    return problems
