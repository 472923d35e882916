"""Stock agencies as data: one JSON file per agency (`rezcty_core/data/agencies/<agency>.json`, user-editable).

A file says whether the agency accepts AI-generated images and, when it does, its upload CSV (columns and where each
column's value comes from, delimiter, quoting, encoding/BOM, line end), its limits, keyword budget, filename rules,
category map and AI fields, with the sources and the date they were read. User folders (`<ComfyUI user dir>/rezcty/
agencies/`, `$REZCTY_AGENCIES`) come after the built-ins; a user file of the same name is merged onto the built-in,
so `{"csv": {"columns": [...]}}` alone corrects a header.

A column's `value` is one of: `filename`, `filename_stem`, `title`, `description`, `keywords`, `category` (the
Adobe category through `categories.map`), `ai_category`, `prompt` (the cleaned generation prompt), `ai_model`, or
`=TEXT` (that text, `=` alone for an empty cell).
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rezcty_core.common.paths import DATA_DIR
from rezcty_core.stock.keyword_budget import budget_keywords

BUILTIN_DIR = DATA_DIR / "agencies"
ENV_DIRS = "REZCTY_AGENCIES"
DEFAULT_AGENCIES = "adobe_stock"
VALUES = ("filename", "filename_stem", "title", "description", "keywords", "category", "ai_category", "prompt",
          "ai_model")
AI_WORDS = re.compile(r"\bai[- ]generated\b|\bgenerated (?:with|by) (?:an )?ai\b|\bartificial intelligence\b", re.I)


class AgencyError(ValueError):
    """A data file or an agency name that cannot be used (the message names the file or the known agencies)."""


class AgencyRefused(AgencyError):
    """The agency refuses AI-generated content: no CSV is written for it."""


@dataclass(frozen=True)
class Agency:
    key: str
    data: dict
    path: str

    @property
    def name(self) -> str:
        return self.data.get("name") or self.key

    @property
    def accepts_ai(self) -> bool:
        return bool(self.data.get("accepts_ai"))

    @property
    def csv(self) -> dict:
        return self.data.get("csv") or {}

    @property
    def headers(self) -> list[str]:
        return [c["header"] for c in self.csv.get("columns", [])]

    @property
    def values(self) -> list[str]:
        return [c["value"] for c in self.csv.get("columns", [])]

    @property
    def limits(self) -> dict:
        return self.data.get("limits") or {}

    @property
    def ai(self) -> dict:
        return self.data.get("ai") or {}

    @property
    def file_name(self) -> str:
        return self.csv.get("file") or f"{self.key}.csv"

    @property
    def keyword_range(self) -> tuple[int, int]:
        return int(self.limits.get("keywords_min", 1)), int(self.limits.get("keywords_max", 50))

    @property
    def budget(self) -> int:
        return int((self.data.get("keywords") or {}).get("budget") or self.keyword_range[1])

    def source_date(self) -> str:
        dates = [s.get("read", "") for s in self.data.get("sources", []) if s.get("read")]
        return max(dates) if dates else str(self.data.get("checked", "unknown date"))

    def refusal(self) -> str:
        """One line: who refuses, that AI-generated content is refused, the policy and its source's date."""
        src = (self.data.get("sources") or [{}])[0]
        return (f"{self.key}: {self.name} refuses AI-generated content, and every image this pack writes is "
                f"AI-generated, so no CSV is written. Policy: {self.name} {self.data.get('policy', '').rstrip('.')} "
                f"(source: {src.get('url', 'unknown')}, read {self.source_date()}).")


def agency_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    """Built-ins first, then `extra`, then `$REZCTY_AGENCIES` (`os.pathsep`-separated); later folders win."""
    env = [Path(d) for d in os.environ.get(ENV_DIRS, "").split(os.pathsep) if d]
    return [BUILTIN_DIR, *[Path(p) for p in (extra or [])], *env]


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AgencyError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise AgencyError(f"{path}:1: expected a JSON object")
    return data


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def list_agencies(extra: list[str | Path] | None = None) -> list[str]:
    names: list[str] = []
    for folder in agency_dirs(extra):
        if folder.is_dir():
            names += [p.stem for p in sorted(folder.glob("*.json")) if p.stem not in names]
    return names


