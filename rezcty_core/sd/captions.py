"""Caption rules for the "two teachers" training: the caption says *what* is in the image, the pixels
carry the style, and the trigger word ends every caption exactly once.

One function per rule; `check_caption` runs them all, `fix_caption` repairs what can be repaired
mechanically (listed words removed, other triggers removed, the trigger moved/added to the end) and
says what it changed. The word lists (English + Indonesian) live in `data/caption_words.json`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rezcty_core.common.paths import DATA_DIR

WORDS_FILE = DATA_DIR / "caption_words.json"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
CLIP_CONTENT_TOKENS = 75  # 77 minus the start and end tokens
KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")

# rule ids (the linter prints these)
EMPTY = "empty"
STYLE_WORD = "style_word"
BY_NAME = "artist_reference"
TRIGGER_MISSING = "trigger_missing"
TRIGGER_NOT_LAST = "trigger_not_last"
TRIGGER_REPEATED = "trigger_repeated"
OTHER_TRIGGER = "other_trigger"
TOO_LONG = "too_long"
MISSING_CAPTION = "missing_caption"
UNREADABLE = "unreadable"
FIXABLE = {STYLE_WORD, BY_NAME, TRIGGER_MISSING, TRIGGER_NOT_LAST, TRIGGER_REPEATED, OTHER_TRIGGER}


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.rule} ({self.detail})" if self.detail else self.rule


@dataclass
class WordLists:
    words: list[str]  # style, quality and emotion words/phrases, EN + ID
    by_name: list[str]  # "art by", "in the style of", ... (removed with the name after them)
    triggers: list[str]  # known trigger words of all sets


@dataclass
class FileReport:
    path: Path
    violations: list[Violation] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    fixed_text: str | None = None


@lru_cache(maxsize=4)
def _load_words(path: str) -> WordLists:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the caption word list ({e})") from None
    words, by_name = [], []
    for lang, groups in data.items():
        if lang.startswith("_") or not isinstance(groups, dict):
            continue
        for group, items in groups.items():
            (by_name if group == "by_name" else words).extend(str(w).lower() for w in items)
    return WordLists(words=sorted(set(words), key=len, reverse=True),
                     by_name=sorted(set(by_name), key=len, reverse=True),
                     triggers=[str(t) for t in data.get("triggers", [])])


def load_word_lists(path: str | Path = WORDS_FILE) -> WordLists:
    """The editable style/quality/emotion word lists (English + Indonesian)."""
    return _load_words(str(path))


def _phrase_pattern(phrase: str) -> str:
    body = r"[\s-]+".join(re.escape(p) for p in re.split(r"[\s-]+", phrase.strip()))
    return rf"(?<![\w-]){body}(?![\w-])"


def _word_regex(word: str) -> re.Pattern:
    return re.compile(rf"(?<![\w]){re.escape(word)}(?![\w])", re.IGNORECASE)


# ---- one function per rule ------------------------------------------------------------------

def rule_empty(text: str, triggers: list[str] = ()) -> list[Violation]:
    if not text.strip():
        return [Violation(EMPTY)]
    rest = text
    for t in triggers:
        rest = _word_regex(t).sub(" ", rest)
    return [Violation(EMPTY, "nothing but trigger words")] if not re.search(r"\w", rest) else []


def rule_style_words(text: str, lists: WordLists) -> list[Violation]:
    found, seen = [], text
    for w in lists.words:  # longest first, so "oil painting" is reported once, not as "painting" too
        if re.search(_phrase_pattern(w), seen, re.IGNORECASE):
            found.append(w)
            seen = re.sub(_phrase_pattern(w), " ", seen, flags=re.IGNORECASE)
    return [Violation(STYLE_WORD, ", ".join(repr(w) for w in found))] if found else []


def rule_by_name(text: str, lists: WordLists) -> list[Violation]:
    found = [p for p in lists.by_name if re.search(_phrase_pattern(p), text, re.IGNORECASE)]
    return [Violation(BY_NAME, ", ".join(repr(p) for p in found[:1]))] if found else []


def rule_trigger(text: str, trigger: str | None) -> list[Violation]:
    if not trigger or not text.strip():
        return []
    n = len(_word_regex(trigger).findall(text))
    if n == 0:
        return [Violation(TRIGGER_MISSING, f"must end with {trigger!r}")]
    out = []
    if n > 1:
        out.append(Violation(TRIGGER_REPEATED, f"{trigger!r} appears {n} times"))
    if not re.search(rf"(?<![\w]){re.escape(trigger)}[\s.,;]*$", text, re.IGNORECASE):
        out.append(Violation(TRIGGER_NOT_LAST, f"{trigger!r} must be the last word"))
    return out


def rule_other_triggers(text: str, trigger: str | None, others: list[str]) -> list[Violation]:
    found = [t for t in others if t != trigger and _word_regex(t).search(text)]
    return [Violation(OTHER_TRIGGER, ", ".join(repr(t) for t in found))] if found else []


def rule_length(text: str) -> list[Violation]:
    from rezcty_core.sd.clip_tokens import count_clip_tokens

    n = count_clip_tokens(text)
    return [Violation(TOO_LONG, f"{n} CLIP tokens, at most {CLIP_CONTENT_TOKENS}")] if n > CLIP_CONTENT_TOKENS else []


def check_caption(text: str, trigger: str | None = None, other_triggers: list[str] | None = None,
                  lists: WordLists | None = None) -> list[Violation]:
    """Every rule the caption breaks (empty list: clean)."""
    lists = lists or load_word_lists()
    others = lists.triggers if other_triggers is None else other_triggers
    if empty := rule_empty(text, [t for t in [trigger, *others] if t]):
        return empty
    return (rule_style_words(text, lists) + rule_by_name(text, lists) + rule_trigger(text, trigger)
            + rule_other_triggers(text, trigger, others) + rule_length(text))


CONNECTORS = r"(?:and|or|with|but|yang|dan|atau|dengan|serta|nan)"
ARTICLES = r"(?:a|an|the|sebuah|seekor|seorang)"


def _tidy(text: str) -> str:
    """Collapse the holes removals leave: repeated spaces/commas, dangling articles and connectors."""
    text = re.sub(rf"\b({ARTICLES})\s+(?:{CONNECTORS}\s+|,\s*)+", r"\1 ", text, flags=re.IGNORECASE)
    parts = []
    carry = ""
    for raw in text.split(","):
        part = re.sub(r"\s+", " ", raw).strip(" .;:-")
        while True:  # connectors left hanging at either end of a segment
            new = re.sub(rf"^{CONNECTORS}\b\s*|\s*\b{CONNECTORS}$", "", part, flags=re.IGNORECASE).strip()
            if new == part:
                break
            part = new
        part = f"{carry} {part}".strip() if carry else part
        carry = ""
        if re.fullmatch(ARTICLES, part, flags=re.IGNORECASE):
            carry = part  # "a, castle" -> "a castle"
            continue
        if part:
            parts.append(part)
    if carry:
        parts.append(carry)
    return ", ".join(parts)


def fix_caption(text: str, trigger: str | None = None, other_triggers: list[str] | None = None,
                lists: WordLists | None = None) -> tuple[str, list[str]]:
    """(repaired caption, list of changes). Leaves what cannot be fixed mechanically (empty, too long)."""
    lists = lists or load_word_lists()
    others = lists.triggers if other_triggers is None else other_triggers
    changes: list[str] = []
    out = " ".join(text.split())
    for phrase in lists.by_name:  # "art by Some Name" -> removed up to the next comma
        pat = re.compile(_phrase_pattern(phrase) + r"[^,]*", re.IGNORECASE)
        for m in pat.findall(out):
            changes.append(f"removed {m.strip()!r}")
        out = pat.sub(" ", out)
    for w in lists.words:
        pat = re.compile(_phrase_pattern(w), re.IGNORECASE)
        for m in pat.findall(out):
            changes.append(f"removed {m!r}")
        out = pat.sub(" ", out)
    for t in others:
        if t != trigger and _word_regex(t).search(out):
            changes.append(f"removed other trigger {t!r}")
            out = _word_regex(t).sub(" ", out)
    out = _tidy(out)
    if not re.search(r"\w", out):
        return text, []  # nothing but style words: a person must describe the content
    if trigger and out:
        body = _tidy(_word_regex(trigger).sub(" ", out))
        fixed = f"{body}, {trigger}" if body else trigger
        if fixed != out:
            n = len(_word_regex(trigger).findall(out))
            changes.append("added trigger at the end" if n == 0 else "moved trigger to the end (once)")
        out = fixed
    if not changes and out == _tidy(text):
        return text, []
    return out, changes


# ---- folders ----------------------------------------------------------------------------------

def folder_trigger(folder: Path) -> str | None:
    """kohya `N_name` folder -> `name` (the set's trigger word when none is given)."""
    m = KOHYA_FOLDER.match(folder.name)
    return m.group(2) if m else None


def caption_files(root: Path, ext: str = ".txt") -> tuple[list[Path], list[Path]]:
    """(caption files, images without a caption) under `root`, skipping hidden folders (caches)."""
    captions, orphans = [], []
    for p in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(root).parts) or not p.is_file():
            continue
        if p.suffix.lower() == ext:
            captions.append(p)
        elif p.suffix.lower() in IMAGE_EXTS and not p.with_suffix(ext).exists():
            orphans.append(p)
    return captions, orphans


