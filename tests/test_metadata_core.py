"""The metadata core on its own: prompt cleaning, blocklists, rules layer, keywords, categories, QC mapping."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rezcty_core.common import blocklists, language
from rezcty_core.common.blocklists import load_blocklist
from rezcty_core.stock import categories, drafting, image_facts, prompt_clean, provenance, qc_report, rules

TRAP_PROMPT = (
    "masterpiece, best quality, ultra detailed, 8k, (a lone knight:1.3) standing in a misty pine forest, "
    "art by greg rutkowski and alphonse mucha, trending on artstation, rezcty_style, rezcty_structure, "
    "<lora:rezcty_style:0.8>, embedding:rezcty_genius, [red:blue:0.5] cape, holding a coca-cola bottle, "
    "wearing nike boots, batman logo on the shield, portrait of emma watson, vector illustration, generative ai, "
    "midjourney, photorealistic, cinematic lighting, ((glowing lantern)), {autumn|winter} leaves, hdr --ar 16:9"
)
# Everything here must be gone from every title, description and keyword.
FORBIDDEN = ["masterpiece", "quality", "detailed", "8k", "rutkowski", "mucha", "artstation", "rezcty", "lora",
             "genius", "coca", "cola", "nike", "batman", "emma watson", "vector", "illustration", "generative",
             "midjourney", "photorealistic", "cinematic", "hdr", "1.3", "0.8", "--ar", "16:9", "(", ")", "[", "]",
             "<", ">", "{", "}", "|", "_", "art by", "trending"]


def words_of(meta: rules.StockMetadata) -> str:
    return "\n".join([meta.title, meta.description, *meta.keywords]).lower()


def assert_adobe_rules(meta: rules.StockMetadata) -> None:
    assert 0 < len(meta.title) <= 70 and "," not in meta.title and "\n" not in meta.title
    assert meta.title[0].isupper()
    assert 0 < len(meta.description) <= 200
    assert 15 <= len(meta.keywords) <= 49, meta.keywords
    assert len({k.lower() for k in meta.keywords}) == len(meta.keywords)
    for k in meta.keywords:
        assert k == k.lower() and "," not in k and len(k.encode()) <= 64 and k.strip() == k
    assert meta.category in categories.ADOBE_CATEGORIES


def test_trap_prompt_leaves_nothing_forbidden():
    pixels = np.full((48, 64, 3), (40, 90, 40), np.uint8)
    meta = rules.build_metadata(TRAP_PROMPT, pixels)
    text = words_of(meta)
    leaked = [w for w in FORBIDDEN if w in text]
    assert leaked == [], (leaked, meta)
    assert_adobe_rules(meta)
    assert "knight" in meta.keywords[:5] and "forest" in meta.keywords[:10]
    assert meta.title.startswith("Lone knight")
    removed = {r["category"] for r in meta.removed_terms}
    assert {"artists", "brands", "triggers", "style_quality", "fictional_characters", "real_people",
            "generative_ai", "content_type"} <= removed


def test_common_words_that_look_like_brands_survive():
    clean = prompt_clean.clean_prompt("an apple on a wooden table, a jaguar in the amazon rainforest, shell on the beach")
    for word in ("apple", "jaguar", "amazon", "shell"):
        assert word in clean.text
    assert "apple" not in load_blocklist().find("apple logo")[0].term.replace("apple logo", "")


def test_prompt_syntax_is_stripped():
    text = prompt_clean.strip_prompt_syntax(
        "(sunset:1.4), [[dark clouds]], \\(escaped\\), {red|blue} sky, [cat:dog:0.3], <lora:x:0.7>, "
        "embedding:foo, boat::2, a BREAK b --v 5.2 --ar 3:2\nNegative prompt: ugly, blurry\nSteps: 20, Seed: 1")
    assert "1.4" not in text and "lora" not in text and "foo" not in text and "ugly" not in text
    assert "--" not in text and "3:2" not in text and "Steps" not in text and "::" not in text
    for word in ("sunset", "dark clouds", "escaped", "red", "blue", "cat", "dog", "boat"):
        assert word in text


def test_rules_layer_enforces_every_limit():
    blocklist = load_blocklist()
    long_title = "A, very, long title about a quiet harbor, full of fishing boats with nike sails " * 4
    draft = drafting.Draft(
        title=long_title, description="Harbor at dawn. " * 40,
        keywords=["Harbor", "harbor", "BOATS", "boats, sea", "nike", "rezcty_style", "greg rutkowski", "vector",
                  "a", "12", "x" * 70, "fishing boat in a small and very quiet harbor at dawn"]
        + [f"keyword{i}" for i in range(80)],
        source="test")
    clean = prompt_clean.clean_prompt("a quiet harbor with fishing boats")
    meta = rules.apply_rules(draft, clean, None, blocklist)
    assert_adobe_rules(meta)
    assert "nike" not in meta.title.lower()
    assert meta.keywords[:3] == ["harbor", "boats", "sea"]
    assert len(meta.keywords) == 49
    for bad in ("nike", "rezcty_style", "greg rutkowski", "vector", "a", "12"):
        assert bad not in meta.keywords


def test_short_prompt_still_gets_15_relevant_keywords():
    meta = rules.build_metadata("a red cube on a table", np.full((32, 32, 3), 200, np.uint8))
    assert_adobe_rules(meta)
    assert meta.keywords[:2] == ["cube", "red cube"]


def test_indonesian_prompt_becomes_english_metadata():
    prompt = "pemandangan gunung saat matahari terbit dengan kabut tebal, sawah hijau dan petani, rezcty_style"
    clean = prompt_clean.clean_prompt(prompt)
    assert clean.language == "id"
    meta = rules.build_metadata(prompt, np.full((32, 32, 3), 120, np.uint8))
    assert_adobe_rules(meta)
    assert meta.title == "Mountain landscape with sunrise"
    for word in ("mountain", "sunrise", "fog", "rice field", "farmer"):
        assert word in meta.keywords
    for word in ("dengan", "saat", "dan", "rezcty_style"):
        assert word not in words_of(meta)
    assert meta.category == 11


def test_english_prompt_is_not_translated():
    assert language.detect_language("a cat sitting on the roof of a house at night") == "en"
    assert language.translate_indonesian("kucing hitam kecil") == "small black cat"


def test_one_translator_for_keywords_and_ideas():
    """Metadata keeps noun phrases; the Whisperer's idea keeps its prepositions; adjectives go first in both."""
    idea = "kucing hitam kecil di bawah hujan"
    assert language.detect_language(idea) == "id"
    assert language.translate_indonesian(idea) == "small black cat, rain"
    assert language.translate_indonesian(idea, prepositions=True) == "small black cat under rain"
    assert language.translate_indonesian("matahari terbit di atas gunung") == "sunrise, mountain"  # no stray marks
    assert language.translate_indonesian("Pemandangan gunung, danau biru dan pohon hijau") == \
        "mountain landscape, blue lake, green tree"


