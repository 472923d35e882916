"""Adobe Stock's 21 categories and a deterministic classifier from the content words."""
from __future__ import annotations

import re

ADOBE_CATEGORIES: dict[int, str] = {
    1: "Animals", 2: "Buildings and Architecture", 3: "Business", 4: "Drinks", 5: "The Environment",
    6: "States of Mind", 7: "Food", 8: "Graphic Resources", 9: "Hobbies and Leisure", 10: "Industry",
    11: "Landscapes", 12: "Lifestyle", 13: "People", 14: "Plants and Flowers", 15: "Culture and Religion",
    16: "Science", 17: "Social Issues", 18: "Sports", 19: "Technology", 20: "Transport", 21: "Travel",
}
AUTO = "auto"
# Used when nothing in the content points anywhere: backgrounds, textures, abstract shapes.
FALLBACK_CATEGORY = 8

# Content words per category (English, singular; a trailing "s"/"es" in the text still matches).
LEXICON: dict[int, str] = {
    1: "animal wildlife cat kitten dog puppy bird eagle owl parrot horse cow sheep goat pig chicken duck fish shark "
       "whale dolphin lion tiger leopard elephant giraffe zebra bear wolf fox deer rabbit squirrel monkey ape "
       "butterfly insect bee spider snake lizard turtle frog dinosaur dragon pet fur feather paw wing mammal "
       "reptile koi jellyfish octopus penguin panda",
    2: "building architecture house home city skyline skyscraper tower castle palace temple church cathedral "
       "mosque bridge street facade interior room window door roof wall apartment villa cottage cabin ruin "
       "urban downtown alley staircase arch column dome lighthouse barn",
    3: "business office meeting finance money coin chart graph laptop desk teamwork startup marketing "
       "corporate sale shopping bank investment economy contract handshake presentation",
    4: "drink coffee tea beer wine cocktail juice water bottle glass cup mug milk smoothie lemonade soda "
       "espresso latte whiskey",
    5: "environment pollution climate ecology recycling recycle plastic waste earth planet solar wind turbine "
       "deforestation drought flood wildfire sustainability conservation",
    6: "emotion feeling mood happiness happy sadness sad love loneliness lonely fear anger calm peace hope "
       "dream dreaming joy anxiety nostalgia serenity meditation mind",
    7: "food meal dish fruit vegetable bread cake dessert pizza burger pasta rice noodle soup salad cheese "
       "meat chocolate cookie breakfast lunch dinner kitchen cooking apple orange banana strawberry berry "
       "tomato sushi egg honey spice",
    8: "background texture pattern abstract wallpaper gradient shape geometric frame border banner template "
       "icon symbol ornament seamless bokeh copy space fractal swirl mandala",
    9: "hobby leisure game toy music guitar piano reading book painting craft gardening fishing camping "
       "picnic party celebration festival holiday christmas halloween birthday chess puzzle",
    10: "industry factory industrial machine machinery construction worker engineering steel oil gas "
        "warehouse pipeline crane mining welding manufacturing power plant",
    11: "landscape mountain hill valley river lake waterfall sea ocean beach coast shore cliff canyon desert "
        "forest field meadow sky cloud sunset sunrise horizon island glacier snow volcano scenery nature "
        "countryside panorama dune fog mist rainbow aurora",
    12: "lifestyle family home living relaxing fashion wellness yoga fitness daily routine hygge cozy "
        "coffee shop weekend",
    13: "people person man woman boy girl child children kid baby portrait face couple family crowd "
        "senior teenager friend human hand knight warrior soldier farmer worker",
    14: "plant flower rose tulip sunflower lily orchid daisy lotus tree leaf leaves garden botanical "
        "blossom bloom cactus succulent moss grass fern bamboo palm petal bouquet",
    15: "culture religion tradition traditional ceremony ritual prayer faith temple mosque church spiritual "
        "batik wayang ethnic heritage folk myth mythology lantern",
    16: "science laboratory research microscope chemistry physics biology dna molecule atom space galaxy "
        "planet star nebula astronomy cosmos universe experiment medicine",
    17: "social issue poverty protest equality diversity homeless refugee war crisis inequality justice "
        "discrimination",
    18: "sport football soccer basketball tennis running runner swimming cycling surfing skiing boxing golf "
        "athlete stadium competition gym marathon",
    19: "technology computer robot cyborg android artificial circuit digital data network internet phone "
        "smartphone screen hologram futuristic cyberpunk neon virtual code software hardware chip drone "
        "spaceship satellite",
    20: "transport car vehicle truck bus train railway tram airplane plane aircraft ship boat sailboat "
        "bicycle motorcycle road highway traffic airport harbor port",
    21: "travel tourism tourist vacation journey trip adventure destination landmark resort hotel luggage "
        "backpack map passport explore",
}