def read_caption(path: Path) -> str:
    """Caption text (UTF-8, a BOM tolerated, lines joined); raises ValueError naming the file."""
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return " ".join(raw.split())


def lint_folder(root: str | Path, trigger: str | None = None, fix: bool = False, ext: str = ".txt",
                lists: WordLists | None = None) -> list[FileReport]:
    """Check (and with `fix`, repair in place) every caption under `root`; one report per offending file.

    The trigger of a caption is `trigger` if given, else its kohya folder's name (`10_rezcty_style`).
    The other sets' triggers are the known ones from the word list plus the sibling kohya folder names.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: caption folder not found")
    lists = lists or load_word_lists()
    captions, orphans = caption_files(root, ext)
    known = set(lists.triggers) | {t for p in captions if (t := folder_trigger(p.parent))}
    reports = [FileReport(p, [Violation(MISSING_CAPTION, f"no {ext} next to the image")]) for p in orphans]
    for path in captions:
        own = trigger or folder_trigger(path.parent)
        others = sorted(known - {own})
        try:
            text = read_caption(path)
        except ValueError as e:
            reports.append(FileReport(path, [Violation(UNREADABLE, str(e).split(": ", 1)[-1])]))
            continue
        violations = check_caption(text, own, others, lists)
        if not violations:
            continue
        report = FileReport(path, violations)
        if fix and any(v.rule in FIXABLE for v in violations):
            new, changes = fix_caption(text, own, others, lists)
            if changes:
                path.write_text(new + "\n", encoding="utf-8")
                report.changes, report.fixed_text = changes, new
                report.violations = check_caption(new, own, others, lists)
        reports.append(report)
    return sorted(reports, key=lambda r: str(r.path))
