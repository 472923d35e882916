"""rezcty_core.llm.memory_plan: plans from config.json alone for the 7-9B families users pick on a 16 GB T4."""
from __future__ import annotations

import json

import pytest

from rezcty_core.llm.memory_plan import (
    GiB,
    MemoryPlanError,
    check_fits,
    plan_memory,
    read_config,
)

# public architecture numbers (each model's config.json on its model card)
CONFIGS = {
    "Llama-3.1-8B": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                     "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
                     "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                     "attention_bias": False, "mlp_bias": False, "hidden_act": "silu"},
    "Mistral-7B-v0.3": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
                        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "vocab_size": 32768, "tie_word_embeddings": False,
                        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
                        "head_dim": 128, "sliding_window": None, "hidden_act": "silu"},
    "Qwen2.5-7B": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
                   "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
                   "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                   "hidden_act": "silu"},
    "Gemma-2-9B": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 3584,
                   "intermediate_size": 14336, "num_hidden_layers": 42, "num_attention_heads": 16,
                   "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000, "tie_word_embeddings": True,
                   "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                   "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096,
                   "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
}
T4 = 16 * 10**9  # a T4's 16 GB (15.1 GiB usable after the context is counted in the plan)
BRIEF = {"mode": "train", "quantization": "4bit-nf4", "dtype": "fp16", "lora_r": 32, "seq_len": 1024,
         "gradient_checkpointing": True, "batch_size": 1, "image_tokens": 4}


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    out = {}
    for name, cfg in CONFIGS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(cfg))
        out[name] = read_config(root / name)
    return out


def test_param_counts_match_a_meta_device_build(configs):
    """The arithmetic counts exactly what transformers builds (meta device: no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rezcty_core.llm.memory_plan import Architecture

    expected_b = {"Llama-3.1-8B": 8.03, "Mistral-7B-v0.3": 7.25, "Qwen2.5-7B": 7.62, "Gemma-2-9B": 9.24}
    for name, cfg in configs.items():
        hf = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf)
        built = sum(p.numel() for p in model.parameters())
        assert Architecture.from_config(cfg).param_count() == built, name
        assert round(built / 1e9, 2) == pytest.approx(expected_b[name], abs=0.01), name


def test_8b_qlora_r32_seq1024_fits_a_t4_and_fp16_inference_does_not(configs):
    llama = configs["Llama-3.1-8B"]
    qlora = plan_memory(llama, **BRIEF)
    assert qlora.total <= 15 * GiB, qlora.text()
    assert qlora.total > 8 * GiB, qlora.text()  # 4-bit blocks + fp32 embeddings/head are not free
    check_fits(qlora, llama, budget_bytes=T4)
    fp16 = plan_memory(llama, mode="inference", quantization="none", dtype="fp16", seq_len=1024)
    assert fp16.parts["weights (blocks)"] + fp16.parts["weights (emb/head/norm)"] > 14.9 * GiB
    assert fp16.total > T4, fp16.text()
    with pytest.raises(MemoryPlanError, match=r"exceeds the 14.9 GiB free on cuda; use 4bit-nf4 \(plans \d"):
        check_fits(fp16, llama, budget_bytes=T4)
    nf4 = plan_memory(llama, mode="inference", quantization="4bit-nf4", dtype="fp16", seq_len=1024)
    assert nf4.total < 8 * GiB, nf4.text()


def test_the_plan_moves_with_each_knob(configs):
    llama = configs["Llama-3.1-8B"]
    ref = plan_memory(llama, **BRIEF).total
    assert plan_memory(llama, **{**BRIEF, "gradient_checkpointing": False}).total > ref + 2 * GiB
    assert plan_memory(llama, **{**BRIEF, "seq_len": 2048}).total > ref
    assert plan_memory(llama, **{**BRIEF, "batch_size": 2}).total > ref
    assert plan_memory(llama, **{**BRIEF, "lora_r": 64}).total > ref
    assert plan_memory(llama, **{**BRIEF, "image_tokens": 256}).total > ref
    assert plan_memory(llama, **{**BRIEF, "quantization": "8bit"}).total > ref
    assert plan_memory(llama, **{**BRIEF, "targets": ["q_proj", "v_proj"]}).total < ref
    no_gc = plan_memory(llama, **{**BRIEF, "gradient_checkpointing": False})
    with pytest.raises(MemoryPlanError, match="turn gradient checkpointing on"):
        check_fits(no_gc, llama, budget_bytes=T4)
    with pytest.raises(ValueError, match="LoRA target 'c_attn' is not a linear"):
        plan_memory(llama, **{**BRIEF, "targets": ["c_attn"]})


def test_the_four_families_at_the_briefs_settings(configs, capsys):
    for name, cfg in configs.items():
        plan = plan_memory(cfg, **BRIEF)
        print(f"{name}: QLoRA {plan.total_gib:.2f} GiB; fp16 inference "
              f"{plan_memory(cfg, mode='inference', dtype='fp16').total_gib:.2f} GiB; NF4 inference "
              f"{plan_memory(cfg, mode='inference', quantization='4bit-nf4', dtype='fp16').total_gib:.2f} GiB")
        assert plan.total <= 15 * GiB, plan.text()  # every family's QLoRA at r32 / seq 1024 fits a T4
        assert "planned peak" in plan.text() and plan.to_json()["total_gib"] == round(plan.total_gib, 3)
    out = capsys.readouterr().out
    assert out.count("QLoRA") == 4
