"""Whisperer Expand through the real ComfyUI server: schema, triggers, seeds, caching, lists, images, errors."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fixtures.tiny_llm import CACHE, _code_digest, tiny_llm_dir, write_embedding

from harness import link_model, sd15_graph
from rezcty_core.sd.clip_tokens import count_clip_tokens

TRIGGERS = "rezcty_style, rezcty_structure"


def whisper_graph(base: str, prompt: str, seed: int = 1, adapter: str = "none", max_new_tokens: int = 16,
                  trigger_words: str = TRIGGERS, temperature: float = 0.75, **extra) -> dict:
    return {
        "1": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": base, "adapter": adapter,
                                                          "quantization": "none", "keep_loaded": True}},
        "2": {"class_type": "RezctyWhispererExpand", "inputs": {
            "llm": ["1", 0], "prompt": prompt, "trigger_words": trigger_words, "seed": seed, "temperature": temperature,
            "top_p": 0.95, "top_k": 50, "max_new_tokens": max_new_tokens, **extra}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }


@pytest.fixture(scope="module")
def tiny_base(comfy) -> str:
    return link_model(comfy, "LLM", tiny_llm_dir(), "tiny-llama-whisperer")


def prompts(result) -> list[str]:
    return result.text("3")


def test_schema_matches_the_contract(comfy):
    info = comfy.object_info("RezctyWhispererExpand")["RezctyWhispererExpand"]
    required = info["input"]["required"]
    assert list(required) == ["llm", "prompt", "trigger_words", "seed", "temperature", "top_p", "top_k",
                              "max_new_tokens"]
    assert required["llm"][0] == "REZCTY_LLM" and required["prompt"][1]["multiline"] is True
    assert required["trigger_words"][1]["default"] == TRIGGERS
    assert required["temperature"][1]["default"] == 0.75 and required["top_p"][1]["default"] == 0.95
    assert required["top_k"][1]["default"] == 50
    optional = info["input"]["optional"]
    assert optional["image_embedding"][0] == "REZCTY_EMBEDDING" and optional["keep_within_77"][0] == "BOOLEAN"
    assert info["output"] == ["STRING"] and info["output_is_list"] == [True]
    assert info["category"].startswith("rezcty")


def test_triggers_once_at_end_same_seed_same_text_after_free(comfy, tiny_base):
    first = comfy.run(whisper_graph(tiny_base, "a lighthouse on a cliff", seed=11))
    [text] = prompts(first)
    assert text.endswith(", rezcty_style, rezcty_structure") and "\n" not in text
    assert text.count("rezcty_style") == 1 and text.count("rezcty_structure") == 1
    shown = " ".join(first.text("2"))  # the node's own display: token count + prompt
    assert f"[{count_clip_tokens(text)} CLIP tokens" in shown and text in shown

    again = comfy.run(whisper_graph(tiny_base, "a lighthouse on a cliff", seed=11))
    assert "2" in again.cached_nodes()  # nothing changed: ComfyUI reuses the result
    assert prompts(again) == [text]

    comfy.free()
    # /free only raises a flag; the worker drops its cache after the next item, so run a trivial one first
    comfy.run({"1": {"class_type": "PrimitiveString", "inputs": {"value": "flush"}},
               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    fresh = comfy.run(whisper_graph(tiny_base, "a lighthouse on a cliff", seed=11))
    assert "2" not in fresh.cached_nodes() and "2" in fresh.executed_nodes()
    assert prompts(fresh) == [text]

    other = comfy.run(whisper_graph(tiny_base, "a lighthouse on a cliff", seed=12))
    assert "2" in other.executed_nodes() and "1" in other.cached_nodes()  # only the seed changed
    [other_text] = prompts(other)
    assert other_text != text and other_text.endswith(", rezcty_style, rezcty_structure")


def test_several_ideas_give_several_prompts(comfy, tiny_base):
    ideas = "a lighthouse on a cliff\n\n   \na bowl of ramen\nan astronaut on a horse\n"
    result = comfy.run(whisper_graph(tiny_base, ideas, seed=5, trigger_words="rezcty_style rezcty_structure"))
    texts = prompts(result)
    assert len(texts) == 3
    for text in texts:
        assert text.endswith(", rezcty_style rezcty_structure") and text.count("rezcty_style") == 1
    assert result.text("2")[0].count("CLIP tokens") == 3


def test_keep_within_77_and_fallback_are_visible(comfy, tiny_base):
    long = comfy.run(whisper_graph(tiny_base, "a lantern festival", seed=2, max_new_tokens=160, keep_within_77=True))
    [text] = prompts(long)
    assert count_clip_tokens(text) <= 75 and text.endswith(TRIGGERS)
    # a one-token answer is never a prompt: retries, then the idea + triggers with a warning on the node
    fallback = comfy.run(whisper_graph(tiny_base, "a red fox in snow", seed=3, max_new_tokens=1))
    assert prompts(fallback) == ["a red fox in snow, rezcty_style, rezcty_structure"]
    assert "FALLBACK" in fallback.text("2")[0] and "warning:" in fallback.text("2")[0]


def test_empty_prompt_is_a_clear_error(comfy, tiny_base):
    err = comfy.run_error(whisper_graph(tiny_base, "  \n\n  "))
    assert "prompt is empty" in err and "one short idea per line" in err


def test_image_embedding_without_a_projector_is_a_clear_error(comfy, tiny_base):
    graph = whisper_graph(tiny_base, "a knight")
    graph["10"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    graph["11"] = {"class_type": "RezctyDINOv2Loader", "inputs": {"model": "embedded: dinov2-small", "device": "cpu",
                                                                  "dtype": "fp32"}}
    graph["12"] = {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["11", 0], "image": ["10", 0],
                                                                 "pooling": "cls", "use_cache": False}}
    graph["2"]["inputs"]["image_embedding"] = ["12", 0]
    err = comfy.run_error(graph)
    assert "has no projector" in err and "disconnect image_embedding" in err


def eye_matched_adapter() -> Path:
    """A whisperer adapter on the tiny base, trained by the real `training.train_adapter` on embeddings that
    claim the embedded DINOv2-small eye, so the server's DINOv2 Embed output is accepted. A high projector
    learning rate for 3 steps makes the projector large enough that the image visibly steers the tiny model."""
    import torch

    from rezcty_core.eye.dinov2 import Dino, resolve_model_path
    from training import train_adapter

    dino = Dino(resolve_model_path("embedded"))
    path = CACHE / f"tiny_adapter_whisperer_dinov2s_{_code_digest('whisperer-node-eye', dino.identity)}"
    if (path / "rezcty_adapter.json").is_file():
        return path
    data = path.with_name(path.name + "_data")
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(2, dino.dim, generator=gen)
    lines = []
    for i in range(6):
        family, rel = i % 2, f"embeddings/e{i}.safetensors"
        write_embedding(data / rel, centers[family] + 0.1 * torch.randn(dino.dim, generator=gen),
                        model=dino.name, model_hash=dino.identity)
        phrase = ["moonlit silver armor", "golden desert dunes"][family]
        lines.append(json.dumps({"input_text": "a knight", "output_text": f"a knight, {phrase}, rezcty_style",
                                 "image_embedding_path": rel}))
    (data / "dataset.jsonl").write_text("\n".join(lines) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    code = train_adapter.main([
        "--data", str(data / "dataset.jsonl"), "--base-model", str(tiny_llm_dir()), "--out", str(tmp),
        "--specialist", "whisperer", "--max-steps", "3", "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8",
        "--lr", "1e-2", "--projector-lr", "0.2", "--eval-generate", "0", "--eval-fraction", "0",
        "--no-gradient-checkpointing", "--save-every", "1000"])
    assert code == 0, "train_adapter failed"
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def test_image_embedding_from_dinov2_node_steers_a_trained_adapter(comfy, tiny_base):
    adapter = link_model(comfy, "rezcty_adapters", eye_matched_adapter(), "whisperer_tiny_dinov2s")

    def run(color: int) -> str:
        graph = whisper_graph(tiny_base, "a knight", seed=4, adapter=adapter, max_new_tokens=24)
        graph["10"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                              "color": color}}
        graph["11"] = {"class_type": "RezctyDINOv2Loader", "inputs": {"model": "embedded: dinov2-small",
                                                                      "device": "cpu", "dtype": "fp32"}}
        graph["12"] = {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["11", 0], "image": ["10", 0],
                                                                     "pooling": "cls", "use_cache": False}}
        graph["2"]["inputs"]["image_embedding"] = ["12", 0]
        [text] = prompts(comfy.run(graph))
        assert text.endswith(", rezcty_style, rezcty_structure")
        return text

    # the tiny random base is too flat for the image to flip a sampled token (its next-token logits do move:
    # test_whisperer.py checks that); here the embedding from the real DINOv2 node is accepted and used
    dark = run(0x000000)
    assert dark == run(0x000000)


def test_embedded_smollm2_expands_distinct_ideas(comfy):
    ideas = ["a lighthouse on a cliff", "a bowl of ramen"]
    result = comfy.run(whisper_graph("embedded: SmolLM2-135M-Instruct", "\n".join(ideas), seed=7, max_new_tokens=24))
    texts = prompts(result)
    assert len(texts) == 2 and texts[0] != texts[1]
    shown = result.text("2")[0]
    for idea, text in zip(ideas, texts):
        assert text.endswith(", rezcty_style, rezcty_structure") and text.count("rezcty_style") == 1
        assert text != f"{idea}, {TRIGGERS}" or "FALLBACK" in shown  # a fallback is always announced
    assert shown.count("FALLBACK") < 2  # the plain embedded model does expand (few-shot examples)


def test_a_seeded_run_leaves_the_servers_global_rng_as_it_found_it(comfy, tiny_base, tiny_sd15):
    """Read torch's global RNG (CPU, and CUDA where present) inside the server before and after the Whisperer,
    with the test-only probe node of tests/fixtures/rng_probe. A core KSampler between two probes is the control:
    it seeds the global RNG, and the probe sees it."""
    def probe(node_id: str, text, after=None) -> dict:
        inputs = {"text": text, **({"after": after} if after else {})}
        return {node_id: {"class_type": "RezctyTestRngProbe", "inputs": inputs},
                f"{node_id}_show": {"class_type": "PreviewAny", "inputs": {"source": [node_id, 1]}}}

    graph = {"1": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": tiny_base, "adapter": "none",
                                                               "quantization": "none", "keep_loaded": False}},
             "2": {"class_type": "RezctyWhispererExpand", "inputs": {
                 "llm": ["1", 0], "prompt": ["before", 0], "trigger_words": TRIGGERS, "seed": 77,
                 "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 12}},
             **probe("before", "a lighthouse on a cliff"), **probe("after", ["2", 0])}
    result = comfy.run(graph)
    [before], [after] = result.text("before_show"), result.text("after_show")
    assert {"2", "before", "after"} <= result.executed_nodes()
    assert after == before, "the Whisperer (load, sampling, unload) changed the server's global RNG"

    control = {**{k: v for k, v in sd15_graph(tiny_sd15, seed=123).items() if k != "7"},
               **probe("before", "a red cube"), **probe("after", "x", after=["5", 0])}
    control["2"]["inputs"]["text"] = ["before", 0]  # the sampler runs after the first probe
    result = comfy.run(control)
    assert result.text("after_show") != result.text("before_show")  # KSampler's torch.manual_seed is seen
