"""The judge's LLM path with tiny real models: one overfitted to answer valid JSON, one random that is held to
the verdict schema by constrained decoding (valid on the first attempt)."""
from __future__ import annotations

import json

import pytest
from fixtures import qc_synth
from fixtures.tiny_judge_llm import JUDGE_ANSWER, tiny_judge_llm_dir
from fixtures.tiny_llm import tiny_llm_dir
from PIL import Image

from harness import link_model
from rezcty_core.llm import model as core_llm
from rezcty_core.qc.batch import judge_batch
from rezcty_core.qc.profiles import load_profile


@pytest.fixture(scope="module")
def small_profile():
    p = load_profile("adobe_stock")
    p["checks"]["resolution_min"]["enabled"] = False
    return p


def test_core_valid_and_unparseable_replies(small_profile):
    clean = qc_synth.clean_image(300, 320, 240)
    judge = core_llm.load_llm(tiny_judge_llm_dir(), keep_loaded=False)
    [entry] = judge_batch([clean], small_profile, llm=judge)
    assert entry["llm"]["valid"] and entry["llm"]["verdict"] == JUDGE_ANSWER["verdict"]
    assert entry["llm"]["reasons"] == [] and entry["llm"]["saw_image"] is False
    assert entry["llm"]["score"] == 20.0  # a reject without a score counts 20
    # veto: measurements pass, the LLM rejects -> reject, score mixes both
    assert entry["technical_score"] > 0 and entry["verdict"] == "reject" and entry["reasons"] == ["llm_reject"]
    assert entry["score"] == pytest.approx(0.5 * entry["technical_score"] + 0.5 * 20.0, abs=0.01)

    random_llm = core_llm.load_llm(tiny_llm_dir(), keep_loaded=False)
    [entry] = judge_batch([qc_synth.clean_image(301, 320, 240)], small_profile, llm=random_llm)
    # schema-constrained decoding: even the random untrained model answers a valid verdict on the first attempt
    assert entry["llm"]["valid"] is True and entry["llm"]["attempts"] == 1
    assert entry["llm"]["verdict"] in ("pass", "reject")
    assert entry["verdict"] == entry["llm"]["verdict"]  # the measurements pass: the LLM decides


def judge_graph(image: str, llm_name: str, profile: str = "adobe_stock") -> dict:
    return {
        "img": {"class_type": "LoadImage", "inputs": {"image": image}},
        "llm": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": llm_name, "adapter": "none",
                                                             "quantization": "none", "keep_loaded": False}},
        "judge": {"class_type": "RezctyQCJudge", "inputs": {"images": ["img", 0], "profile": profile,
                                                            "llm": ["llm", 0]}},
        "report": {"class_type": "PreviewAny", "inputs": {"source": ["judge", 2]}},
    }


def test_llm_path_through_the_server(comfy):
    valid = link_model(comfy, "LLM", tiny_judge_llm_dir(), "tiny-judge")
    invalid = link_model(comfy, "LLM", tiny_llm_dir(), "tiny-random-judge")
    profiles = comfy.base_dir / "user" / "rezcty" / "qc_profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "qc_llm_small.json").write_text(json.dumps(
        {"extends": "adobe_stock", "checks": {"resolution_min": {"min": 0.2}}}))
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("qc_llm_a.png", "qc_llm_b.png")):
        Image.fromarray(qc_synth.clean_image(310 + i, 640, 480)).save(comfy.input_dir / name)

    [entry] = json.loads(comfy.run(judge_graph("qc_llm_a.png", valid, "qc_llm_small")).text("report")[0])
    assert entry["llm"]["valid"] and entry["llm"]["status"] == "answered"
    assert entry["verdict"] == "reject" and entry["reasons"] == ["llm_reject"]

    [entry] = json.loads(comfy.run(judge_graph("qc_llm_b.png", invalid, "qc_llm_small")).text("report")[0])
    assert entry["llm"]["valid"] is True and entry["llm"]["attempts"] == 1  # constrained: first reply parses
    assert entry["verdict"] == entry["llm"]["verdict"]
