"""Whisperer core: output hygiene, triggers, CLIP budget, seeds, retry and fallback (real tiny LLM)."""
from __future__ import annotations

import pytest
from fixtures.tiny_llm import tiny_adapter_dir, tiny_embedding, tiny_llm_dir

from rezcty_core.llm import templates
from rezcty_core.llm import whisperer as w
from rezcty_core.llm import whisperer_text as wt
from rezcty_core.llm.model import load_llm
from rezcty_core.sd.clip_tokens import count_clip_tokens

TRIGGERS = wt.parse_triggers("rezcty_style, rezcty_structure")


# -- hygiene -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("a red fox in fresh snow, soft morning light", "a red fox in fresh snow, soft morning light"),
    ('Sure! Here is the prompt: "a red fox in snow, soft light"\n\nThis prompt describes a fox.',
     "a red fox in snow, soft light"),
    ("Here's an expanded prompt for you:\na red fox in snow, soft light", "a red fox in snow, soft light"),
    ("<|im_start|>assistant\n**Prompt:** a castle on a hill, misty valley<|im_end|>", "a castle on a hill, misty valley"),
    ("Assistant: Expanded prompt: “a castle on a hill”\nNote: I added mist.", "a castle on a hill"),
    ("- a dog on a beach\n- green dunes\n- blue sky", "a dog on a beach, green dunes, blue sky"),
    ("a dog, a dog, a dog on a beach, a dog", "a dog, a dog on a beach"),
    ("a lighthouse at dusk, waves on black rocks. Negative prompt: blurry, lowres", "a lighthouse at dusk, waves on black rocks"),
    ("a lighthouse at dusk, , ,waves on black rocks ,", "a lighthouse at dusk, waves on black rocks"),
    ("a lighthouse at dusk, waves crashing on the", "a lighthouse at dusk, waves crashing"),
    ("'a lighthouse, the keeper's lamp'", "a lighthouse, the keeper's lamp"),
    ("model train crossing a stone bridge, steam\nSteps: 20, Sampler: Euler", "model train crossing a stone bridge, steam"),
])
def test_clean_generation_one_clean_line(raw, expected):
    assert wt.clean_generation(raw) == expected


def test_cut_off_generation_drops_the_unfinished_phrase():
    raw = "a lighthouse at dusk, waves on black rocks, gulls circling, a lone keeper walk"
    assert wt.clean_generation(raw, cut_off=True) == "a lighthouse at dusk, waves on black rocks, gulls circling"
    assert wt.clean_generation(raw, cut_off=False).endswith("a lone keeper walk")


@pytest.mark.parametrize("body, reason", [
    ("", "empty"), ("ok", "too short"), ("Animation", "too short"),
    ("abcd efgh ijkl !!! ??? 123 456 789 ### @@@ 000 111 222 333", "symbols"),
    ("日本の 桜の木の 下で 猫が 寝ている 風景です", "not English"),
    ("I'm sorry, but as an AI language model I cannot help", "refusal"),
    ("cat cat cat cat cat cat cat cat cat cat cat cat dog", "repetitive"),
    ("A lighthouse on a cliff.", "echoed"),
])
def test_garbage_is_recognised(body, reason):
    assert reason in (wt.garbage_reason(body, "a lighthouse on a cliff") or "")


def test_good_body_is_not_garbage():
    assert wt.garbage_reason("a lone knight in moonlit armor, misty cliff at dawn", "a lighthouse on a cliff") is None


# -- triggers ----------------------------------------------------------------------------------------
def test_parse_triggers_keeps_text_order_and_dedupes():
    assert TRIGGERS.words == ("rezcty_style", "rezcty_structure")
    assert TRIGGERS.suffix == "rezcty_style, rezcty_structure"
    spaced = wt.parse_triggers("rezcty_style rezcty_structure rezcty_genius")
    assert spaced.words == ("rezcty_style", "rezcty_structure", "rezcty_genius")
    assert spaced.suffix == "rezcty_style rezcty_structure rezcty_genius"
    phrase = wt.parse_triggers(" golden hour,\nrezcty_style , rezcty_style ")
    assert phrase.words == ("golden hour", "rezcty_style") and phrase.suffix == "golden hour, rezcty_style"
    assert not wt.parse_triggers("  ,  ")


def test_compose_puts_each_trigger_once_at_the_end():
    body = "REZCTY_STYLE a castle on a hill, rezcty_structure, misty valley, rezcty_style"
    text, truncated = wt.compose(body, TRIGGERS)
    assert text == "a castle on a hill, misty valley, rezcty_style, rezcty_structure" and not truncated
    for t in TRIGGERS.words:
        assert wt.count_trigger(text, t) == 1
    # a word that merely contains a trigger is left alone
    assert wt.compose("rezcty_styles of old", TRIGGERS)[0] == "rezcty_styles of old, rezcty_style, rezcty_structure"
    assert wt.compose("", TRIGGERS)[0] == "rezcty_style, rezcty_structure"
    assert wt.compose("a cat", wt.parse_triggers(""))[0] == "a cat"


def test_a_trigger_cut_off_mid_word_is_dropped_not_kept_beside_the_full_one():
    triggers = wt.parse_triggers("rezcty_style, rezcty_structure")
    body = wt.remove_triggers("glacier blue crystal armor on a lone knight, rezcty_", triggers)
    assert body == "glacier blue crystal armor on a lone knight"
    text, _ = wt.compose(body, triggers)
    assert text == "glacier blue crystal armor on a lone knight, rezcty_style, rezcty_structure"
    # a real last phrase that only shares letters with a trigger stays
    assert wt.remove_triggers("a knight, red sky", triggers) == "a knight, red sky"
    assert wt.remove_triggers("a knight, rezcty_style", triggers) == "a knight"


