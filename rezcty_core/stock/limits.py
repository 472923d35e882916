"""Adobe Stock's limits on titles, descriptions, keywords and image size: one place that drafts and rules read."""
from __future__ import annotations

TITLE_MAX = 70
DESCRIPTION_MAX = 200
KEYWORDS_MIN = 15
KEYWORDS_RECOMMENDED_MAX = 35
KEYWORDS_MAX = 49
KEYWORD_MAX_WORDS = 4
MIN_PIXELS = 4_000_000
MAX_PIXELS = 100_000_000
