"""The judge-LLM path of the Metadata Writer with real tiny transformers models (no mocks).

Two models go through `LoadedLLM.generate_json`:
- the untrained tiny Llama of `fixtures/tiny_llm.py` is held to the metadata JSON schema by constrained
  decoding, so its first reply parses and is used, the rules layer still running last;
- the tiny Llama of `fixtures/tiny_judge_llm.py` overfitted to answer METADATA_ANSWER, a reply that
  passes `validate_metadata_reply` but carries a brand ("nike"), a trigger ("rezcty_style") and too
  few keywords: its draft is used (source "llm ...") and the rules layer cleans it, in the core and
  through the real ComfyUI server (LLM Loader -> Metadata Writer -> CSV row and sidecar).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures.tiny_judge_llm import METADATA_ANSWER, METADATA_PROMPTS, tiny_metadata_llm_dir
from fixtures.tiny_llm import tiny_llm_dir
from test_metadata import writer_graph

from harness import link_model
from rezcty_core.common.blocklists import load_blocklist
from rezcty_core.llm import model as core_llm
from rezcty_core.stock import agency_csv, drafting, image_facts, limits, prompt_clean, rules
from rezcty_core.stock.agencies import load_agency

PROMPT = "white sneakers on a wooden bench, rezcty_style"
# the trained answer after the rules layer: brand and trigger gone, the LLM's own words first
LLM_TITLE = "Sneakers on a bench"
LLM_KEYWORDS = ["sneakers", "bench", "wood"]


def test_untrained_llm_answers_schema_valid_json_first_try():
    # schema-constrained decoding (rezcty_core/llm/constrained.py): the random untrained model cannot write
    # anything but a document of the metadata schema, so its first reply is used; the rules layer runs last
    llm = core_llm.load_llm(tiny_llm_dir(), keep_loaded=False)
    pixels = np.full((64, 96, 3), (120, 90, 60), np.uint8)
    clean = prompt_clean.clean_prompt(PROMPT)
    facts = image_facts.describe_image(pixels)
    draft = drafting.llm_draft(llm, clean, facts, seed=3, retries=0)  # one attempt is all it may take
    assert draft.source == "llm (1 attempt)", draft.notes
    assert draft.title.strip() and len(draft.keywords) >= 3
    meta = rules.apply_rules(draft, clean, facts, load_blocklist(), fallback=drafting.deterministic_draft(clean, facts))
    assert meta.title and 15 <= len(meta.keywords) <= 49
    assert not any("rezcty" in k for k in meta.keywords)


def test_judge_reply_schema():
    ok = drafting.validate_metadata_reply({"verdict": "PASS", "title": "Calm lake", "keywords": "lake, calm, water"})
    assert ok["verdict"] == "pass" and ok["keywords"] == ["lake", "calm", "water"]
    with pytest.raises(ValueError, match="title"):
        drafting.validate_metadata_reply({"verdict": "pass", "title": " ", "keywords": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="keywords"):
        drafting.validate_metadata_reply({"verdict": "pass", "title": "Lake", "keywords": ["lake"]})
    with pytest.raises(ValueError, match="verdict"):
        drafting.validate_metadata_reply({"title": "Lake", "keywords": ["lake", "calm", "water"]})


def test_constrained_greedy_equals_free_greedy():
    # a constrained decoder must let a model that already writes valid JSON of the schema write exactly what it
    # writes unconstrained (issue 21: the schema used to be compiled with its keys sorted, so xgrammar demanded
    # "category", "description", ... first and garbled the trained {"verdict", "title", "keywords"} reply)
    from fixtures.tiny_judge_llm import metadata_prompts

    from rezcty_core.llm import constrained
    from rezcty_core.llm.templates import build_messages
    from rezcty_core.stock import categories

    llm = core_llm.load_llm(tiny_metadata_llm_dir(), keep_loaded=False)
    schema = drafting.metadata_schema([f"{n} {name}" for n, name in categories.ADOBE_CATEGORIES.items()])
    compared = 0
    for text in metadata_prompts():
        chat = build_messages("judge", text, False)
        free = llm.generate_batch([chat], [0], do_sample=False, max_new_tokens=96)[0]
        try:
            drafting.validate_metadata_reply(json.loads(free))
        except ValueError:
            continue  # the property is about replies that are valid JSON of the schema already
        held = llm.generate_batch([chat], [0], do_sample=False, max_new_tokens=96,
                                  processors=[constrained.json_processor(llm, schema)])[0]
        assert held == free
        compared += 1
    assert compared >= 3  # the overfitted fixture writes METADATA_ANSWER for most of its training prompts


def assert_cleaned_llm_metadata(title: str, description: str, kws: list[str]) -> None:
    """The trained reply after the rules layer: the LLM's words kept, its brand and trigger gone."""
    assert title == LLM_TITLE
    assert kws[:3] == LLM_KEYWORDS
    everything = " ".join([title, description, *kws]).lower()
    assert "nike" not in everything and "rezcty" not in everything and "_" not in everything
    # the LLM gave 5 keywords (2 of them forbidden): the fallback fills up to Adobe's 15..49, unique, lower case
    assert limits.KEYWORDS_MIN <= len(kws) <= limits.KEYWORDS_MAX
    assert len(set(kws)) == len(kws) and all(k == k.lower() for k in kws)
    assert "lake" in kws  # from the deterministic fallback (the prompt), not from the LLM


