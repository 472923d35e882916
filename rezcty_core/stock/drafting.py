"""Drafts of stock metadata: title, description, keywords and maybe a category, before the rules run.

Two sources: the judge/analyst LLM when one is given (`llm_draft`: schema-constrained JSON, `metadata_schema`,
with retries) and a deterministic extractor from the cleaned prompt and the pixels that always works offline
(`deterministic_draft`). Neither is trusted: the rules layer (`stock.rules.apply_rules`) runs last.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rezcty_core.llm.interface import TextGenerator
from rezcty_core.stock import categories, keywords
from rezcty_core.stock.image_facts import ImageFacts
from rezcty_core.stock.limits import DESCRIPTION_MAX, KEYWORDS_MAX
from rezcty_core.stock.prompt_clean import CleanPrompt

# Judge sampling from the brief: temperature 0.2, top_p 0.9, max 256 new tokens.
LLM_SAMPLING = {"temperature": 0.2, "top_p": 0.9, "top_k": 50, "max_new_tokens": 256}


@dataclass
class Draft:
    title: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    category: int | None = None
    source: str = "deterministic"
    notes: list[str] = field(default_factory=list)


def _strip_article(text: str) -> str:
    return re.sub(r"^(?:a|an|the)\s+", "", text.strip(), flags=re.I)


def deterministic_draft(clean: CleanPrompt, facts: ImageFacts | None = None) -> Draft:
    """Title, description and ranked keywords from the cleaned prompt (and the image's colours)."""
    segs = [_strip_article(s) for s in clean.segments]
    title = segs[0] if segs else ""
    if segs and len(title.split()) < 3 and len(segs) > 1:
        title = f"{title} with {segs[1]}"
    rest = [s for s in clean.segments[1:] if s]
    description = _strip_article(clean.segments[0]) if clean.segments else ""
    for i, seg in enumerate(rest):
        joiner = " and " if i == len(rest) - 1 and i > 0 else (" with " if i == 0 else ", ")
        if len(description) + len(joiner) + len(seg) + 1 > DESCRIPTION_MAX:
            break
        description += joiner + seg
    words = keywords.extract_keywords(clean.text, limit=KEYWORDS_MAX)
    words += keywords.related_keywords(words)
    if facts:
        words += [c for c in facts.colors if c not in words]
    return Draft(title, description, words, None, "deterministic")


def judge_user_text(clean: CleanPrompt, facts: ImageFacts | None) -> str:
    lines = ["Write Adobe Stock metadata for this image.", f"Content: {clean.text or 'unknown'}"]
    if facts:
        lines.append(f"Measurements: {facts.width}x{facts.height} px, {facts.orientation}, "
                     f"colours {', '.join(facts.colors) or 'mixed'}, {facts.brightness} exposure.")
    return "\n".join(lines)


def validate_metadata_reply(obj: Any) -> dict:
    """The judge's JSON checked for what metadata needs: a title and a keyword list (raises ValueError)."""
    from rezcty_core.llm.templates import validate_judge_reply

    reply = validate_judge_reply(obj)
    if not reply["title"].strip():
        raise ValueError("'title' is empty")
    if len([k for k in reply["keywords"] if str(k).strip()]) < 3:
        raise ValueError("'keywords' needs at least 3 entries")
    return reply


def llm_draft(llm: TextGenerator, clean: CleanPrompt, facts: ImageFacts | None, embedding: Any = None,
              seed: int = 0, retries: int = 2) -> Draft:
    """A draft from the judge LLM (a `TextGenerator`'s `generate_json`); `source` says whether it succeeded."""
    from rezcty_core.llm.templates import build_messages

    image = embedding if embedding is not None and llm.can_see else None
    messages = build_messages("judge", judge_user_text(clean, facts), has_image=image is not None)
    schema = metadata_schema([f"{n} {name}" for n, name in categories.ADOBE_CATEGORIES.items()])
    reply = llm.generate_json(messages, validate_metadata_reply, retries=retries, image=image, seed=seed,
                              schema=schema, **LLM_SAMPLING)  # constrained decoding: the first reply parses
    if reply.value is None:
        return Draft(source="deterministic", notes=[f"LLM reply unusable after {reply.attempts} attempts: "
                                                    + "; ".join(reply.errors)[-300:]])
    value = reply.value
    category = None
    try:
        category = categories.parse_category(value.get("category")) if value.get("category") else None
    except ValueError:
        category = None
    note = [] if image is not None or embedding is None else ["the LLM cannot see: image_embedding was not used"]
    return Draft(value["title"], value["description"], list(value["keywords"]), category,
                 f"llm ({reply.attempts} attempt{'s' if reply.attempts > 1 else ''})", note)


# --- the JSON schema of the analyst's reply (constrained decoding, rezcty_core/llm/constrained.py) ----

_WORDS = "[A-Za-z0-9][A-Za-z0-9 _'&-]"
_TEXT = "[A-Za-z0-9][A-Za-z0-9 _'&,.-]"


def metadata_schema(categories: list[str] | tuple[str, ...] | None = None) -> dict:
    """The analyst's stock metadata: verdict, a title, optionally a sentence, 3-15 keywords (a list or one
    comma-separated string), optionally an Adobe category. Patterns keep every string non-blank and bounded;
    brands, triggers and unfit terms are the rules layer's job (`stock.rules.apply_rules`)."""
    keyword = f"{_WORDS}{{1,29}}"
    props: dict[str, Any] = {
        "verdict": {"type": "string", "enum": ["pass", "reject"]},
        "title": {"type": "string", "pattern": f"^{_TEXT}{{2,79}}$"},
        "description": {"type": "string", "pattern": f"^{_TEXT}{{2,159}}$"},
        "keywords": {"anyOf": [
            {"type": "array", "minItems": 3, "maxItems": 15, "items": {"type": "string", "pattern": f"^{keyword}$"}},
            {"type": "string", "pattern": f"^{keyword}(, ?{keyword}){{2,14}}$"},
        ]},
    }
    if categories:
        props["category"] = {"type": "string", "enum": list(categories)}
    return {"type": "object", "properties": props, "required": ["verdict", "title", "keywords"],
            "additionalProperties": False}
