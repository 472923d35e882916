"""The idea's language: Indonesian ideas are put into English before the Whisperer's LLM sees them.

An instruction alone does not do it: Qwen2.5-Coder-1.5B answered "matahari terbit di atas gunung" in Indonesian.
So the idea is detected and translated word by word with the glossary the Metadata Writer uses too
(`rezcty_core.common.language`, `data/metadata/id_en.txt`), with its prepositions kept ("kucing di bawah hujan"
-> "cat under rain"). Unknown words stay as they are, so a name or an English word in the idea survives. The
LLM then expands an English idea, whatever model it is, the 135M SmolLM2 included.
"""
from __future__ import annotations

from rezcty_core.common.language import detect_language, translate_indonesian


def english_idea(idea: str) -> tuple[str, str | None]:
    """(the idea in English, a note when it was translated)."""
    if detect_language(idea) != "id":
        return idea, None
    english = translate_indonesian(idea, prepositions=True)
    if not english.strip():
        return idea, None
    return english, f"Indonesian idea translated with data/metadata/id_en.txt: '{idea}' -> '{english}'"
