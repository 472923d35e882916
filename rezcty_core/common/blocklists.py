"""Blocklists: terms that must never reach an Adobe Stock title, description or keyword.

The lists are plain text files under `rezcty_core/data/blocklists/` (one term per line, `#`
comments); the file name is the category (`brands.txt` -> "brands"). Users extend them with
folders named in `REZCTY_BLOCKLIST_DIR` (`:`-separated) holding files of the same format;
`allow.txt` lists exceptions. See `data/blocklists/README.md` and `docs/metadata.md`.
"""
from __future__ import annotations

import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rezcty_core.common.paths import DATA_DIR

BLOCKLIST_DIR = DATA_DIR / "blocklists"
ENV_DIRS = "REZCTY_BLOCKLIST_DIR"
ALLOW_FILE = "allow"

# Categories whose names usually follow "by", "of", "style of": removed together with that lead-in.
PERSON_CATEGORIES = ("artists", "real_people", "fictional_characters")
_PERSON_LEAD = (r"(?:(?:in\s+the\s+style\s+of|in\s+style\s+of|style\s+of|inspired\s+by|(?:art|artwork|painting|painted|"
                r"drawn|illustrated|photo|photographed|made|designed|created)\s+by|by|of|from|like|as)\s+)?")
_WORD = r"[\w\-]"


def normalize(text: str) -> str:
    """Lower case, NFKC, typographic quotes and dashes made plain: the form every match runs on."""
    text = unicodedata.normalize("NFKC", text).lower()
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2013", "-").replace("\u2014", "-")


def _term_pattern(term: str) -> str:
    """Regex for one list term: whole words, any spacing/hyphen between words, `*` as a word wildcard."""
    parts = []
    for word in re.split(r"[\s\-]+", normalize(term).strip()):
        if not word:
            continue
        parts.append(f"{_WORD}*".join(re.escape(piece) for piece in word.split("*")))
    return r"[\s\-]*".join(parts)


def read_terms(path: Path) -> list[str]:
    """Terms of one list file; comments and blank lines skipped."""
    terms = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            terms.append(line)
    return terms


@dataclass(frozen=True)
class Hit:
    term: str
    category: str
    start: int
    end: int


class Blocklist:
    """Compiled blocklists: find, test and remove blocked terms in a text."""

    def __init__(self, lists: dict[str, list[str]], allow: list[str] | None = None):
        self.lists = {cat: sorted(set(terms), key=len, reverse=True) for cat, terms in lists.items()}
        self.allow = [normalize(a) for a in (allow or [])]
        self._patterns: dict[str, re.Pattern] = {}
        for cat, terms in self.lists.items():
            if not terms:
                continue
            body = "|".join(_term_pattern(t) for t in terms if _term_pattern(t))
            lead = _PERSON_LEAD if cat in PERSON_CATEGORIES else ""
            self._patterns[cat] = re.compile(rf"(?<![\w]){lead}(?:{body})(?:'s)?(?![\w])")
        self._allow_re = (re.compile(r"(?<![\w])(?:" + "|".join(_term_pattern(a) for a in self.allow) + r")(?![\w])")
                          if self.allow else None)

    @property
    def categories(self) -> list[str]:
        return sorted(self.lists)

    def find(self, text: str) -> list[Hit]:
        """Every blocked term in `text` (positions refer to `normalize(text)`), allow-list applied."""
        norm = normalize(text)
        allowed = [m.span() for m in self._allow_re.finditer(norm)] if self._allow_re else []
        hits: list[Hit] = []
        for cat, pattern in self._patterns.items():
            for m in pattern.finditer(norm):
                if any(a <= m.start() and m.end() <= b for a, b in allowed):
                    continue
                hits.append(Hit(m.group(0).strip(), cat, m.start(), m.end()))
        return sorted(hits, key=lambda h: (h.start, -h.end))

    def is_blocked(self, text: str) -> bool:
        return bool(self.find(text))

    def remove(self, text: str, categories: tuple[str, ...] | None = None) -> tuple[str, list[Hit]]:
        """`text` with blocked terms cut out (case kept where normalising keeps lengths), and the hits cut."""
        norm = normalize(text)
        hits = [h for h in self.find(norm) if categories is None or h.category in categories]
        if len(norm) == len(text):
            norm = text  # same offsets: cut from the original so proper nouns keep their capitals
        out, last, kept = [], 0, []
        for h in hits:
            if h.start < last:
                continue  # overlaps a longer hit already removed
            out.append(norm[last:h.start])
            out.append(" ")
            last = h.end
            kept.append(h)
        out.append(norm[last:])
        return re.sub(r"[ \t]+", " ", "".join(out)), kept


def _user_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p.strip()]


def _sources() -> list[Path]:
    files = sorted(BLOCKLIST_DIR.glob("*.txt"))
    for folder in _user_dirs():
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.txt")))
    return files


_CACHE: dict[tuple, Blocklist] = {}
_LOCK = threading.Lock()


def load_blocklist(extra_terms: dict[str, list[str]] | None = None) -> Blocklist:
    """The shipped lists plus the user's (`REZCTY_BLOCKLIST_DIR`) plus `extra_terms`; cached by file mtimes."""
    files = _sources()
    key = (tuple((str(p), p.stat().st_mtime_ns) for p in files),
           tuple(sorted((k, tuple(v)) for k, v in (extra_terms or {}).items())))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        lists: dict[str, list[str]] = {}
        allow: list[str] = []
        for path in files:
            terms = read_terms(path)
            if path.stem == ALLOW_FILE:
                allow.extend(terms)
            else:
                lists.setdefault(path.stem, []).extend(terms)
        for cat, terms in (extra_terms or {}).items():
            lists.setdefault(cat, []).extend(t for t in terms if t.strip())
        _CACHE.clear()
        _CACHE[key] = Blocklist(lists, allow)
        return _CACHE[key]
