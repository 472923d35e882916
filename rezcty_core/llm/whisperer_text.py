"""The Whisperer's text hygiene: the trigger words, and one model generation cleaned into a prompt body and
composed with the triggers.

Whatever the model did: one line, no chat artifacts, quotes or "Here is…" preambles, the trigger words
exactly once each at the end in the order given, optionally kept within one 77-token CLIP window (counted
with the real CLIP tokenizer). `garbage_reason` says why a cleaned generation is unusable, so the caller
(`rezcty_core.llm.whisperer`) can retry it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rezcty_core.sd.clip_tokens import CLIP_CONTENT_TOKENS, count_clip_tokens, truncate_to_clip_tokens

UNFIT_CATEGORY = "unfit"  # data/blocklists/unfit.txt

# Chat-template and tokenizer debris a small model may leave in its answer.
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<image>|<unk>|<pad>", re.IGNORECASE)
_ROLE_PREFIX = re.compile(
    r"^\s*(?:assistant|user|system|whisperer|ai|bot)\s*[:\n]\s*", re.IGNORECASE)
_ROLE_ONLY = re.compile(r"(?:assistant|user|system|whisperer)\s*:?", re.IGNORECASE)
_LABEL_PREFIX = re.compile(
    r"^\s*(?:(?:expanded|rich|final|enhanced|improved|stable diffusion|sd|positive|your|the)\s+)*"
    r"(?:prompt|output|answer|result|response|description|expansion)\s*(?:\d+\s*)?[:=\-–—]\s*", re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^\s*(?:here(?:'s| is| are)|sure|certainly|of course|okay|ok|absolutely|great|alright|i'?d be happy|"
    r"i can|i will|i'll|let me|below is|this is)\b[^:\n]*?(?::|!|\.(?=\s|$))\s*", re.IGNORECASE)
_COMMENTARY = re.compile(
    r"^\s*(?:(?:note|notes|explanation|this prompt|the prompt|i hope|hope this|feel free|let me know)\b|"
    r"(?:negative prompt|steps|sampler|cfg scale|seed|size|model)\s*:)", re.IGNORECASE)
_REFUSAL = re.compile(r"\b(?:i'?m sorry|i am sorry|i cannot|i can'?t|as an ai|language model|i apologi[sz]e)\b",
                      re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•·]+|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)
_QUOTES = "\"“”„«»`´"
_EDGE_PUNCT = " \t,;:.-–—|/\\"


# -- triggers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Triggers:
    words: tuple[str, ...]  # each trigger, in the order given, once
    suffix: str  # the text that ends every prompt

    def __bool__(self) -> bool:
        return bool(self.words)


def parse_triggers(trigger_words: str) -> Triggers:
    """Triggers from the node's text: comma/newline separated (spaces also separate `_`-style words).

    The suffix is the text as given (one line, spacing tidied); a repeated trigger is kept once.
    """
    text = re.sub(r"\s+", " ", (trigger_words or "").replace("\n", ", ")).strip(" ,;")
    if not text:
        return Triggers((), "")
    groups: list[list[str]] = []
    for item in re.split(r"\s*[,;]\s*", text):
        if not item:
            continue
        parts = item.split(" ")
        # "rezcty_style rezcty_structure" is two triggers; "golden hour" is one phrase
        groups.append(parts if len(parts) > 1 and all(_looks_like_token(p) for p in parts) else [item])
    seen: set[str] = set()
    words: list[str] = []
    kept_groups: list[list[str]] = []
    for group in groups:
        kept = [w for w in group if w.lower() not in seen]
        seen.update(w.lower() for w in kept)
        words.extend(kept)
        if kept:
            kept_groups.append(kept)
    suffix = ", ".join(" ".join(g) for g in kept_groups)
    return Triggers(tuple(words), suffix)


def _looks_like_token(word: str) -> bool:
    return bool(re.fullmatch(r"[\w\-.:]+", word)) and bool(re.search(r"[_\d:]", word))


def _trigger_pattern(word: str) -> re.Pattern:
    return re.compile(rf"(?<![\w]){re.escape(word)}(?![\w])", re.IGNORECASE)


def count_trigger(text: str, word: str) -> int:
    """How often a trigger occurs in `text` as a whole word (case-insensitive)."""
    return len(_trigger_pattern(word).findall(text))


def remove_triggers(body: str, triggers: Triggers) -> str:
    """Drop the model's own copies of the triggers, and a trigger it wrote only in part at the end."""
    for word in sorted(triggers.words, key=len, reverse=True):
        body = _trigger_pattern(word).sub(" ", body)
    body = tidy_separators(body)
    head, _, last = body.rpartition(",")
    last = last.strip().lower()
    # "…, rezcty_" is a trigger cut off by max_new_tokens; the whole trigger is appended later anyway
    if len(last) >= 4 and " " not in last and any(w.lower().startswith(last) for w in triggers.words):
        body = tidy_separators(head)
    return body


