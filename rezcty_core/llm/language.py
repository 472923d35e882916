"""The idea's language: Indonesian ideas are put into English before the Whisperer's LLM sees them.

An instruction alone does not do it: Qwen2.5-Coder-1.5B answered "matahari terbit di atas gunung" in Indonesian.
So the idea is detected (Indonesian function and glossary words vs English stopwords) and translated word by
word with the Metadata Writer's editable glossary `data/metadata/id_en.txt` (longest phrase first; the
prepositions below; other function words dropped; adjectives moved before their noun). Unknown words stay as
they are, so a name or an English word in the idea survives. The LLM then expands an English idea, whatever
model it is, the 135M SmolLM2 included.
"""
from __future__ import annotations

import functools
import re

from rezcty_core.common.paths import DATA_DIR, read_pairs

GLOSSARY_FILE = DATA_DIR / "metadata" / "id_en.txt"
STOPWORDS_FILE = DATA_DIR / "metadata" / "stopwords_id.txt"
WORD = re.compile(r"[a-zA-Z][a-zA-Z'\-]*")

# Indonesian prepositions -> English (longest first); the glossary may override any of them
PREPOSITIONS = {"di atas": "over", "di bawah": "under", "di dalam": "inside", "di depan": "in front of",
                "di belakang": "behind", "di samping": "beside", "di antara": "between", "di tengah": "in the middle of",
                "di tepi": "on the edge of", "di sekitar": "around", "di": "in", "ke": "to", "dari": "from",
                "dengan": "with", "dan": "and", "saat": "at", "ketika": "when", "tanpa": "without", "dekat": "near",
                "menuju": "towards", "sambil": "while", "pada": "on", "dalam": "in", "atas": "above", "bawah": "below"}
EN_STOPWORDS = frozenset("a an the of in on at with and or over under by for from to into near above below is are "
                         "this that its his her their while as".split())
ADJECTIVES = frozenset(("red blue green yellow white black purple orange brown gold golden silver pink gray grey "
                        "colorful ancient old new modern traditional large big small little tall long wide calm quiet "
                        "busy dark bright wet dry cold hot warm beautiful majestic magical rising setting flowing "
                        "flying sleeping cute wild").split())


@functools.lru_cache(maxsize=1)
def glossary() -> dict[str, str]:
    return {**PREPOSITIONS, **read_pairs(GLOSSARY_FILE)}


@functools.lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    text = STOPWORDS_FILE.read_text(encoding="utf-8")
    return frozenset(w for line in text.splitlines() for w in line.split("#", 1)[0].split())


def detect_language(text: str) -> str:
    """'id' when Indonesian function or glossary words outnumber English stopwords, else 'en'."""
    words = [w.lower() for w in WORD.findall(text)]
    gloss = glossary()
    ind = sum(1 for w in words if (w in stopwords() or w in gloss) and w not in EN_STOPWORDS)
    eng = sum(1 for w in words if w in EN_STOPWORDS)
    return "id" if ind > eng and ind >= 1 else "en"


def translate_indonesian(text: str) -> str:
    """Word-by-word Indonesian -> English (see the module docstring)."""
    gloss = glossary()
    stop = stopwords()
    longest = max(len(k.split()) for k in gloss)
    tokens = [t.lower() for t in WORD.findall(text)]
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for size in range(min(longest, len(tokens) - i), 0, -1):
            phrase = " ".join(tokens[i:i + size])
            if phrase in gloss:
                word = gloss[phrase]
                if word in ADJECTIVES and out and out[-1] not in PREPOSITIONS.values():
                    out.insert(len(out) - 1, word)  # "kucing hitam" -> "black cat"
                else:
                    out.append(word)
                i += size
                break
        else:
            if tokens[i] not in stop:
                out.append(tokens[i])
            i += 1
    return " ".join(out)


def english_idea(idea: str) -> tuple[str, str | None]:
    """(the idea in English, a note when it was translated)."""
    if detect_language(idea) != "id":
        return idea, None
    english = translate_indonesian(idea)
    if not english.strip():
        return idea, None
    return english, f"Indonesian idea translated with data/metadata/id_en.txt: '{idea}' -> '{english}'"
