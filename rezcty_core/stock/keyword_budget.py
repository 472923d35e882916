"""Keyword order and budgets: the most specific visual terms first, and redundant terms dropped before useful ones.

A ranked keyword list (the rules layer's) is ordered by what the term is (`order_keywords`): words of the image's own
content first (Adobe weighs the first 10), then the image's colours, then related terms, then broad filler. A budget
(`budget_keywords`, one per agency) trims the list; what goes first when it is too long:
1. always: plural/singular twins (`ridge` beside `ridges`) and one of two phrases built on each other: the longer
   (`layered mountain ridges`) when its extra words are keywords of their own (`layered`), else the shorter;
2. over budget: near-synonyms of a better-ranked term (`data/metadata/near_synonyms.txt`, and derived forms such as
   `misty` beside `mist`), then phrases whose every word is another keyword (`orange sky` beside `orange`, `sky`),
   each time the lowest-ranked first; then the tail.
English inflection is a small rule set with an irregular-word table (no lemmatizer is a dependency of the pack).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from rezcty_core.common.paths import DATA_DIR
from rezcty_core.stock.categories import GENERIC_KEYWORDS

NEAR_SYNONYMS_FILE = DATA_DIR / "metadata" / "near_synonyms.txt"

IRREGULAR = {"children": "child", "people": "person", "men": "man", "women": "woman", "feet": "foot",
             "teeth": "tooth", "mice": "mouse", "geese": "goose", "leaves": "leaf", "wolves": "wolf",
             "knives": "knife", "lives": "life", "wives": "wife", "shelves": "shelf", "calves": "calf",
             "halves": "half", "loaves": "loaf", "thieves": "thief", "cacti": "cactus", "fungi": "fungus",
             "tomatoes": "tomato", "potatoes": "potato", "heroes": "hero", "echoes": "echo", "volcanoes": "volcano",
             "mosquitoes": "mosquito", "dice": "die", "oxen": "ox"}
# Words that end in s but are not plurals (or have no singular of their own).
NOT_PLURAL = frozenset("""glass grass moss dress gas bus lens canvas atlas chaos cosmos iris oasis analysis
series species news physics mathematics athletics gymnastics aerobics politics economics christmas always
perhaps across famous various serious nervous delicious gorgeous religious precious luminous ominous""".split())
COLOURS = frozenset("red orange yellow green blue purple pink brown black white gray grey".split())
ORIENTATION_AND_LIGHT = frozenset("horizontal vertical square dark bright medium".split())


def singular(word: str) -> str:
    """The singular of an English noun (`ridges` -> `ridge`, `berries` -> `berry`); other words unchanged."""
    w = word.lower()
    if w in IRREGULAR:
        return IRREGULAR[w]
    if len(w) <= 3 or w in NOT_PLURAL or w.endswith(("ss", "us", "is", "ous")):
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses", "zzes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith("'s"):
        return w[:-1]
    return w


def lemmas(term: str) -> tuple[str, ...]:
    """A keyword's words, each in the singular."""
    return tuple(singular(w) for w in re.findall(r"[\w'-]+", term.lower()))


@functools.lru_cache(maxsize=4)
def _synonym_groups(path: str, mtime: float) -> dict[str, int]:
    groups: dict[str, int] = {}
    for n, line in enumerate(open(path, encoding="utf-8").read().splitlines()):
        line = line.split("#", 1)[0]
        for term in (t.strip().lower() for t in line.split(",")):
            if term:
                groups[" ".join(lemmas(term))] = n
    return groups


def synonym_groups() -> dict[str, int]:
    """Lemma string -> group number, from the user-editable `data/metadata/near_synonyms.txt`."""
    try:
        return _synonym_groups(str(NEAR_SYNONYMS_FILE), NEAR_SYNONYMS_FILE.stat().st_mtime)
    except OSError:
        return {}