_LEXICON_WORDS: dict[int, set[str]] = {n: set(words.split()) for n, words in LEXICON.items()}
# Two-word entries ("copy space", "power plant") are matched as phrases.
_LEXICON_PHRASES: dict[int, list[str]] = {
    n: [p for p in re.findall(r"\b\w+ \w+\b", words) if p in {"copy space", "power plant", "coffee shop"}]
    for n, words in LEXICON.items()
}
# Generic, always-true keywords per category, used only to reach Adobe's minimum keyword count.
GENERIC_KEYWORDS: dict[int, list[str]] = {
    1: ["animal", "wildlife", "nature", "creature", "fauna", "wild", "zoology", "natural"],
    2: ["architecture", "building", "structure", "exterior", "urban", "construction", "design", "place"],
    3: ["business", "concept", "professional", "work", "success", "corporate", "strategy", "idea"],
    4: ["drink", "beverage", "refreshment", "liquid", "glass", "refreshing", "thirst", "serving"],
    5: ["environment", "ecology", "nature", "planet", "earth", "climate", "natural", "conservation"],
    6: ["emotion", "mood", "concept", "feeling", "mind", "spirit", "imagination", "expression"],
    7: ["food", "meal", "fresh", "delicious", "cuisine", "tasty", "eating", "gourmet"],
    8: ["background", "design", "decorative", "backdrop", "abstract", "element", "creative", "visual"],
    9: ["leisure", "hobby", "recreation", "fun", "activity", "free time", "enjoyment", "pastime"],
    10: ["industry", "industrial", "production", "technology", "equipment", "engineering", "work", "heavy"],
    11: ["landscape", "nature", "scenery", "outdoor", "scenic", "view", "environment", "natural"],
    12: ["lifestyle", "living", "everyday", "leisure", "modern", "life", "daily", "home"],
    13: ["people", "person", "human", "character", "figure", "adult", "one person", "individual"],
    14: ["plant", "nature", "botanical", "flora", "green", "natural", "growth", "garden"],
    15: ["culture", "tradition", "heritage", "symbol", "history", "traditional", "cultural", "custom"],
    16: ["science", "research", "discovery", "knowledge", "concept", "scientific", "study", "innovation"],
    17: ["society", "social", "issue", "concept", "community", "people", "problem", "awareness"],
    18: ["sport", "activity", "fitness", "competition", "action", "exercise", "athletic", "training"],
    19: ["technology", "digital", "modern", "innovation", "futuristic", "tech", "future", "science fiction"],
    20: ["transport", "transportation", "travel", "vehicle", "journey", "mobility", "traffic", "trip"],
    21: ["travel", "tourism", "destination", "vacation", "journey", "trip", "holiday", "sightseeing"],
}


def category_choices() -> list[str]:
    """Combo values for the node: `auto` then `"N Name"` for each Adobe category."""
    return [AUTO] + [f"{n} {name}" for n, name in ADOBE_CATEGORIES.items()]


def parse_category(value: str | int | None) -> int | None:
    """A category number from `7`, `"7"`, `"7 Food"` or `"Food"`; None for `auto`/empty; ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value in ADOBE_CATEGORIES:
            return value
        raise ValueError(f"category {value} is not one of Adobe's 1-21")
    text = str(value).strip()
    if not text or text.lower() == AUTO:
        return None
    m = re.match(r"^(\d{1,2})\b", text)
    if m and int(m.group(1)) in ADOBE_CATEGORIES:
        return int(m.group(1))
    for n, name in ADOBE_CATEGORIES.items():
        if text.lower() == name.lower():
            return n
    raise ValueError(f"unknown category '{value}': use 'auto', a number 1-21 or one of: "
                     + ", ".join(ADOBE_CATEGORIES.values()))


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            base = word[: -len(suffix)]
            return base + "y" if suffix == "ies" else base
    return word


def category_scores(words: list[str]) -> dict[int, float]:
    """Score each category from content words in order of importance (earlier words weigh more)."""
    scores: dict[int, float] = {}
    text = " ".join(w.lower() for w in words)
    for rank, raw in enumerate(words):
        weight = 1.0 / (1.0 + 0.15 * rank)
        for token in re.findall(r"[a-z]+", raw.lower()):
            for form in {token, _stem(token), token[:-2] if token.endswith("es") else token}:
                for n, vocab in _LEXICON_WORDS.items():
                    if form in vocab:
                        scores[n] = scores.get(n, 0.0) + weight
    for n, phrases in _LEXICON_PHRASES.items():
        for p in phrases:
            if p in text:
                scores[n] = scores.get(n, 0.0) + 1.0
    return scores


def classify(words: list[str]) -> int:
    """The best Adobe category for content words (most important first); ties go to the lower number."""
    scores = category_scores(words)
    if not scores:
        return FALLBACK_CATEGORY
    return max(sorted(scores), key=lambda n: scores[n])
