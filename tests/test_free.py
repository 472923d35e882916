"""ComfyUI's memory manager owns rezcty's models (nodes/host.py): its own unload gives their memory back, a list
of ideas loads the LLM once, keep_loaded off frees it when the prompt ends.

Memory is read where it lives: VmRSS of the server process (/proc/<pid>/status). The server runs `--cpu`, where
an unload cannot offload anywhere, so it drops the weights: the RSS falls by (about) their size.
"""
from __future__ import annotations

import time
from pathlib import Path

from fixtures.tiny_llm import tiny_llm_dir
from PIL import Image

from harness import link_model
from rezcty_core.common.paths import embedded_dir

SMOL = "embedded: SmolLM2-135M-Instruct"
RELEASED_SHARE = 0.75  # of the weight files' bytes; the rest is slack for what else the process frees or grows


def rss_bytes(comfy) -> int:
    """Resident memory of the ComfyUI server process (`./rezcty comfy` execs it: the child's pid is its pid)."""
    for line in Path(f"/proc/{comfy.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def unload_models(comfy) -> None:
    """The web page's "Unload Models" button: `/free` with `unload_models` only (the node cache stays)."""
    comfy.post("/free", {"unload_models": True})


def assert_unload_gives_back(comfy, model: str, dropped_line: str, timeout: float = 120) -> None:
    """Unload, wait until the prompt worker has acted on the flag (the model says it dropped its weights, once
    more than before), then assert the server's RSS fell by most of the model's weight files."""
    weights = weight_bytes(embedded_dir() / model)
    loaded = rss_bytes(comfy)
    before = comfy.log_text().count(dropped_line)
    unload_models(comfy)
    deadline = time.time() + timeout
    while comfy.log_text().count(dropped_line) == before and time.time() < deadline:
        time.sleep(0.25)
    assert comfy.log_text().count(dropped_line) > before, comfy.log_tail(30)
    after = rss_bytes(comfy)
    assert loaded - after >= RELEASED_SHARE * weights, (
        f"RSS {loaded / 2**20:.0f} -> {after / 2**20:.0f} MiB after Unload Models; {model}'s weights are "
        f"{weights / 2**20:.0f} MiB\n{comfy.log_tail(30)}")


def test_unload_models_gives_the_llm_memory_back(comfy):
    graph = {
        "llm": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": SMOL, "adapter": "none",
                                                             "quantization": "none", "keep_loaded": True}},
        "w": {"class_type": "RezctyWhispererExpand", "inputs": {
            "llm": ["llm", 0], "prompt": "a lighthouse", "trigger_words": "rezcty_style", "seed": 1,
            "temperature": 0.75, "top_p": 0.95, "top_k": 50, "max_new_tokens": 4, "batch_size": 1}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["w", 0]}},
    }
    comfy.run(graph)
    assert_unload_gives_back(comfy, "SmolLM2-135M-Instruct", "LLM weights dropped: SmolLM2-135M-Instruct")


def test_unload_models_gives_the_dinov2_memory_back(comfy):
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (120, 90, 60)).save(comfy.input_dir / "free_dino.png")
    graph = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "free_dino.png"}},
        "dino": {"class_type": "RezctyDINOv2Loader", "inputs": {"model": "embedded: dinov2-small", "device": "auto",
                                                                 "dtype": "auto"}},
        "embed": {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["dino", 0], "image": ["img", 0],
                                                                 "pooling": "cls", "use_cache": False}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["embed", 0]}},
    }
    comfy.run(graph)
    assert_unload_gives_back(comfy, "dinov2-small", "DINOv2 weights dropped: dinov2-small")
    # the loader's output stays in ComfyUI's node cache: its next use reads the weights again
    loads = comfy.log_text().count("DINOv2 weights loaded from disk: dinov2-small")
    Image.new("RGB", (64, 48), (20, 90, 160)).save(comfy.input_dir / "free_dino.png")
    result = comfy.run(graph)
    assert "dino" in result.cached_nodes() and "embed" not in result.cached_nodes()
    assert comfy.log_text().count("DINOv2 weights loaded from disk: dinov2-small") == loads + 1


def test_eight_ideas_as_a_list_load_the_llm_once_and_keep_loaded_off_frees_it_at_the_end(comfy):
    name = link_model(comfy, "LLM", tiny_llm_dir(), "tiny-llama-list")
    ideas = ["a knight", "a teapot", "a red bicycle", "a lighthouse", "a cat in the rain", "a city at night",
             "a bowl of fruit", "a forest path"]
    graph = {f"i{k}": {"class_type": "PrimitiveString", "inputs": {"value": idea}} for k, idea in enumerate(ideas)}
    graph.update({
        "list": {"class_type": "CreateList", "inputs": {f"inputs.input{k}": [f"i{k}", 0] for k in range(len(ideas))}},
        "llm": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": name, "adapter": "none",
                                                             "quantization": "none", "keep_loaded": False}},
        "w": {"class_type": "RezctyWhispererExpand", "inputs": {
            "llm": ["llm", 0], "prompt": ["list", 0], "trigger_words": "rezcty_style", "seed": 1,
            "temperature": 0.75, "top_p": 0.95, "top_k": 50, "max_new_tokens": 4, "batch_size": 1}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["w", 0]}},
    })
    loaded_line = f"LLM weights loaded from disk: {name} "
    dropped_line = f"LLM weights dropped: {name}"
    log = comfy.log_text()
    loads, drops = log.count(loaded_line), log.count(dropped_line)
    result = comfy.run(graph)
    texts = result.text("show")
    assert len(texts) == len(ideas)  # the Whisperer ran once per item of the list
    log = comfy.log_text()
    assert log.count(loaded_line) == loads + 1, comfy.log_tail(40)  # once for all eight items
    assert log.count(dropped_line) == drops + 1, comfy.log_tail(40)  # keep_loaded off: freed when the prompt ended
