"""QLoRA for real on the CPU: the brief's recipe on the embedded SmolLM2 (NF4 + double quant, LoRA r32/alpha64/
dropout 0.05 on q,k,v,o,gate,up,down, the projector fully trained, gradient checkpointing), then the adapter loads
back through the real server's LLM Loader with quantization 4bit-nf4 and the Whisperer runs on it, seeing an image."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from harness import link_model
from rezcty_core.llm.adapter import read_adapter_config
from rezcty_core.llm.device import quantization_problem

TRIGGERS = "rezcty_style, rezcty_structure"
RECIPE_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def qlora_adapter(tmp_path_factory):
    from PIL import Image

    from training import precompute_dinov2, train_adapter

    if quantization_problem("4bit-nf4", "cpu"):
        pytest.fail(f"bitsandbytes NF4 must run on this CPU: {quantization_problem('4bit-nf4', 'cpu')}")
    root = tmp_path_factory.mktemp("qlora")
    images = root / "images"
    images.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (210, 40, 20), (20, 40, 210)]):
        Image.new("RGB", (64, 48), colour).save(images / f"img{i}.png")
    assert precompute_dinov2.main(["--images", str(images), "--out", str(root / "emb"), "--device", "cpu"]) == 0
    manifest = [json.loads(ln) for ln in (root / "emb" / "manifest.jsonl").read_text().splitlines()]
    lines = [{"image_embedding_path": str((root / "emb" / m["embedding"]).relative_to(root)), "input_text": "a knight",
              "output_text": f"a knight, {'red' if i % 2 == 0 else 'blue'} glow, rezcty_style"}
             for i, m in enumerate(manifest)]
    data = root / "dataset.jsonl"
    data.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    out = root / "smol_qlora"
    # the recipe's LoRA settings and gradient checkpointing are train_adapter's defaults: not passed here
    code = train_adapter.main(["--data", str(data), "--base-model", "embedded", "--out", str(out),
                               "--quantization", "4bit-nf4", "--device", "cpu", "--max-steps", "1", "--grad-accum", "1", "--warmup-steps", "0",
                               "--stage1-steps", "0", "--eval-fraction", "0", "--max-length", "256"])
    assert code == 0
    return out


def test_qlora_trains_with_the_briefs_recipe_on_the_cpu(qlora_adapter, capsys):
    cfg = read_adapter_config(qlora_adapter)
    assert cfg.training["quantization"] == "4bit-nf4" and cfg.training["quantized_linears"] == 30 * 7
    assert cfg.training["gradient_checkpointing"] is True
    assert cfg.training["precision"]["dtype"] == "fp32" and cfg.training["precision"]["device"] == "cpu"
    assert cfg.training["memory_plan_gib"] > 0
    assert cfg.lora == {"r": 32, "alpha": 64, "dropout": 0.05, "target_modules": sorted(RECIPE_TARGETS, key=list(
        "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj".split(",")).index)}
    peft_cfg = json.loads((qlora_adapter / "adapter_config.json").read_text())
    assert set(peft_cfg["target_modules"]) == RECIPE_TARGETS and peft_cfg["r"] == 32 and peft_cfg["lora_alpha"] == 64
    lora = load_file(str(qlora_adapter / "adapter_model.safetensors"))
    assert len(lora) == 30 * 7 * 2  # A and B of every target in all 30 SmolLM2 blocks
    # B starts at zero: after a real optimizer step every B has moved (the 4-bit base passed gradients through)
    assert all(t.abs().sum() > 0 for k, t in lora.items() if "lora_B" in k)
    steps = [json.loads(ln) for ln in (qlora_adapter / "metrics.jsonl").read_text().splitlines()]
    train = [s for s in steps if s.get("split", "train") == "train"]
    assert [s["step"] for s in train] == [1] and all(math.isfinite(s["loss"]) and s["loss"] > 0 for s in train)
    # the projector is trained in full: every tensor differs from its seeded initialisation
    from rezcty_core.llm.projector import Projector

    torch.manual_seed(0)
    fresh = Projector.from_config(cfg.projector).state_dict()
    trained = load_file(str(qlora_adapter / "projector.safetensors"))
    assert set(fresh) == set(trained) and all(not torch.equal(fresh[k], trained[k]) for k in fresh)


def test_qlora_adapter_loads_4bit_in_the_server_and_the_whisperer_sees(comfy, qlora_adapter):
    adapter = link_model(comfy, "rezcty_adapters", qlora_adapter, "smol_qlora")
    graph = {
        "1": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": "embedded: SmolLM2-135M-Instruct",
                                                          "adapter": adapter, "quantization": "4bit-nf4",
                                                          "keep_loaded": False}},
        "2": {"class_type": "RezctyWhispererExpand", "inputs": {
            "llm": ["1", 0], "prompt": "a knight", "trigger_words": TRIGGERS, "seed": 3, "temperature": 0.0,
            "top_p": 0.95, "top_k": 50, "max_new_tokens": 12, "image_embedding": ["12", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "10": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0xC82020}},
        "11": {"class_type": "RezctyDINOv2Loader", "inputs": {"model": "embedded: dinov2-small", "device": "cpu",
                                                              "dtype": "fp32"}},
        "12": {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["11", 0], "image": ["10", 0], "pooling": "cls",
                                                             "use_cache": False}},
    }
    result = comfy.run(graph)
    loaded = " ".join(result.text("4"))
    assert "adapter=smol_qlora" in loaded and "quantization=4bit-nf4" in loaded and "can_see=True" in loaded
    assert "dtype=fp32" in loaded and "eye=dinov2-small" in loaded
    [text] = result.text("3")
    assert text.endswith(f", {TRIGGERS}") and text.count("rezcty_structure") == 1, text
    assert len(text) > len(TRIGGERS) + 4, text
