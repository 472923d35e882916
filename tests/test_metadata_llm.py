"""The judge-LLM path of the Metadata Writer with a real tiny transformers model (no mocks).

The untrained tiny Llama of `fixtures/tiny_llm.py` answers garbage: the writer must go through
`LoadedLLM.generate_json`, see no valid reply, and fall back to the offline extractor with a
warning, the rules layer still running last. (A reply that passes validation is exercised by the
rules-layer tests in test_metadata_core.py with the same `Draft` the LLM path builds.)
"""
from __future__ import annotations

import numpy as np
import pytest
from fixtures.tiny_llm import tiny_llm_dir

from rezcty_core import llm as core_llm
from rezcty_core import metadata
from rezcty_core.blocklists import load_blocklist

PROMPT = "white sneakers on a wooden bench, rezcty_style"


def test_untrained_llm_falls_back_to_the_extractor():
    llm = core_llm.load_llm(tiny_llm_dir(), keep_loaded=False)
    pixels = np.full((64, 96, 3), (120, 90, 60), np.uint8)
    clean = metadata.clean_prompt(PROMPT)
    facts = metadata.describe_image(pixels)
    draft = metadata.llm_draft(llm, clean, facts, seed=3, retries=0)  # one attempt keeps the test short
    assert draft.source == "deterministic"
    assert any("LLM reply unusable after 1 attempts" in n for n in draft.notes)
    meta = metadata.apply_rules(draft, clean, facts, load_blocklist(), fallback=metadata.deterministic_draft(clean, facts))
    assert meta.title == "White sneakers on a wooden bench"
    assert "sneakers" in meta.keywords[:3] and 15 <= len(meta.keywords) <= 49
    assert any("LLM reply unusable" in w for w in meta.warnings)
    assert not any("rezcty" in k for k in meta.keywords)


def test_judge_reply_schema():
    ok = metadata.validate_metadata_reply({"verdict": "PASS", "title": "Calm lake", "keywords": "lake, calm, water"})
    assert ok["verdict"] == "pass" and ok["keywords"] == ["lake", "calm", "water"]
    with pytest.raises(ValueError, match="title"):
        metadata.validate_metadata_reply({"verdict": "pass", "title": " ", "keywords": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="keywords"):
        metadata.validate_metadata_reply({"verdict": "pass", "title": "Lake", "keywords": ["lake"]})
    with pytest.raises(ValueError, match="verdict"):
        metadata.validate_metadata_reply({"title": "Lake", "keywords": ["lake", "calm", "water"]})