def test_trained_llm_reply_is_used_and_cleaned_by_the_rules():
    llm = core_llm.load_llm(tiny_metadata_llm_dir(), keep_loaded=False)
    prompt, colour = METADATA_PROMPTS[1]  # "a calm lake at dawn, pine trees, mist": nothing like the answer
    pixels = np.full((64, 96, 3), colour, np.uint8)
    clean = prompt_clean.clean_prompt(prompt + ", rezcty_style")
    facts = image_facts.describe_image(pixels)
    draft = drafting.llm_draft(llm, clean, facts, seed=3, retries=0)
    assert draft.source.startswith("llm") and draft.source == "llm (1 attempt)"
    assert draft.notes == []
    assert draft.title == METADATA_ANSWER["title"]
    assert draft.keywords == [k.strip() for k in METADATA_ANSWER["keywords"].split(",")]
    fallback = drafting.deterministic_draft(clean, facts)
    meta = rules.apply_rules(draft, clean, facts, load_blocklist(), fallback=fallback)
    assert meta.source == draft.source
    assert_cleaned_llm_metadata(meta.title, meta.description, meta.keywords)
    # the LLM wrote no description: the fallback's, cleaned
    assert "lake" in meta.description.lower() and meta.description.endswith(".")
    assert not any("LLM reply unusable" in w for w in meta.warnings)
    assert 0 < len(meta.title) <= limits.TITLE_MAX and "," not in meta.title


def test_trained_llm_through_the_server(comfy):
    name = link_model(comfy, "LLM", tiny_metadata_llm_dir(), "tiny-metadata-judge")
    prompt = "a calm lake at dawn, pine trees, mist, rezcty_style"
    graph = writer_graph(prompt, prefix="llm/", csv_name="llm.csv", color=0x3C7850, extra={"llm": ["llm", 0]})
    graph["llm"] = {"class_type": "RezctyLLMLoader", "inputs": {"base_model": name, "adapter": "none",
                                                                 "quantization": "none", "keep_loaded": False}}
    result = comfy.run(graph)
    [entry] = json.loads(result.text("9")[0])
    assert entry["error"] is None
    assert entry["source"] == "llm (1 attempt)"
    assert_cleaned_llm_metadata(entry["title"], entry["description"], entry["keywords"])
    assert f"{LLM_TITLE} [" in result.ui("2")["text"][0] and "llm (1 attempt)" in result.ui("2")["text"][0]
    # the CSV row Adobe gets is the cleaned LLM draft
    [row] = agency_csv.read_series(load_agency("adobe_stock"), comfy.output_dir / "llm.csv")
    assert row["Filename"] == entry["filename"] and row["Title"] == LLM_TITLE
    assert row["Keywords"] == ", ".join(entry["keywords"]) and "nike" not in row["Keywords"]
    # the sidecar records which LLM wrote it
    sidecar = json.loads(comfy.output_file(entry).with_suffix(".json").read_text())
    assert sidecar["source"] == "llm (1 attempt)" and sidecar["reproducibility"]["llm"]["adapter"] is None
    assert sidecar["reproducibility"]["llm"]["base"]
