"""LLM Loader through the real ComfyUI server: combos, loading, adapters trained by the script, errors."""
from __future__ import annotations

import pytest
from fixtures.tiny_llm import tiny_adapter_dir, tiny_llm_dir

from harness import link_model


def loader_graph(base: str, adapter: str = "none", quantization: str = "none", keep_loaded: bool = True) -> dict:
    return {
        "1": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": base, "adapter": adapter,
                                                          "quantization": quantization, "keep_loaded": keep_loaded}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


@pytest.fixture(scope="module")
def tiny_models(comfy):
    base = link_model(comfy, "LLM", tiny_llm_dir(), "tiny-llama")
    other = link_model(comfy, "LLM", tiny_llm_dir(seed=1), "tiny-llama-other")
    seeing = link_model(comfy, "rezcty_adapters", tiny_adapter_dir("whisperer", images=True), "whisperer_tiny")
    judge = link_model(comfy, "rezcty_adapters", tiny_adapter_dir("judge", images=False), "judge_tiny")
    return {"base": base, "other": other, "seeing": seeing, "judge": judge}


def test_loader_schema_lists_models_and_contract_inputs(comfy, tiny_models):
    info = comfy.object_info("RezctyLLMLoader")["RezctyLLMLoader"]
    req = info["input"]["required"]
    assert list(req) == ["base_model", "adapter", "quantization", "keep_loaded"]
    bases = req["base_model"][1]["options"] if isinstance(req["base_model"][1], dict) and "options" in req["base_model"][1] else req["base_model"][0]
    assert "embedded: SmolLM2-135M-Instruct" in bases and "tiny-llama" in bases
    adapters = req["adapter"][1]["options"] if isinstance(req["adapter"][1], dict) and "options" in req["adapter"][1] else req["adapter"][0]
    assert adapters[0] == "none" and {"whisperer_tiny", "judge_tiny"} <= set(adapters)
    assert info["output"] == ["REZCTY_LLM"] and info["category"].startswith("rezcty")


def test_loader_loads_the_embedded_default(comfy):
    result = comfy.run(loader_graph("embedded: SmolLM2-135M-Instruct"))
    text = " ".join(result.text("2"))
    assert "base=SmolLM2-135M-Instruct" in text and "adapter=none" in text and "can_see=False" in text


def test_adapter_trained_by_the_script_loads_in_the_node(comfy, tiny_models):
    text = " ".join(comfy.run(loader_graph(tiny_models["base"], tiny_models["seeing"])).text("2"))
    assert "adapter=whisperer_tiny" in text and "specialist=whisperer" in text and "can_see=True" in text
    assert "eye=tiny-random-eye" in text
    judge = " ".join(comfy.run(loader_graph(tiny_models["base"], tiny_models["judge"], keep_loaded=False)).text("2"))
    assert "specialist=judge" in judge and "can_see=False" in judge


def test_mismatched_base_is_a_clear_error_and_8bit_loads_where_bitsandbytes_runs(comfy, tiny_models):
    err = comfy.run_error(loader_graph(tiny_models["other"], tiny_models["seeing"]))
    assert "trained on base model" in err and "tiny-llama-other" in err and "pick the base model" in err
    # probed, not assumed: bitsandbytes runs 8-bit on the CPU too (4-bit: tests/test_qlora_cpu.py)
    text = " ".join(comfy.run(loader_graph(tiny_models["base"], tiny_models["seeing"], quantization="8bit",
                                           keep_loaded=False)).text("2"))
    assert "quantization=8bit" in text and "can_see=True" in text


def test_a_quantization_that_cannot_run_says_why_and_what_to_pick():
    from rezcty_core.llm import device

    device._PROBES[("8bit", "cpu")] = "bitsandbytes cannot run 8bit on cpu (a test stands in for a missing kernel)"
    try:
        with pytest.raises(RuntimeError, match=r"quantization '8bit' cannot run here: .*; choose quantization "
                                               r"'4bit-nf4' or 'none'"):
            device.quantization_config("8bit", "cpu")
    finally:
        device._PROBES.pop(("8bit", "cpu"), None)