def _aliases(extra: list[str | Path] | None) -> dict[str, str]:
    table: dict[str, str] = {}
    for folder in agency_dirs(extra):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                for alias in _read(path).get("aliases") or []:
                    table[str(alias).lower()] = path.stem
            except AgencyError:
                continue  # the broken file is reported when that agency itself is loaded
    return table


def normalise_name(name: str) -> str:
    return re.sub(r"[\s\-/]+", "_", str(name).strip().lower())


def load_agency(name: str, extra: list[str | Path] | None = None) -> Agency:
    """The agency's data (built-in merged with user files of the same name), checked."""
    key = normalise_name(name)
    known = list_agencies(extra)
    if key not in known:
        key = _aliases(extra).get(key, key)
    found = [d / f"{key}.json" for d in agency_dirs(extra) if (d / f"{key}.json").is_file()]
    if not found:
        raise AgencyError(f"unknown agency '{name}': known agencies are {', '.join(known)} "
                          f"(data files in {BUILTIN_DIR}; add yours to <ComfyUI user dir>/rezcty/agencies/)")
    data: dict = {}
    for path in found:
        data = _merge(data, _read(path))
    agency = Agency(key, data, str(found[-1]))
    check_agency(agency)
    return agency


def check_agency(agency: Agency) -> None:
    """Fail with the file name when an accepting agency's CSV section cannot be written."""
    where = agency.path
    if not agency.accepts_ai:
        if not agency.data.get("policy"):
            raise AgencyError(f"{where}: an agency that refuses AI content needs a one-line 'policy'")
        return
    cols = agency.csv.get("columns")
    if not cols or not all(isinstance(c, dict) and c.get("header") and "value" in c for c in cols):
        raise AgencyError(f"{where}: csv.columns must be a list of {{\"header\": ..., \"value\": ...}}")
    for c in cols:
        if not (c["value"] in VALUES or str(c["value"]).startswith("=")):
            raise AgencyError(f"{where}: column '{c['header']}': value '{c['value']}' is not one of "
                              f"{', '.join(VALUES)} or '=TEXT'")
    if not any(v in ("filename", "filename_stem") for v in agency.values):
        raise AgencyError(f"{where}: csv.columns needs a column with value 'filename' or 'filename_stem'")
    if len(str(agency.csv.get("delimiter", ","))) != 1:
        raise AgencyError(f"{where}: csv.delimiter must be one character")
    if agency.csv.get("quoting", "minimal") not in ("minimal", "all"):
        raise AgencyError(f"{where}: csv.quoting must be 'minimal' or 'all'")
    low, high = agency.keyword_range
    if not low <= agency.budget <= high:
        raise AgencyError(f"{where}: keywords.budget {agency.budget} is outside the agency's {low}-{high}")


@dataclass(frozen=True)
class Choice:
    agency: Agency
    budget: int


def parse_agencies(text: str | None, extra: list[str | Path] | None = None) -> list[Choice]:
    """`adobe_stock, freepik:40, dreamstime` -> the agencies with their keyword budgets (`:N` overrides the data
    file's). A refusing agency raises AgencyRefused (its one-line refusal), an unknown one AgencyError."""
    out: list[Choice] = []
    for part in [p.strip() for p in str(text or DEFAULT_AGENCIES).split(",") if p.strip()] or [DEFAULT_AGENCIES]:
        name, _, budget = part.partition(":")
        agency = load_agency(name, extra)
        if not agency.accepts_ai:
            raise AgencyRefused(agency.refusal())
        n = agency.budget
        if budget.strip():
            low, high = agency.keyword_range
            if not budget.strip().isdigit() or not low <= int(budget) <= high:
                raise AgencyError(f"agencies: '{part}': the keyword budget must be a whole number from {low} to "
                                  f"{high} for {agency.key}")
            n = int(budget)
        if all(c.agency.key != agency.key for c in out):
            out.append(Choice(agency, n))
    return out


# --- one row -----------------------------------------------------------------------------------

def clip(text: str, limit: int | None) -> str:
    """One line, at most `limit` characters, cut at a word."""
    text = re.sub(r"\s+", " ", str(text or "")).strip()
    if not limit or len(text) <= limit:
        return text
    cut = text[:limit + 1]
    cut = cut.rsplit(" ", 1)[0] if " " in cut else text[:limit]
    return cut[:limit].rstrip(" ,;:-")


