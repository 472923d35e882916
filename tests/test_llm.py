"""rezcty_core.llm (model, chat, embedded, device, json_reply): the embedded SmolLM2, chat encoding with the image placeholder, generation, adapters."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from fixtures.tiny_llm import EYE_DIM, tiny_adapter_dir, tiny_embedding, tiny_llm_dir

from harness import REPO
from rezcty_core.common.paths import embedded_dir
from rezcty_core.llm import model as core
from rezcty_core.llm.adapter import AdapterError
from rezcty_core.llm.chat import assemble_inputs, encode_chat
from rezcty_core.llm.device import quantization_config
from rezcty_core.llm.embedded import SMOLLM2_NAME, prepare_smollm2, smollm2_dir
from rezcty_core.llm.json_reply import extract_json
from rezcty_core.llm.templates import IMAGE_PLACEHOLDER, build_messages, validate_judge_reply


@pytest.fixture(scope="module")
def tiny_base():
    return tiny_llm_dir()


@pytest.fixture(scope="module")
def seeing(tiny_base):
    return core.load_llm(tiny_base, tiny_adapter_dir("whisperer", images=True))


def test_embedded_conversion_is_idempotent_and_imports_no_torch_when_done():
    prepare_smollm2(embedded_dir())
    folder = smollm2_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    code = ("import sys; from rezcty_core.llm.embedded import prepare_smollm2; from rezcty_core.common.paths import embedded_dir; "
            "prepare_smollm2(embedded_dir()); assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    from rezcty_core.common import embedded_models

    assert embedded_models.entry(SMOLLM2_NAME)["converter"] == "rezcty_core.llm.embedded:prepare_smollm2"


def test_embedded_smollm2_answers_through_its_chat_template():
    model = core.load_llm("embedded")
    assert model.tokenizer.eos_token == "<|im_end|>"  # the GGUF said <|im_start|>; fixed at conversion
    answer = model.generate([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                            do_sample=False, max_new_tokens=8)
    assert "paris" in answer.lower(), answer
    assert model.identity["base"] == SMOLLM2_NAME and len(model.identity["base_hash"]) == 16


def test_encode_chat_splits_at_the_placeholder_and_labels_only_the_answer(tiny_base, seeing):
    tok = seeing.tokenizer
    messages = build_messages("whisperer", "a knight", has_image=True)
    encoded = encode_chat(tok, messages, answer="a lone knight, rezcty_style")
    assert encoded.has_image and encoded.before and encoded.after
    assert tok.decode(encoded.answer).startswith("a lone knight, rezcty_style")
    assert encoded.answer[-1] == tok.convert_tokens_to_ids("<|im_end|>")  # the model learns to stop
    embeds, labels = assemble_inputs(seeing.model, seeing.projector, encoded, torch.randn(EYE_DIM))
    n_prompt = len(encoded.before) + 1 + len(encoded.after)  # one visual token for a pooled embedding
    assert embeds.shape == (1, n_prompt + len(encoded.answer), 64)
    assert (labels[0, :n_prompt] == -100).all() and labels[0, n_prompt:].tolist() == encoded.answer
    # the visual token is the projector's output, spliced between the two text halves
    text_only = encode_chat(tok, build_messages("whisperer", "a knight", has_image=False))
    assert not text_only.has_image and IMAGE_PLACEHOLDER not in tok.decode(text_only.before)


def test_image_reaches_the_logits_and_seed_makes_sampling_reproducible(seeing):
    messages = build_messages("whisperer", "a knight", has_image=True)
    a = seeing.generate(messages, image=tiny_embedding(1), seed=5, max_new_tokens=6)
    assert a == seeing.generate(messages, image=tiny_embedding(1), seed=5, max_new_tokens=6)
    encoded = encode_chat(seeing.tokenizer, messages)
    with torch.no_grad():
        logits = [seeing.model(inputs_embeds=assemble_inputs(seeing.model, seeing.projector, encoded,
                                                                  tiny_embedding(s).vector)[0]).logits[0, -1]
                  for s in (1, 2)]
    assert not torch.allclose(logits[0], logits[1])  # the eye reaches the next-token distribution
    # the placeholder is added when the caller forgot it
    plain = build_messages("whisperer", "a knight", has_image=False)
    assert seeing.generate(plain, image=tiny_embedding(1), seed=5, max_new_tokens=6) == a


def test_eye_mismatch_is_refused_naming_which(seeing):
    messages = build_messages("whisperer", "a knight", has_image=True)
    with pytest.raises(AdapterError, match="expects 384-d embeddings.*got 768-d"):
        seeing.generate(messages, image=tiny_embedding(dim=768), max_new_tokens=2)
    with pytest.raises(AdapterError, match="trained with eye 'tiny-random-eye'.*'dinov2-base'"):
        seeing.generate(messages, image=tiny_embedding(model="dinov2-base", model_hash="ffff"), max_new_tokens=2)
    with pytest.raises(AdapterError, match="pooling 'cls'.*'mean'"):
        seeing.generate(messages, image=tiny_embedding(pooling="mean"), max_new_tokens=2)
    with pytest.raises(ValueError, match="no image embedding was given"):
        seeing.generate(messages, max_new_tokens=2)


def test_blind_models_refuse_an_image_and_text_only_adapters_cannot_see(tiny_base):
    base_only = core.load_llm(tiny_base)
    assert not base_only.can_see and base_only.specialist is None
    with pytest.raises(ValueError, match="cannot see"):
        base_only.generate(build_messages(None, "hi", False), image=tiny_embedding(), max_new_tokens=2)
    text_adapter = core.load_llm(tiny_base, tiny_adapter_dir("whisperer", images=False))
    assert text_adapter.specialist == "whisperer" and not text_adapter.can_see
    assert text_adapter.generate(build_messages("whisperer", "a knight", False), max_new_tokens=3, seed=1)


def test_adapter_for_another_base_is_refused_naming_both(tmp_path):
    other_base = tiny_llm_dir(seed=1)
    adapter = tiny_adapter_dir("whisperer", images=True)
    with pytest.raises(AdapterError, match=r"trained on base model 'tiny_llm_s0_.*' \(hash .*\) but base model 'tiny_llm_s1_"):
        core.load_llm(other_base, adapter)


def test_broken_adapter_folders_are_clear_errors(tmp_path, tiny_base):
    with pytest.raises(AdapterError, match="not a rezcty adapter folder"):
        core.load_llm(tiny_base, tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_adapter_dir("whisperer", images=True), broken)
    (broken / "projector.safetensors").unlink()
    with pytest.raises(AdapterError, match="projector.safetensors is missing"):
        core.load_llm(tiny_base, broken)
    (broken / "rezcty_adapter.json").write_text("{\n  \"format\": oops\n}")
    with pytest.raises(AdapterError, match=r"rezcty_adapter.json:2: invalid JSON"):
        core.load_llm(tiny_base, broken)


def test_quantization_is_probed_not_refused_and_unknown_is_a_clear_error(tiny_base):
    # bitsandbytes runs 8bit and NF4 on the CPU: probed, not refused for lack of CUDA
    # (a probe that fails: tests/test_llm_node.py; real 4-bit loads: tests/test_qlora_cpu.py)
    for quant in ("8bit", "4bit-nf4"):
        assert quantization_config(quant, "cpu") is not None
    assert quantization_config("none", "cpu") is None
    with pytest.raises(ValueError, match="expected one of none, 8bit, 4bit-nf4"):
        quantization_config("3bit", "cpu")


def test_handles_are_shared_while_held_and_release_frees_unkept_ones(tiny_base):
    kept = core.load_llm(tiny_base)
    assert core.load_llm(tiny_base) is kept
    kept.release()  # a kept model stays loaded after use
    assert kept.model is not None
    # the latest loader wins: keep_loaded=False makes the same handle release its weights (no second copy)
    loose = core.load_llm(tiny_base, keep_loaded=False)
    assert loose is kept and loose.keep_loaded is False
    loads = loose.loads
    loose.release()
    assert loose.model is None and loose.patcher is None
    assert loose.generate(build_messages(None, "hi", False), max_new_tokens=2, seed=0) is not None  # reloads
    assert loose.loads == loads + 1
    core.unload_all()
    assert loose.model is None


def test_generate_leaves_the_global_rng_states_as_it_found_them(tiny_base):
    """Seeded generation draws from its own generators: torch's global CPU (and CUDA) RNG states are untouched,
    so a node after the Whisperer sees the numbers it would have seen without it."""
    from rezcty_core.llm import whisperer

    llm = core.load_llm(tiny_base)
    torch.manual_seed(1234)
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    expected_next = torch.rand(4)  # what the next draw is without any generation in between
    torch.set_rng_state(cpu)
    # a Whisperer expansion: sampled, batched, with retries (the random tiny model writes garbage and retries)
    out = whisperer.expand_ideas(llm, "a knight\na teapot", seed=3, max_new_tokens=8, batch_size=2)
    assert len(out) == 2
    llm.generate(build_messages(None, "hi", False), seed=5, max_new_tokens=4)  # a batch of one
    llm.generate_json(build_messages("judge", "judge this", False), retries=1, seed=2, max_new_tokens=4)
    assert torch.equal(torch.get_rng_state(), cpu)
    if torch.cuda.is_available():
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda))
    assert torch.equal(torch.rand(4), expected_next)


def test_the_rng_guard_restores_what_a_processor_draws(tiny_base):
    """Belt and braces: even a logits processor (or model code) that draws from the global RNG leaves it as found."""
    llm = core.load_llm(tiny_base)

    def draws_globally(input_ids, scores):
        torch.rand(8)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.rand(8, device="cuda")
        return scores

    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    llm.generate_batch([build_messages(None, "hi", False)], [1], max_new_tokens=3, processors=[draws_globally])
    assert torch.equal(torch.get_rng_state(), cpu)
    if cuda:
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda))


def test_greedy_generate_is_the_greedy_batch_of_one_and_sampling_is_the_row_sampler(tiny_base):
    """One sampler: `generate` is `generate_batch` of one row, greedy and seeded alike."""
    llm = core.load_llm(tiny_base)
    chat = build_messages("whisperer", "a lighthouse", False)
    assert llm.generate(chat, do_sample=False, max_new_tokens=8) == \
        llm.generate_batch([chat], [0], do_sample=False, max_new_tokens=8)[0]
    assert llm.generate(chat, seed=9, max_new_tokens=8) == llm.generate_batch([chat], [9], max_new_tokens=8)[0]


def test_extract_json_and_generate_json_retries(seeing):
    assert extract_json('Sure! ```json\n{"verdict": "pass"}\n``` done') == {"verdict": "pass"}
    assert extract_json('noise {bad} then {"a": [1, 2]} tail') == {"a": [1, 2]}
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("no braces here")
    assert validate_judge_reply({"verdict": "PASS", "keywords": "a, b"})["keywords"] == ["a", "b"]
    with pytest.raises(ValueError, match="'verdict' must be"):
        validate_judge_reply({"verdict": "maybe"})
    # a random tiny model never writes the JSON: every attempt is used and each failure is recorded
    reply = seeing.generate_json(build_messages("judge", "judge this", False), validate_judge_reply,
                                 retries=2, do_sample=False, max_new_tokens=4)
    assert reply.value is None and not reply.ok and reply.attempts == 3 and len(reply.errors) == 3
    assert json.dumps(reply.raw)
