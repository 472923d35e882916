"""Short ideas distilled from a caption: what a user would type into the Whisperer for that image.

Deterministic and rule-based (no model): the trigger words are removed, the caption's first phrase
(up to the first comma) is read word by word, and its *head chunk* is the words before the first
preposition, conjunction or trailing participle ("a futuristic city under heavy rain" -> "a
futuristic city"). Granularities, in order (`ideas(caption, k)` returns the first k distinct ones,
each 2-6 words):

1. the head chunk                              "a futuristic city"
2. the head noun with its first place phrase   "city under heavy rain"
3. the bare subject with its article           "a city"
4. the whole first phrase (cut to 6 words)     "a futuristic city under heavy rain"

The *subject* (the head noun, singular) groups captions for the held-out split, so evaluation
measures subjects never seen in training.
"""
from __future__ import annotations

import re

MIN_WORDS, MAX_WORDS = 2, 6
ARTICLES = {"a", "an", "the", "one", "two", "three", "some", "many", "several"}
BREAKS = {
    "under", "in", "on", "at", "over", "above", "below", "beside", "near", "with", "without", "through", "across",
    "along", "behind", "among", "between", "into", "onto", "from", "by", "against", "around", "inside", "outside",
    "before", "after", "during", "toward", "towards", "beneath", "amid", "amidst", "within", "upon", "underneath",
    "beyond", "past", "and", "or", "while", "that", "which", "who", "where", "as", "is", "are", "made", "full",
}
_WORD = re.compile(r"[\w'-]+", re.UNICODE)


def _strip_triggers(caption: str, triggers: list[str]) -> str:
    text = caption
    for t in sorted({t for t in triggers if t}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w]){re.escape(t)}(?![\w])", " ", text, flags=re.IGNORECASE)
    return text


def first_phrase(caption: str, triggers: list[str] = ()) -> list[str]:
    """The words of the caption's first non-empty comma segment, lowercased, triggers removed."""
    for segment in _strip_triggers(caption, list(triggers)).split(","):
        words = [w.lower() for w in _WORD.findall(segment)]
        if words:
            return words
    return []


def _is_participle(word: str) -> bool:
    return len(word) > 4 and (word.endswith("ing") or word.endswith("ed"))


def head_chunk(words: list[str]) -> tuple[list[str], list[str]]:
    """(the head noun chunk, the rest of the phrase)."""
    content = 0
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else None
        trailing = _is_participle(w) and (nxt is None or nxt in BREAKS or nxt in ARTICLES)
        if i > 0 and content >= 1 and (w in BREAKS or trailing):
            return words[:i], words[i:]
        if w not in ARTICLES:
            content += 1
    return list(words), []


def singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("xes", "ches", "shes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _cap(words: list[str]) -> list[str]:
    """At most MAX_WORDS, keeping the head noun (the end) and the leading article."""
    if len(words) <= MAX_WORDS:
        return words
    if words[0] in ARTICLES:
        return [words[0], *words[-(MAX_WORDS - 1):]]
    return words[-MAX_WORDS:]


def subject(caption: str, triggers: list[str] = ()) -> str:
    """The caption's head noun, singular ('' when the caption has no words)."""
    words = first_phrase(caption, triggers)
    if not words:
        return ""
    head, _ = head_chunk(words)
    return singular(head[-1])


def ideas(caption: str, k: int = 1, triggers: list[str] = ()) -> list[str]:
    """Up to k distinct short ideas (2-6 words each), coarse to fine as in the module docstring."""
    words = first_phrase(caption, triggers)
    if not words:
        return []
    head, rest = head_chunk(words)
    noun = head[-1]
    article = head[0] if head[0] in ARTICLES and len(head) > 1 else ("an" if noun[0] in "aeiou" else "a")
    place = rest[:4] if rest and rest[0] in BREAKS and rest[0] not in {"and", "or", "is", "are", "as"} else []
    candidates = [
        head if len(head) >= MIN_WORDS else words[:max(MIN_WORDS, len(head))],
        [noun, *place] if place else [],
        [article, noun],
        words[:MAX_WORDS],
    ]
    out: list[str] = []
    for c in candidates:
        c = _cap(c)
        while len(c) > MIN_WORDS and (c[-1] in ARTICLES or c[-1] in BREAKS):
            c = c[:-1]
        text = " ".join(c)
        if MIN_WORDS <= len(c) <= MAX_WORDS and text not in out:
            out.append(text)
        if len(out) >= k:
            break
    return out