def _derived_from(word: str, others: set[str]) -> bool:
    """`misty`/`mist`, `sunny`/`sun`, `layered`/`layer`, `silhouetted`/`silhouette`: one word made from another."""
    for suffix in ("y", "ed", "d"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            base = word[: -len(suffix)]
            if base in others or (len(base) > 2 and base[-1] == base[-2] and base[:-1] in others):
                return True
    return False


@dataclass
class Redundancy:
    """Why terms of a list are redundant, by kind (each list holds the redundant terms, not their partners)."""
    twins: list[str] = field(default_factory=list)
    contained: list[str] = field(default_factory=list)
    synonyms: list[str] = field(default_factory=list)
    covered: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(set(self.twins + self.contained + self.synonyms + self.covered))


def _is_twin(keys: list[tuple], i: int) -> bool:
    return keys[i] in keys[:i]


def _words_elsewhere(keys: list[tuple], alive: list[bool], skip: set[int]) -> set[str]:
    return {w for j, k in enumerate(keys) if alive[j] and j not in skip for w in k}


def _is_contained(keys: list[tuple], i: int, alive: list[bool]) -> bool:
    """A phrase and a longer one built on it: the longer goes when its extra words are keywords of their own
    (`green rice field` beside `rice field`, `green`), else the shorter goes (the longer carries all its words)."""
    mine = set(keys[i])
    if len(keys[i]) < 2:
        return False
    for j, other in enumerate(keys):
        if j == i or not alive[j] or len(other) < 2 or set(other) == mine:
            continue
        if mine < set(other) and not (set(other) - mine) <= _words_elsewhere(keys, alive, {i, j}):
            return True  # the longer phrase is needed anyway and says all this one says
        if set(other) < mine and (mine - set(other)) <= _words_elsewhere(keys, alive, {i, j}):
            return True  # this one is the shorter phrase plus words that are keywords already
    return False


def _is_synonym(terms: list[str], keys: list[tuple], i: int, alive: list[bool]) -> bool:
    groups = synonym_groups()
    mine = " ".join(keys[i])
    better = [j for j in range(i) if alive[j]]
    if mine in groups and any(groups.get(" ".join(keys[j])) == groups[mine] for j in better):
        return True
    if len(keys[i]) == 1:
        singles = {keys[j][0] for j in better if len(keys[j]) == 1}
        return _derived_from(keys[i][0], singles)
    return False


def _is_covered(keys: list[tuple], i: int, alive: list[bool]) -> bool:
    if len(keys[i]) < 2:
        return False
    words = {w for j in range(len(keys)) if alive[j] and j != i for w in keys[j]}
    return set(keys[i]) <= words


def redundancy(terms: list[str]) -> Redundancy:
    """Which terms of a list repeat others (measured on the list as it is; nothing is removed)."""
    keys = [lemmas(t) for t in terms]
    alive = [True] * len(terms)
    out = Redundancy()
    for i, term in enumerate(terms):
        if _is_twin(keys, i):
            out.twins.append(term)
        elif _is_contained(keys, i, alive):
            out.contained.append(term)
        elif _is_synonym(terms, keys, i, alive):
            out.synonyms.append(term)
        elif _is_covered(keys, i, alive):
            out.covered.append(term)
    return out


def order_keywords(terms: list[str], content_text: str) -> list[str]:
    """Stable re-order: terms whose words all appear in the content (prompt, title, description) first, then colours,
    then other terms (related words, an LLM's extra words), then broad filler (category generics, orientation)."""
    content = {singular(w) for w in re.findall(r"[\w'-]+", content_text.lower())}
    generic = {g for words in GENERIC_KEYWORDS.values() for g in words} | ORIENTATION_AND_LIGHT

    def rank(term: str) -> int:
        words = lemmas(term)
        if words and set(words) <= content:
            return 0
        if term in COLOURS:
            return 1
        if term in generic:
            return 3
        return 2

    return sorted(terms, key=rank)


def budget_keywords(terms: list[str], budget: int) -> list[str]:
    """At most `budget` terms in their order; twins and contained phrases always go, then (only while over budget)
    near-synonyms, then covered phrases, each lowest-ranked first; then the tail is cut."""
    keys = [lemmas(t) for t in terms]
    alive = [bool(k) for k in keys]
    for i in range(len(terms)):
        if alive[i] and _is_twin([k if alive[j] else () for j, k in enumerate(keys)], i):
            alive[i] = False
    for i in reversed(range(len(terms))):
        if alive[i] and _is_contained(keys, i, alive):
            alive[i] = False
    for test in (lambda i: _is_synonym(terms, keys, i, alive), lambda i: _is_covered(keys, i, alive)):
        for i in reversed(range(len(terms))):
            if sum(alive) <= budget:
                break
            if alive[i] and test(i):
                alive[i] = False
    kept = [t for t, a in zip(terms, alive) if a]
    return kept[:max(0, budget)]
