"""Chat templates of the families users pick (Llama 3.1, Mistral, Qwen2.5, Gemma 2/3): a template that refuses or
drops the system role gets the system prompt folded into the first user turn, the same way in training and
inference, and the adapter's template hash says so. The templates below are written here to behave like each
family's (role headers, alternation checks, Gemma 2 raising on a system message, Gemma 3 folding it itself)."""
from __future__ import annotations

import copy

import pytest

from rezcty_core.llm import model as core
from rezcty_core.llm.chat import encode_chat, render_prompt
from rezcty_core.llm.embedded import resolve_base
from rezcty_core.llm.templates import (
    IMAGE_PLACEHOLDER,
    WHISPERER_SYSTEM,
    build_messages,
    chat_messages,
    fold_system,
    system_role_mode,
    template_info,
)

ALTERNATE = ("{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
             "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}")
TEMPLATES = {
    "llama3.1": (
        "{{- bos_token }}{%- for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{%- endfor %}"
        "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}"),
    "mistral": (  # v0.3: the system prompt joins the last user message; roles must alternate
        "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
        "{%- set msgs = messages[1:] %}{%- else %}{%- set system = '' %}{%- set msgs = messages %}{%- endif %}"
        "{{- bos_token }}{%- for m in msgs %}" + ALTERNATE +
        "{%- if m['role'] == 'user' %}[INST] {% if loop.last and system %}{{ system }}\n\n{% endif %}"
        "{{ m['content'] }}[/INST]{%- else %}{{ ' ' + m['content'] + eos_token }}{%- endif %}{%- endfor %}"),
    "qwen2.5": (  # ChatML with a default system prompt when none is given
        "{%- if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen.<|im_end|>\n{%- endif %}"
        "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"),
    "gemma2": (  # refuses the system role outright
        "{{ bos_token }}{%- if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{%- endif %}{%- for m in messages %}" + ALTERNATE +
        "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{%- endfor %}"
        "{%- if add_generation_prompt %}<start_of_turn>model\n{%- endif %}"),
    "gemma3": (  # takes a system message by prefixing the first user turn itself
        "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
        "{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set msgs = messages[1:] -%}"
        "{%- else -%}{%- set prefix = '' -%}{%- set msgs = messages -%}{%- endif -%}"
        "{%- for m in msgs -%}" + ALTERNATE +
        "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
        "<start_of_turn>{{ role }}\n{{ prefix if loop.first else '' }}{{ m['content'] | trim }}<end_of_turn>\n"
        "{%- endfor -%}{%- if add_generation_prompt -%}<start_of_turn>model\n{%- endif -%}"),
    "drops-system": (  # silently ignores system messages
        "{%- for m in messages if m['role'] != 'system' %}<|{{ m['role'] }}|>{{ m['content'] }}\n{%- endfor %}"
        "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"),
}
FOLDED = {"gemma2", "drops-system"}


@pytest.fixture(scope="module")
def base_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base("embedded"))


def family(base_tokenizer, name):
    tok = copy.deepcopy(base_tokenizer)
    tok.chat_template = TEMPLATES[name]
    return tok


def test_gemma2_style_template_really_refuses_a_system_message(base_tokenizer):
    tok = family(base_tokenizer, "gemma2")
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template(build_messages("whisperer", "a knight", False), tokenize=False)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_family_renders_the_system_prompt_the_same_in_training_and_inference(base_tokenizer, name):
    tok = family(base_tokenizer, name)
    mode = system_role_mode(tok)
    assert mode == ("folded" if name in FOLDED else "native")
    messages = build_messages("whisperer", "a knight", has_image=True)
    prompt = render_prompt(tok, messages)  # what inference (LoadedLLM.generate) renders
    assert WHISPERER_SYSTEM in prompt and prompt.count(IMAGE_PLACEHOLDER) == 1
    assert prompt.index(WHISPERER_SYSTEM) < prompt.index(IMAGE_PLACEHOLDER) < prompt.index("a knight")
    inference = encode_chat(tok, messages)
    training = encode_chat(tok, messages, answer="a lone knight, rezcty_style")  # what train_adapter encodes
    assert training.has_image and (training.before, training.after) == (inference.before, inference.after)
    assert "a lone knight, rezcty_style" in tok.decode(training.answer)
    if name in FOLDED:
        [user] = chat_messages(tok, messages)
        assert user["role"] == "user" and user["content"] == f"{WHISPERER_SYSTEM}\n\n{IMAGE_PLACEHOLDER}\na knight"
    else:
        assert chat_messages(tok, messages) == messages


def test_the_adapter_template_hash_covers_the_fold():
    native, folded = template_info("whisperer", "native"), template_info("whisperer", "folded")
    assert native["sha256"] != folded["sha256"] and folded["system_role"] == "folded"
    assert template_info("whisperer")["sha256"] == native["sha256"]  # unchanged for templates with a system role
    with pytest.raises(ValueError, match="expected one of native, folded"):
        template_info("whisperer", "dropped")
    assert fold_system([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                        {"role": "assistant", "content": "A"}]) == [{"role": "user", "content": "S\n\nU"},
                                                                    {"role": "assistant", "content": "A"}]


def test_train_adapter_records_the_fold_for_a_gemma2_style_base(tmp_path, base_tokenizer):
    """A tiny Llama whose tokenizer carries the Gemma 2-style template: training folds, and says so."""
    import torch
    from fixtures.tiny_llm import save_pretrained_atomic, write_dataset
    from transformers import LlamaConfig, LlamaForCausalLM

    from rezcty_core.llm.adapter import read_adapter_config
    from training import train_adapter

    tok = family(base_tokenizer, "gemma2")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    base = save_pretrained_atomic(LlamaForCausalLM(cfg), tok, tmp_path / "gemma2ish")
    data = write_dataset(tmp_path / "data", n=4, images=False)
    out = tmp_path / "adapter"
    assert train_adapter.main(["--data", str(data), "--base-model", str(base), "--out", str(out), "--max-steps", "1",
                               "--grad-accum", "1", "--lora-r", "2", "--lora-alpha", "4", "--eval-fraction", "0",
                               "--no-gradient-checkpointing"]) == 0
    template = read_adapter_config(out).template
    assert template == template_info("whisperer", "folded")
    llm = core.load_llm(base, out, keep_loaded=False)
    assert isinstance(llm.generate(build_messages("whisperer", "a knight", False), max_new_tokens=3, seed=1), str)
    llm.unload()