def test_keep_within_77_cuts_the_body_never_the_triggers():
    body = ", ".join(f"glowing paper lantern number {i}" for i in range(40))
    text, truncated = wt.compose(body, TRIGGERS, keep_within_77=True)
    assert truncated and text.endswith(", rezcty_style, rezcty_structure")
    assert count_clip_tokens(text) <= 75
    assert text.startswith("glowing paper lantern number 0, ")
    assert ", ," not in text and " number," not in text  # cut between whole phrases
    long_text, long_trunc = wt.compose(body, TRIGGERS, keep_within_77=False)
    assert not long_trunc and count_clip_tokens(long_text) > 75


# -- seeds -------------------------------------------------------------------------------------------
def test_derived_seeds_are_reproducible_and_distinct():
    assert w.derive_seed(7, 0) == 7
    assert w.derive_seed(7, 1) == w.derive_seed(7, 1) != w.derive_seed(7, 2) != 7
    assert w.idea_seeds(["a", "b", "a"], 5)[:2] == [5, 5]  # an idea's seed does not depend on its position
    assert w.idea_seeds(["a", "b", "a"], 5)[2] not in (5,)  # a repeated idea gets a variation


def test_split_ideas_and_image_pairing():
    assert w.split_ideas("a knight\n\n  \n  sunrise over mountains  \r\n") == ["a knight", "sunrise over mountains"]
    assert w.pair_images(["a", "b"], None) == [("a", None), ("b", None)]
    assert w.pair_images(["a", "b"], ["x"]) == [("a", "x"), ("b", "x")]
    assert w.pair_images(["a"], ["x", "y"]) == [("a", "x"), ("a", "y")]
    assert w.pair_images(["a", "b"], ["x", "y"]) == [("a", "x"), ("b", "y")]
    with pytest.raises(ValueError, match="2 ideas and 3 image embeddings"):
        w.pair_images(["a", "b"], ["x", "y", "z"])


def test_few_shot_examples_only_for_an_untrained_base():
    plain = w.whisperer_messages("a cat", has_image=False, few_shot=True)
    assert plain[0]["content"] == templates.WHISPERER_SYSTEM and plain[-1] == {"role": "user", "content": "a cat"}
    assert len(plain) == 2 + 2 * len(templates.WHISPERER_EXAMPLES)
    trained = w.whisperer_messages("a cat", has_image=True, few_shot=False)
    assert trained == templates.build_messages("whisperer", "a cat", True)


# -- with a real (tiny, random-weight) LLM --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return load_llm(tiny_llm_dir())


def test_expansion_reproducible_per_seed_with_triggers_at_end(tiny):
    a = w.expand_ideas(tiny, "a lighthouse", seed=1, max_new_tokens=16)[0]
    b = w.expand_ideas(tiny, "a lighthouse", seed=1, max_new_tokens=16)[0]
    c = w.expand_ideas(tiny, "a lighthouse", seed=2, max_new_tokens=16)[0]
    assert a.text == b.text and a.text != c.text
    for e in (a, c):
        assert e.text.endswith(", rezcty_style, rezcty_structure") and "\n" not in e.text
        assert all(wt.count_trigger(e.text, t) == 1 for t in TRIGGERS.words)
        assert e.tokens == count_clip_tokens(e.text) > 0


def test_garbage_generation_is_retried_then_falls_back_with_warning(tiny):
    # one new token can never make a prompt: every attempt is garbage, each with its own derived seed
    e = w.expand_ideas(tiny, "a lighthouse on a cliff", "rezcty_style", seed=3, max_new_tokens=1, retries=2)[0]
    assert e.fallback and e.attempts == 3 and len(e.raw) == 3
    assert e.text == "a lighthouse on a cliff, rezcty_style"
    assert e.warnings and "no usable expansion after 3 attempts" in e.warnings[0]
    assert "FALLBACK" in e.summary() and "warning:" in e.summary()


def test_empty_prompt_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="prompt is empty"):
        w.expand_ideas(tiny, " \n\t\n", seed=0)


def test_image_needs_a_seeing_llm_with_the_right_eye(tiny):
    with pytest.raises(ValueError, match="has no projector"):
        w.expand_ideas(tiny, "a knight", seed=0, images=[tiny_embedding(0)])
    seeing = load_llm(tiny_llm_dir(), tiny_adapter_dir("whisperer", images=True))
    [seen] = w.expand_ideas(seeing, "a knight", seed=4, images=[tiny_embedding(0)], max_new_tokens=16)
    assert seen.text.endswith(", rezcty_style, rezcty_structure") and seen.raw


def test_image_changes_what_the_whisperer_chat_predicts():
    import torch

    from rezcty_core.llm.chat import assemble_inputs, encode_chat

    seeing = load_llm(tiny_llm_dir(), tiny_adapter_dir("whisperer", images=True)).load()
    chat = encode_chat(seeing.tokenizer, w.whisperer_messages("a knight", has_image=True, few_shot=False))
    logits = []
    for seed in (0, 1):
        with torch.no_grad():
            embeds, _ = assemble_inputs(seeing.model, seeing.projector, chat, tiny_embedding(seed).vector)
            logits.append(seeing.model(inputs_embeds=embeds).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1])
    with pytest.raises(ValueError, match="expects 384-d"):
        w.expand_ideas(seeing, "a knight", seed=0, images=[tiny_embedding(0, dim=128)])