def _drop(text: str, chars: str) -> str:
    return re.sub(r"\s+", " ", text.translate({ord(c): " " for c in chars})).strip() if chars else text


def row_keywords(agency: Agency, keywords: list[str], budget: int | None = None) -> list[str]:
    """The agency's keyword list: the budget (see keyword_budget), its characters, its flag keyword first."""
    chars = agency.limits.get("drop_characters", "")
    max_bytes = agency.limits.get("keyword_max_bytes")
    flag = agency.ai.get("flag_keyword")
    room = (budget or agency.budget) - (1 if flag else 0)
    cleaned: list[str] = []
    for k in keywords:
        k = _drop(re.sub(r"\s*,\s*", " ", str(k)), chars).strip()
        if k and (not max_bytes or len(k.encode()) <= max_bytes) and k.lower() not in (c.lower() for c in cleaned):
            cleaned.append(k)
    kept = budget_keywords(cleaned, room)
    return ([flag] if flag else []) + kept


def description_for(agency: Agency, description: str, title: str, keywords: list[str]) -> str:
    """The description within the agency's limits; its AI sentence first where the agency asks for one."""
    limits = agency.limits
    text = _drop(description or title, limits.get("drop_characters", ""))
    note = agency.ai.get("description_note")
    if note and not AI_WORDS.search(text):
        text = f"{note} {text}"
    low = int(limits.get("description_min") or 0)
    extra = [title] + keywords
    while len(text) < low and extra:  # too short for the agency: say more with the title, then the keywords
        piece = extra.pop(0)
        if piece.lower() not in text.lower():
            text = f"{text.rstrip('.')}, {piece}" if text else piece
    return clip(text, limits.get("description_max"))


def render_row(agency: Agency, record: dict, budget: int | None = None) -> list[str]:
    """One CSV row (cells as text) for an image's record (a sidecar: filename, title, description, keywords or
    keyword_pool, category, prompt_clean)."""
    limits = agency.limits
    filename = str(record["filename"])
    title = _drop(str(record.get("title") or ""), limits.get("drop_characters", ""))
    if limits.get("title_commas") is False:
        title = re.sub(r"\s+", " ", title.replace(",", " "))
    title = clip(title, limits.get("title_max"))
    pool = list(record.get("keyword_pool") or record.get("keywords") or [])
    keywords = row_keywords(agency, pool, budget)
    sep = agency.csv.get("keyword_separator", ",")
    cats = agency.data.get("categories") or {}
    cells: list[str] = []
    for value in agency.values:
        if value.startswith("="):
            cell = value[1:]
        elif value == "filename":
            cell = filename
        elif value == "filename_stem":
            cell = Path(filename).stem
        elif value == "title":
            cell = title
        elif value == "description":
            cell = description_for(agency, str(record.get("description") or ""), title, keywords)
        elif value == "keywords":
            cell = sep.join(keywords)
        elif value == "category":
            cell = str((cats.get("map") or {}).get(str(record.get("category")), cats.get("default", "")))
        elif value == "ai_category":
            cell = str(agency.ai.get("category") or "")
        elif value == "prompt":
            prompt = record.get("prompt_clean") or title  # never the raw prompt: triggers, artists, weights
            cell = clip(_drop(str(prompt), limits.get("drop_characters", "")), limits.get("prompt_max"))
        else:  # ai_model
            cell = str(agency.ai.get("model") or "")
        cells.append(re.sub(r"[\r\n\t]+", " ", cell).strip())
    return cells


def key_of(agency: Agency, cells: list[str]) -> str:
    """The cell that names the image (its file name, or its stem): a CSV has one row per key."""
    index = next(i for i, v in enumerate(agency.values) if v in ("filename", "filename_stem"))
    return cells[index]


def image_key(agency: Agency, filename: str) -> str:
    return Path(filename).stem if "filename" not in agency.values else filename


def describe(agency: Agency) -> dict[str, Any]:
    """A short summary (for docs and the CLI)."""
    return {"agency": agency.key, "name": agency.name, "accepts_ai": agency.accepts_ai, "file": agency.file_name,
            "header": agency.csv.get("delimiter", ",").join(agency.headers) if agency.accepts_ai else None,
            "budget": agency.budget if agency.accepts_ai else None}