@pytest.mark.parametrize("prompt,expected", [
    ("a golden retriever puppy playing in the grass", 1),
    ("gothic cathedral facade with stained glass windows", 2),
    ("cup of espresso coffee on a saucer", 4),
    ("bowl of fresh fruit salad with strawberries", 7),
    ("snowy mountain peaks above a glacier lake", 11),
    ("pink tulips and roses in a garden", 14),
    ("robot arm assembling a circuit board, futuristic technology", 19),
    ("red vintage car on a highway", 20),
    ("seamless geometric pattern", 8),
])
def test_auto_category(prompt, expected):
    assert rules.build_metadata(prompt).category == expected


def test_category_choices_and_parsing():
    choices = categories.category_choices()
    assert choices[0] == "auto" and len(choices) == 22 and choices[7] == "7 Food"
    assert categories.parse_category("7 Food") == 7 == categories.parse_category("Food") == categories.parse_category(7)
    assert categories.parse_category("auto") is None
    with pytest.raises(ValueError, match="unknown category"):
        categories.parse_category("Cars")
    assert rules.build_metadata("a cat", category="21 Travel").category == 21


def test_user_blocklist_extends_and_allows(tmp_path, monkeypatch):
    (tmp_path / "brands.txt").write_text("# my own\nacme widget\n")
    (tmp_path / "allow.txt").write_text("nike\n")
    assert not load_blocklist().is_blocked("an acme widget")
    monkeypatch.setenv(blocklists.ENV_DIRS, str(tmp_path))
    bl = load_blocklist()
    assert bl.is_blocked("an ACME-widget on a desk")
    assert not bl.is_blocked("nike")
    meta = rules.build_metadata("an acme widget on a desk, lamp, books", blocklist=bl)
    assert "acme" not in words_of(meta)


def test_blocklist_files_are_well_formed():
    for path in sorted(blocklists.BLOCKLIST_DIR.glob("*.txt")):
        terms = blocklists.read_terms(path)
        assert path.stem == "allow" or len(terms) >= 10, path
        assert all(t == t.strip() and "," not in t for t in terms), path
    lists = load_blocklist().lists
    for name in ("greg rutkowski", "alphonse mucha", "artgerm", "wlop", "studio ghibli", "thomas kinkade"):
        assert name in lists["artists"]
    for name in ("coca-cola", "nike", "disney", "lego", "iphone", "starbucks"):
        assert name in lists["brands"]


def test_image_facts():
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :100] = (220, 30, 30)
    pixels[:, 100:] = (20, 60, 220)
    facts = image_facts.describe_image(pixels)
    assert (facts.width, facts.height, facts.orientation) == (200, 100, "horizontal")
    assert sorted(facts.colors) == ["blue", "red"]


def test_qc_entries_by_index_or_passed_subset():
    report = json.dumps([{"index": 0, "verdict": "pass"}, {"index": 1, "verdict": "reject", "reasons": ["blurry"]},
                         {"index": 2, "verdict": "pass"}])
    full = qc_report.qc_entries(report, 3)
    assert [e["verdict"] for e in full] == ["pass", "reject", "pass"]
    subset = qc_report.qc_entries(report, 2)
    assert [e["index"] for e in subset] == [0, 2]
    with pytest.raises(ValueError, match="4 images arrived"):
        qc_report.qc_entries(report, 4)
    with pytest.raises(ValueError, match="not valid JSON"):
        qc_report.qc_entries("{oops", 1)
    assert qc_report.qc_entries("", 2) == [None, None]


def test_generation_params_from_api_graph():
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "2": {"class_type": "RezctyDualLoraLoader", "inputs": {"model": ["1", 0], "style_lora": "style.safetensors",
                                                                "structure_lora": "none", "style_strength_model": 0.85}},
        "5": {"class_type": "KSampler", "inputs": {"seed": 1234, "steps": 20, "cfg": 7.0, "model": ["2", 0]}},
    }
    params = provenance.generation_params(graph)
    assert params["seeds"] == [1234]
    assert [(m["folder"], m["name"]) for m in params["models"]] == [("checkpoints", "sd15.safetensors"),
                                                                     ("loras", "style.safetensors")]
    assert params["nodes"]["5"]["steps"] == 20 and params["nodes"]["2"]["style_strength_model"] == 0.85


def test_title_never_ends_on_a_connector():
    meta = rules.build_metadata("a lighthouse on a cliff by greg rutkowski")
    assert meta.title == "Lighthouse on a cliff"
    assert not re.search(r"\b(by|of|with|and|the|a)$", meta.title)
