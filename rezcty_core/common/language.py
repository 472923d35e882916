"""Indonesian -> English, word by word, for the Whisperer's ideas and the Metadata Writer's text.

The user writes in Indonesian as often as in English. One editable glossary (`data/metadata/id_en.txt`,
`source = target` lines) and one stopword list (`data/metadata/stopwords_id.txt`) serve both callers:

* `detect_language(text)`: 'id' when Indonesian function or glossary words outnumber English stopwords.
* `translate_indonesian(text, prepositions=...)`: comma/sentence segments are kept; inside each, the longest
  glossary phrase wins ("matahari terbit" -> "sunrise" before "matahari" -> "sun"); unknown words stay as
  they are (names, English words); adjectives move before their noun ("kucing hitam kecil" -> "small black
  cat"). Function words either become English prepositions (`prepositions=True`, for an idea the LLM reads:
  "kucing di bawah hujan" -> "cat under rain") or end a keyword phrase (`False`, for metadata:
  "kucing di bawah hujan" -> "cat, rain").
"""
from __future__ import annotations

import functools
import re

from rezcty_core.common.paths import DATA_DIR, read_pairs

GLOSSARY_FILE = DATA_DIR / "metadata" / "id_en.txt"
STOPWORDS_FILE = DATA_DIR / "metadata" / "stopwords_id.txt"
WORD = re.compile(r"[^\W_][\w'\-]*", re.UNICODE)
SEGMENT = re.compile(r"([,.;\n])")

EN_STOPWORDS = frozenset("""
a an the and or but nor of in on at to for from by with without within into onto over under above below
behind beside besides between among through across along around near beneath inside outside upon off out up down
is are was were be been being am has have had having do does did this that these those it its it's they them their
there here which who whom whose what where when while as than then so such very too also just only not no
all any both each every few more most other some own same can will would should could may might must
his her hers him he she we us our you your i me my mine one ones into toward towards against during
before after again once about like using via per etc
""".split())

# Indonesian prepositions -> English (longest first by the phrase match); the glossary may override any of them
PREPOSITIONS = {"di atas": "over", "di bawah": "under", "di dalam": "inside", "di depan": "in front of",
                "di belakang": "behind", "di samping": "beside", "di antara": "between", "di tengah": "in the middle of",
                "di tepi": "on the edge of", "di sekitar": "around", "di": "in", "ke": "to", "dari": "from",
                "dengan": "with", "dan": "and", "saat": "at", "ketika": "when", "tanpa": "without", "dekat": "near",
                "menuju": "towards", "sambil": "while", "pada": "on", "dalam": "in", "atas": "above", "bawah": "below"}

# Glossary targets that are adjectives: Indonesian puts them after the noun, English before.
ADJECTIVES = frozenset((
    "red blue green yellow white black purple orange brown gold golden silver pink gray grey colorful ancient old "
    "new modern traditional large big small little tall long wide thick thin calm quiet busy dark bright wet dry "
    "cold hot warm beautiful majestic magical futuristic rising setting flowing flying sleeping cute wild").split())

_BREAK = "|"  # a function word ends a noun phrase


@functools.lru_cache(maxsize=1)
def glossary() -> dict[str, str]:
    """The user's glossary (`id_en.txt`), lower-case source phrase -> English."""
    return read_pairs(GLOSSARY_FILE)


@functools.lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    text = STOPWORDS_FILE.read_text(encoding="utf-8")
    return frozenset(w for line in text.splitlines() for w in line.split("#", 1)[0].split())


@functools.lru_cache(maxsize=2)
def _phrases(prepositions: bool) -> tuple[dict[str, str], int]:
    table = {**PREPOSITIONS, **glossary()} if prepositions else glossary()
    return table, max((len(k.split()) for k in table), default=1)


def detect_language(text: str) -> str:
    """'id' when Indonesian function or glossary words outnumber English stopwords, else 'en'."""
    words = [w.lower() for w in WORD.findall(text)]
    table, _ = _phrases(True)
    ind = sum(1 for w in words if (w in stopwords() or w in table) and w not in EN_STOPWORDS)
    eng = sum(1 for w in words if w in EN_STOPWORDS)
    return "id" if ind > eng and ind >= 1 else "en"


def adjectives_first(words: list[str]) -> list[str]:
    """['cat', 'black', 'small'] -> ['small', 'black', 'cat'] (Indonesian order to English order)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i + 1
        while j < len(words) and words[j] in ADJECTIVES and words[i] not in ADJECTIVES and words[i] != _BREAK:
            j += 1
        out.extend(list(reversed(words[i + 1:j])) + [words[i]])
        i = j
    return out


def _translate_segment(segment: str, prepositions: bool) -> str:
    table, longest = _phrases(prepositions)
    stop = stopwords()
    preps = set(PREPOSITIONS.values()) if prepositions else set()
    tokens = [t.lower() for t in WORD.findall(segment)]
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for size in range(min(longest, len(tokens) - i), 0, -1):
            phrase = " ".join(tokens[i:i + size])
            if phrase in table:
                word = table[phrase]
                out.append(word if word not in preps else f"{_BREAK}{word}")
                i += size
                break
        else:
            out.append(_BREAK if tokens[i] in stop else tokens[i])
            i += 1
    # a preposition ends the phrase an adjective may move in, like a function word; breaks keep their positions
    words = adjectives_first([_BREAK if w.startswith(_BREAK) else w for w in out])
    words = [o[1:] if o.startswith(_BREAK) and len(o) > 1 else w for o, w in zip(out, words)]
    if prepositions:
        return " ".join(w for w in words if w != _BREAK)
    phrases, current = [], []
    for w in words + [_BREAK]:
        if w == _BREAK:
            if current:
                phrases.append(" ".join(current))
            current = []
        else:
            current.append(w)
    return ", ".join(phrases)


def translate_indonesian(text: str, prepositions: bool = False) -> str:
    """Indonesian -> English word by word (see the module docstring); punctuation between segments is kept."""
    parts = []
    for piece in SEGMENT.split(text):
        if piece in {",", ".", ";", "\n"}:
            parts.append(piece)
        elif piece.strip():
            translated = _translate_segment(piece, prepositions)
            if translated:
                parts.append(f" {translated}")
    return re.sub(r"\s+", " ", "".join(parts)).strip().strip(",").strip()
