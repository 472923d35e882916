"""Prompt cleaning: the content-only English text of a prompt, without syntax, triggers or blocked terms.

`strip_prompt_syntax` removes weights, LoRA tags, embeddings and A1111/Midjourney parameters; `clean_prompt`
also translates Indonesian, cuts blocked terms out (and lists them) and splits the text into comma segments.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from rezcty_core.common import language as indonesian
from rezcty_core.common.blocklists import Blocklist, load_blocklist
from rezcty_core.stock import keywords

# words a segment or a sentence may not start (LEAD_DROP) or end (TAIL_DROP) with
LEAD_DROP = {"and", "or", "but", "with", "by", "of", "in", "from", "featuring", "at", "on", "for", "to", "as",
             "like", "inspired", "plus", "while"}
TAIL_DROP = LEAD_DROP | {"the", "a", "an", "art", "style", "made", "its", "his", "her", "their", "very", "under",
                          "over", "into", "near", "above", "below", "behind", "through", "against", "is", "are"}


def strip_prompt_syntax(prompt: str) -> str:
    """Positive prompt text without weights, LoRA tags, embeddings, A1111/Midjourney parameters."""
    text = re.split(r"(?im)^\s*(?:negative prompt|steps)\s*:", prompt)[0]
    text = re.sub(r"(?i)\bnegative prompt\s*:.*", " ", text, flags=re.S)
    text = re.sub(r"(?<!\w)--[a-z]+(?:\s+(?!--)[^\s,]+)?", " ", text)  # --ar 16:9, --v 5.2, --no x
    text = re.sub(r"<[^<>]*>", " ", text)  # <lora:name:0.8>, <hypernet:...>
    text = re.sub(r"(?i)\bembedding:[^\s,()\[\]]+", " ", text)
    text = re.sub(r"\\([()\[\]{}])", r"\1", text)
    text = re.sub(r":\s*-?\d+(?:\.\d+)?\s*(?=[)\]>])", "", text)  # (word:1.3) -> (word)
    text = re.sub(r"::\s*-?\d*(?:\.\d+)?", ", ", text)  # word::2 (Midjourney)
    text = re.sub(r"\[([^\[\]:|]*):([^\[\]:|]*)(?::[^\[\]]*)?\]", r"\1, \2", text)  # [from:to:when]
    text = re.sub(r"[|]", ", ", text)  # {a|b}, [a|b]
    text = re.sub(r"[()\[\]{}<>]", " ", text)
    text = re.sub(r"\b(?:BREAK|AND)\b", ",", text)
    text = re.sub(r"(?<![\w.])\d+\.\d+(?![\w.])", " ", text)  # stray weights
    text = re.sub(r"(?i)\b(?:\d{2,3}\s?mm|f/\d+(?:\.\d+)?|iso\s?\d+|1/\d+\s?s)(?!\w)", " ", text)  # camera settings
    return re.sub(r"[ \t]+", " ", text).strip()


def _tidy_segment(segment: str) -> str:
    words = segment.split()
    while words and words[0].lower() in LEAD_DROP:
        words.pop(0)
    while words and words[-1].lower() in TAIL_DROP:
        words.pop()
    return " ".join(words)


@dataclass
class CleanPrompt:
    original: str
    language: str
    segments: list[str]
    removed: list[dict] = field(default_factory=list)

    @property
    def text(self) -> str:
        return ", ".join(self.segments)


def clean_prompt(prompt: str, blocklist: Blocklist | None = None) -> CleanPrompt:
    """Content-only English text of a prompt, in comma segments; blocked terms cut out and listed."""
    blocklist = blocklist or load_blocklist()
    text = strip_prompt_syntax(prompt)
    language = indonesian.detect_language(text)
    if language == "id":
        text = indonesian.translate_indonesian(text)
    text, hits = blocklist.remove(text)
    removed = [{"term": h.term, "category": h.category} for h in hits]
    for token in re.findall(r"[^\W\d_]*_[\w]*", text):  # trigger-like tokens (`xyz_style`)
        removed.append({"term": token, "category": "triggers"})
    text = re.sub(r"[\w-]*_[\w-]*", " ", text)
    segments = []
    for seg in keywords.segments(text):
        tidy = _tidy_segment(re.sub(r"\s+", " ", seg))
        if any(keywords.is_keyword_word(w) for w in tidy.split()):
            segments.append(tidy)
    return CleanPrompt(prompt, language, segments, removed)

