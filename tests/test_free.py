"""ComfyUI's /free also releases rezcty's cached models, so each factory line gets the whole device."""
from __future__ import annotations

import time

from fixtures.tiny_llm import tiny_llm_dir

from harness import link_model

RELEASED = "rezcty: released cached DINOv2 and LLM models"


def test_free_releases_rezcty_models(comfy):
    base = link_model(comfy, "LLM", tiny_llm_dir(), "tiny-llama-free")
    comfy.run({
        "1": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": base, "adapter": "none",
                                                          "quantization": "none", "keep_loaded": True}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    })
    before = comfy.log_text().count(RELEASED)
    comfy.free()
    # the unload flag is acted on by the prompt worker: give it a prompt to pick it up
    comfy.run({"1": {"class_type": "PrimitiveString", "inputs": {"value": "tick"}},
               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    # the worker acts on the flag after that prompt's result is published: wait for the event
    deadline = time.time() + 60
    while comfy.log_text().count(RELEASED) == before and time.time() < deadline:
        time.sleep(0.2)
    assert comfy.log_text().count(RELEASED) == before + 1, comfy.log_tail(30)
