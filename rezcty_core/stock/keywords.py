"""Deterministic, offline keyword extraction from a cleaned prompt (YAKE plus prompt structure).

SD prompts put the subject first and separate ideas with commas, so a comma segment's position
is a good relevance signal; YAKE ranks words inside that order. Indonesian prompts are turned
into English first (`rezcty_core.common.language`, the editable glossary `data/metadata/id_en.txt`).
"""
from __future__ import annotations

import functools
import re

from rezcty_core.common.language import EN_STOPWORDS
from rezcty_core.common.language import stopwords as indonesian_stopwords
from rezcty_core.common.paths import DATA_DIR, read_pairs

METADATA_DATA = DATA_DIR / "metadata"

# Two-letter words that are real keywords.
SHORT_WORDS = frozenset({"ox", "tv", "uk", "us", "3d"})
SEGMENT_SPLIT = re.compile(r"[,.;:!?\n|/()\[\]{}\"]+")
WORD = re.compile(r"[^\W_][\w'\-]*", re.UNICODE)


def _read_pairs(name: str) -> dict[str, str]:
    return read_pairs(METADATA_DATA / name)


def segments(text: str) -> list[str]:
    """Comma/sentence segments of a prompt, stripped, empty ones dropped."""
    return [s.strip() for s in SEGMENT_SPLIT.split(text) if s.strip()]


def is_keyword_word(word: str) -> bool:
    w = word.lower().strip("'-")
    if not w or "_" in w or w in EN_STOPWORDS or w in indonesian_stopwords():
        return False
    if w.replace(".", "").replace("-", "").isdigit():
        return False
    return len(w) >= 3 or w in SHORT_WORDS


# -ing words that are nouns; other -ing words are verbs and end a noun phrase ("knight | standing").
ING_NOUNS = frozenset("""building painting ceiling clothing morning evening spring king ring wing string thing landing
lightning wedding swing sibling pudding bedding dumpling earring railing sting ceiling viking duckling seedling
offering awning icing stuffing frosting dressing sewing crossing clearing""".split())


def is_verb_form(word: str) -> bool:
    return word.endswith("ing") and len(word) > 5 and word not in ING_NOUNS


def chunks(segment: str, max_words: int = 3) -> list[list[str]]:
    """Runs of content words in a segment, split at stopwords ('city under heavy rain' -> city | heavy rain)."""
    out: list[list[str]] = []
    current: list[str] = []
    for word in WORD.findall(segment.lower()):
        word = word.strip("'-")
        if is_verb_form(word):
            if current:
                out.append(current)
            out.append([word])
            current = []
        elif is_keyword_word(word):
            current.append(word)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return [c[-max_words:] for c in out]


def _yake_scores(text: str) -> dict[str, float]:
    try:
        import yake
    except ImportError:  # YAKE is a declared dependency; without it the prompt order alone ranks
        return {}
    extractor = yake.KeywordExtractor(lan="en", n=3, top=200, dedupLim=1.0)
    return {k.lower(): float(s) for k, s in extractor.extract_keywords(text)}


def extract_keywords(text: str, limit: int = 49) -> list[str]:
    """Ranked, unique, lower-case keywords (phrases of up to 3 words and single words) from cleaned English text."""
    scores = _yake_scores(text) if text.strip() else {}
    candidates: dict[str, float] = {}

    def offer(term: str, score: float) -> None:
        if term and (term not in candidates or score < candidates[term]):
            candidates[term] = score

    for seg_index, segment in enumerate(segments(text)):
        position = 1.0 + 0.6 * seg_index
        for chunk_index, chunk in enumerate(chunks(segment)):
            weight = position * (1.0 + 0.3 * chunk_index)
            head = chunk[-1]
            if len(chunk) == 1 and is_verb_form(head):
                offer(head, 2.0 * weight * (0.5 + scores.get(head, 0.5)))  # an action: useful, not the subject
                continue
            offer(head, 0.5 * weight * (0.5 + scores.get(head, 0.5)))
            if len(chunk) > 1:
                for size in range(len(chunk), 1, -1):
                    phrase = " ".join(chunk[-size:])
                    offer(phrase, 0.7 * weight * (0.5 + scores.get(phrase, 0.5)) + 0.05 * (size - 2))
            for modifier in chunk[:-1]:
                offer(modifier, 1.2 * weight * (0.5 + scores.get(modifier, 0.5)))
    ranked = sorted(candidates, key=lambda t: (candidates[t], t))
    return ranked[:limit]


@functools.lru_cache(maxsize=1)
def related_terms() -> dict[str, list[str]]:
    return {k: [t.strip() for t in v.split(",") if t.strip()] for k, v in _read_pairs("related.txt").items()}


def related_keywords(words: list[str]) -> list[str]:
    """Terms related to the given keywords (from `data/metadata/related.txt`), in the keywords' order."""
    table = related_terms()
    out: list[str] = []
    for word in words:
        for term in table.get(word.lower(), []):
            if term not in out and term not in words:
                out.append(term)
    return out