# -- hygiene -----------------------------------------------------------------------------------------
def tidy_separators(text: str) -> str:
    """Collapse spaces and empty comma phrases, drop separators at both ends."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,;:.!?])", r"\1", text)
    text = re.sub(r"(?:[,;]\s*){2,}", ", ", text)
    text = re.sub(r"([,;])(?=\S)", r"\1 ", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    return text.strip(_EDGE_PUNCT + "!?")


def clean_generation(raw: str, cut_off: bool = False) -> str:
    """The model's answer reduced to one clean prompt line (may be empty when nothing usable is left).

    `cut_off`: the generation hit `max_new_tokens`, so its last comma phrase is unfinished and dropped.
    """
    text = _SPECIAL_TOKEN.sub("\n", raw or "")
    text = text.replace("\r", "\n").replace("**", "").replace("__", "\x00")  # keep `rezcty_style`, lose markdown bold
    text = text.replace("\x00", "__")
    lines: list[str] = []
    bullets: list[str] = []
    for line in text.split("\n"):
        line = line.strip().lstrip("#>").strip()
        if not line:
            if lines or bullets:
                break  # the prompt is the first block; what follows a blank line is commentary
            continue
        line = _strip_prefixes(line)
        if not line or _ROLE_ONLY.fullmatch(line):
            continue
        if _COMMENTARY.match(line):
            if lines or bullets:
                break
            continue
        if _BULLET.match(line):
            bullets.append(_BULLET.sub("", line))
            continue
        if bullets:
            break
        if line.endswith(":") and not lines:
            continue  # a heading such as "Prompt for a cat:"
        lines.append(line)
        break  # one line: the first substantive one
    body = ", ".join(bullets) if bullets and not lines else (lines[0] if lines else "")
    body = re.split(r"(?i)\b(?:negative prompt|steps\s*:|sampler\s*:|cfg scale\s*:)", body)[0]
    body = tidy_separators(_strip_quotes(body))
    if cut_off and not raw.rstrip().endswith((",", ".", "!")) and body.count(",") >= 2:
        body = body[: body.rfind(",")]
    return tidy_separators(dedupe_phrases(_trim_dangling(body)))


_DANGLING = {"a", "an", "the", "of", "in", "on", "with", "and", "or", "at", "to", "for", "from", "by", "its",
             "their", "his", "her", "over", "under", "into", "is", "are", "as", "that", "which", "while", "but"}


def _trim_dangling(body: str) -> str:
    """Drop words that cannot end a phrase ("…, a lone knight in the")."""
    words = body.rstrip(_EDGE_PUNCT).split(" ")
    while len(words) > 1 and words[-1].lower().strip(",;") in _DANGLING:
        words.pop()
    return " ".join(words)


def dedupe_phrases(body: str) -> str:
    """Drop comma phrases that repeat an earlier one (same words, in any order, or a subset of one)."""
    kept: list[str] = []
    seen: list[set[str]] = []
    for phrase in body.split(","):
        phrase = phrase.strip()
        words = set(re.findall(r"[\w']+", phrase.lower())) - _DANGLING
        if not phrase or (words and any(words <= earlier for earlier in seen)):
            continue
        kept.append(phrase)
        seen.append(words)
    return ", ".join(kept)


def drop_unfit_phrases(body: str) -> tuple[str, list[str]]:
    """`body` without the comma phrases that hold a sexual, profane or violent term (`data/blocklists/unfit.txt`,
    user-extendable like every blocklist); returns (body, dropped phrases)."""
    from rezcty_core.common.blocklists import load_blocklist

    blocklist = load_blocklist()
    kept, dropped = [], []
    for phrase in body.split(","):
        if any(h.category == UNFIT_CATEGORY for h in blocklist.find(phrase)):
            dropped.append(phrase.strip())
        else:
            kept.append(phrase)
    return (tidy_separators(",".join(kept)) if dropped else body), dropped


def _strip_prefixes(line: str) -> str:
    for _ in range(4):  # "Assistant: Sure! Here is the prompt: Prompt: …"
        before = line
        line = _ROLE_PREFIX.sub("", line)
        line = _PREAMBLE.sub("", line)
        line = _LABEL_PREFIX.sub("", line)
        if line == before:
            break
    return line.strip()


def _strip_quotes(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1]
    for q in _QUOTES:
        text = text.replace(q, "")
    return text


def garbage_reason(body: str, idea: str) -> str | None:
    """Why a cleaned generation is unusable, or None when it is a usable prompt body."""
    if not body:
        return "empty generation"
    letters = sum(ch.isalpha() for ch in body)
    if letters < 12 or len(body.split()) < 3:
        return "too short to be a prompt"
    if letters / max(len(body), 1) < 0.55:
        return "mostly symbols or digits"
    latin = sum(ch.isascii() and ch.isalpha() for ch in body)
    if latin / letters < 0.7:
        return "not English text"
    if _REFUSAL.search(body):
        return "a refusal or chat reply, not a prompt"
    words = [w for w in re.findall(r"[a-z']+", body.lower()) if w not in _DANGLING]
    if len(words) >= 10 and len(set(words)) / len(words) < 0.35:
        return "repetitive"
    phrases = [p.strip().lower() for p in body.split(",") if p.strip()]
    if len(phrases) >= 4 and len(set(phrases)) / len(phrases) < 0.5:
        return "repeated phrases"
    if body.strip(" .,").lower() == idea.strip(" .,").lower():
        return "the idea echoed back, not expanded"
    return None


def compose(body: str, triggers: Triggers, keep_within_77: bool = False) -> tuple[str, bool]:
    """Body + triggers at the end; with `keep_within_77` the body is cut so the whole fits one CLIP window.

    Returns (text, truncated).
    """
    body = remove_triggers(body, triggers)
    if not triggers:
        if keep_within_77 and count_clip_tokens(body) > CLIP_CONTENT_TOKENS:
            return _cut_body(body, CLIP_CONTENT_TOKENS), True
        return body, False
    joined = f"{body}, {triggers.suffix}" if body else triggers.suffix
    if not keep_within_77 or count_clip_tokens(joined) <= CLIP_CONTENT_TOKENS:
        return joined, False
    budget = CLIP_CONTENT_TOKENS - count_clip_tokens(", " + triggers.suffix)
    cut = _cut_body(body, budget) if budget > 0 else ""
    while cut and count_clip_tokens(f"{cut}, {triggers.suffix}") > CLIP_CONTENT_TOKENS:
        cut = _cut_body(cut, count_clip_tokens(cut) - 1)
    return (f"{cut}, {triggers.suffix}" if cut else triggers.suffix), True


def _cut_body(body: str, limit: int) -> str:
    """Cut to `limit` CLIP tokens, preferring to end on a whole comma phrase."""
    cut = truncate_to_clip_tokens(body, limit)
    if cut == body or not cut:
        return cut
    if body[len(cut):].lstrip().startswith(","):
        return tidy_separators(cut)
    last_comma = cut.rfind(",")
    if last_comma >= 0.6 * len(cut):
        cut = cut[:last_comma]
    return tidy_separators(cut)
