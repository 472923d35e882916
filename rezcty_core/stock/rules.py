"""The rules layer: every Adobe limit and every blocklist enforced on a draft, whatever its source said.

`apply_rules` always runs last (`build_metadata` runs the whole chain for one image: clean the prompt, read the
pixels, draft, rules); `clean_sentence` and `clean_keywords` are the single-field rules it uses.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rezcty_core.common.blocklists import Blocklist, load_blocklist
from rezcty_core.stock import categories, keywords
from rezcty_core.stock.drafting import Draft, deterministic_draft, llm_draft
from rezcty_core.stock.image_facts import ImageFacts, describe_image
from rezcty_core.stock.keyword_budget import budget_keywords, order_keywords
from rezcty_core.stock.limits import (
    DESCRIPTION_MAX,
    KEYWORD_MAX_WORDS,
    KEYWORDS_MAX,
    KEYWORDS_MIN,
    MAX_PIXELS,
    MIN_PIXELS,
    TITLE_MAX,
)
from rezcty_core.stock.prompt_clean import LEAD_DROP, TAIL_DROP, CleanPrompt, clean_prompt, strip_prompt_syntax

_PHOTO_HINTS = re.compile(r"\b(photo|photograph|photography|photorealistic|photo-realistic|realistic|dslr|raw photo|"
                          r"\d{2,3}\s?mm|f/\d|shot on|canon|nikon|sony a\d|film grain|bokeh|depth of field)\b", re.I)


@dataclass
class StockMetadata:
    title: str
    description: str
    keywords: list[str]
    category: int
    content_type: str
    source: str
    warnings: list[str] = field(default_factory=list)
    removed_terms: list[dict] = field(default_factory=list)
    prompt_clean: str = ""  # the prompt after cleaning: what an agency's Prompt column may show

    @property
    def category_name(self) -> str:
        return categories.ADOBE_CATEGORIES[self.category]

    def to_dict(self) -> dict:
        return {**asdict(self), "category_name": self.category_name}


_PHRASE_STARTS = re.compile(r"\s(?:and|with|while|under|over|near|beside|behind|against|in|on|at|of)\s", re.IGNORECASE)


def _cut_words(text: str, limit: int) -> str:
    """Cut to `limit` at a word; prefer the last phrase boundary in the second half ("…ridges | with a…")."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0] if " " in text[:limit + 1] else text[:limit]
    cut = cut[:limit]
    starts = [m.start() for m in _PHRASE_STARTS.finditer(cut + " ") if m.start() >= limit // 2]
    return cut[:starts[-1]] if starts else cut


def clean_sentence(text: str, blocklist: Blocklist, limit: int, commas: bool) -> str:
    """One line, blocked terms removed, trailing connectors dropped, cut at a word <= limit, capitalised."""
    text = re.sub(r"[\r\n\t\"“”;|#]+", " ", str(text))
    text = strip_prompt_syntax(text)
    text = re.sub(r"[\w-]*_[\w-]*", " ", text)
    text, _ = blocklist.remove(text)
    if not commas:
        text = text.replace(",", " ")
    text = re.sub(r"\s+([,.!?])", r"\1", re.sub(r"\s+", " ", text)).strip(" ,.;:-")
    text = re.sub(r"(?:,\s*)+", ", ", text)
    text = _cut_words(text, limit)
    words = text.rstrip(" ,.;:-").split()
    while words and words[-1].lower().strip(",.") in TAIL_DROP:
        words.pop()
    while words and words[0].lower() in LEAD_DROP:
        words.pop(0)
    text = " ".join(words).rstrip(" ,;:-")
    return text[:1].upper() + text[1:]


def clean_keywords(candidates: list[str], blocklist: Blocklist, limit: int = KEYWORDS_MAX) -> list[str]:
    """Lower case, unique (case-insensitively), no blocked term, no commas, <= 4 words and 64 bytes each."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in candidates:
        for piece in re.split(r"[,;\n]+", str(raw)):
            kw = re.sub(r"\s+", " ", strip_prompt_syntax(piece).lower()).strip(" .:-'\"#")
            words = kw.split()
            if not words or len(words) > KEYWORD_MAX_WORDS or "_" in kw or len(kw.encode()) > 64:
                continue
            if not any(keywords.is_keyword_word(w) for w in words) or not keywords.is_keyword_word(words[-1]):
                continue
            if blocklist.is_blocked(kw) or kw in seen:
                continue
            seen.add(kw)
            out.append(kw)
            if len(out) >= limit:
                return out
    return out


def content_type(prompt: str) -> str:
    """'photo' when the prompt asks for a photograph, else 'illustration' (Adobe's upload choice)."""
    return "photo" if _PHOTO_HINTS.search(prompt) else "illustration"


def apply_rules(draft: Draft, clean: CleanPrompt, facts: ImageFacts | None, blocklist: Blocklist,
                category: int | None = None, fallback: Draft | None = None) -> StockMetadata:
    """Enforce every limit on a draft; `fallback` (the deterministic draft) fills what the draft lacks."""
    fallback = fallback or deterministic_draft(clean, facts)
    warnings = list(draft.notes)
    title = clean_sentence(draft.title, blocklist, TITLE_MAX, commas=False)
    if len(title.split()) < 2 and draft is not fallback:
        title = clean_sentence(fallback.title, blocklist, TITLE_MAX, commas=False)
    description = clean_sentence(draft.description, blocklist, DESCRIPTION_MAX - 1, commas=True)
    if len(description.split()) < 3:
        description = clean_sentence(fallback.description, blocklist, DESCRIPTION_MAX - 1, commas=True)
    kws = clean_keywords(list(draft.keywords) + list(fallback.keywords), blocklist)
    number = category or draft.category or categories.classify(kws[:20] or title.split())
    # the image's own visual terms first (Adobe weighs the first 10); twins and phrases inside longer ones go.
    # An analyst's keywords (it saw the image) count as the image's own content, in the analyst's order.
    seen = " ".join(draft.keywords) if draft is not fallback else ""
    kws = budget_keywords(order_keywords(kws, f"{clean.text} {title} {description} {seen}"), KEYWORDS_MAX)
    if len(kws) < KEYWORDS_MIN:
        filler = list(categories.GENERIC_KEYWORDS[number])
        if facts:
            filler += ([facts.brightness] if facts.brightness != "medium" else []) + [facts.orientation]
        kws = budget_keywords(clean_keywords(kws + filler, blocklist), KEYWORDS_MAX)
    if len(kws) < KEYWORDS_MIN:
        warnings.append(f"only {len(kws)} keywords (Adobe recommends 15-35): give the prompt more content")
    if not title:
        title = " and ".join(k.capitalize() if i == 0 else k for i, k in enumerate(kws[:2])) or "Untitled"
        warnings.append("no usable title in the prompt; made one from the keywords")
    if not description:
        description = title
    if not description.endswith((".", "!", "?")):
        description += "."
    if facts and facts.width * facts.height < MIN_PIXELS:
        warnings.append(f"{facts.width}x{facts.height} is {facts.megapixels:.2f} MP, below Adobe's 4 MP minimum: "
                        "upscale before uploading")
    if facts and facts.width * facts.height > MAX_PIXELS:
        warnings.append(f"{facts.megapixels:.0f} MP is above Adobe's 100 MP maximum")
    return StockMetadata(title, description, kws, number, content_type(clean.original), draft.source, warnings,
                         clean.removed, clean.text)


def build_metadata(prompt: str, pixels: np.ndarray | None = None, *, category: str | int | None = "auto",
                   llm: Any = None, embedding: Any = None, seed: int = 0,
                   blocklist: Blocklist | None = None) -> StockMetadata:
    """Metadata for one image: LLM draft when `llm` is given, deterministic otherwise; rules last."""
    blocklist = blocklist or load_blocklist()
    clean = clean_prompt(prompt, blocklist)
    facts = describe_image(pixels) if pixels is not None else None
    fallback = deterministic_draft(clean, facts)
    draft = fallback
    if llm is not None:
        draft = llm_draft(llm, clean, facts, embedding, seed)
    return apply_rules(draft, clean, facts, blocklist, categories.parse_category(category), fallback)
