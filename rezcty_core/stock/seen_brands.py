"""Brand names the QC judge read in the image: they never become a keyword, a title or a description word.

The QC text check (rezcty_core/qc/text.py) puts what its recogniser read in the report: `measurements.text_words`
(the boxes that count as text) and `text_regions[*].text` with its `rec_conf` (every box, fine print included).
A brand name painted into a render ("NIKE" on a shoe, "APPLE" on a shop front) would otherwise reach the metadata
through the prompt or the LLM's draft. `seen_brands(entry, blocklist)` returns the brand terms found there:

* a read text that the blocklist's `brands` list matches (`coca-cola`, `nike`), and
* a read word that is the head of a brand term whose other words only say what kind of thing it is
  (`apple` from `apple logo` / `apple store`, `amazon` from `amazon prime`, `corona` from `corona beer`), or one
  of the ambiguous brand words the lists keep only in unambiguous forms (data/blocklists/README.md): a picture of
  an apple keeps the keyword `apple`, a picture with APPLE written on it does not.

The Metadata Writer blocks these terms for that image only (category `brands_seen`).
"""
from __future__ import annotations

import re

from rezcty_core.common.blocklists import Blocklist, normalize

REC_MIN_CONF = 0.7  # a box read with less confidence is not taken as a word (the QC text check's own default)
# words that only say what kind of thing a brand term names ("apple logo", "vans shoes", "canon camera")
QUALIFIERS = frozenset({"logo", "inc", "store", "watch", "prime", "beer", "shoes", "camera", "card", "engine",
                        "render", "switch", "taxi", "energy", "images", "brand", "car", "phone"})
# ambiguous brand names that are also common words (data/blocklists/README.md): listed only in unambiguous forms
AMBIGUOUS = frozenset({"apple", "amazon", "shell", "puma", "jaguar", "dove", "canon", "ford", "corona", "subway"})
BRAND_CATEGORY = "brands"


def read_texts(entry: dict | None) -> list[str]:
    """What the QC judge read in one image: `measurements.text_words` and confident `text_regions` texts."""
    entry = entry or {}
    texts = [str(t) for t in ((entry.get("measurements") or {}).get("text_words") or []) if str(t).strip()]
    for region in entry.get("text_regions") or []:
        if not isinstance(region, dict) or not str(region.get("text") or "").strip():
            continue
        try:
            conf = float(region.get("rec_conf", 0.0))
        except (TypeError, ValueError):
            continue
        if conf >= REC_MIN_CONF:
            texts.append(str(region["text"]))
    return list(dict.fromkeys(texts))


def brand_heads(blocklist: Blocklist) -> set[str]:
    """Single words that name a brand when written in an image (see the module docstring)."""
    heads = set(AMBIGUOUS)
    for term in blocklist.lists.get(BRAND_CATEGORY, []):
        words = re.split(r"[\s\-]+", normalize(term).strip())
        if len(words) > 1 and all(w in QUALIFIERS for w in words[1:]) and words[0].isalpha():
            heads.add(words[0])
    return heads


def seen_brands(entry: dict | None, blocklist: Blocklist) -> list[str]:
    """Brand terms read in the image of this QC entry (lower case, in reading order, no repeats)."""
    found: list[str] = []
    heads = brand_heads(blocklist)
    for text in read_texts(entry):
        found.extend(h.term for h in blocklist.find(text) if h.category == BRAND_CATEGORY)
        found.extend(w for w in re.findall(r"[^\W\d_]{2,}", normalize(text)) if w in heads)
    return list(dict.fromkeys(found))
