"""Issue 21 through the real server and real models: batched Whisperer generation, constrained JSON of the
untrained embedded LLM in the QC Judge and Metadata Writer, unfit-term hygiene with an overfitted tiny LLM."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import qc_synth
from fixtures.tiny_judge_llm import CACHE, _digest
from fixtures.tiny_llm import tiny_llm_dir
from PIL import Image
from test_whisperer_node import TRIGGERS, whisper_graph

from harness import link_model
from rezcty_core.common.blocklists import load_blocklist
from rezcty_core.llm import model as core_llm
from rezcty_core.llm import whisperer as w
from rezcty_core.llm.whisperer_text import UNFIT_CATEGORY

SMOL = "embedded: SmolLM2-135M-Instruct"
IDEAS = ["a red bicycle", "a lighthouse on a cliff", "sunrise over a mountain", "a cat in the rain", "a teapot",
         "a city at night", "a forest path in autumn", "a bowl of fruit"]

# the unfit fixture: one idea whose answer holds one unfit phrase among fit ones, one whose answer is all unfit
UNFIT_ANSWERS = {
    "a red bicycle": "a red bicycle, a pair of iridescent silver ejaculations, chrome handlebars, morning light",
    "a blue kite": "gore, a bloody kite",
}
FIT_BODY = "a red bicycle, chrome handlebars, morning light"


def unfit_llm_dir():
    """A tiny LLM overfitted (with the Whisperer's few-shot chat) to write UNFIT_ANSWERS; cached by code hash.

    Both chats are trained in every step (summed loss) until the model, teacher-forced, predicts every answer
    token of both. The first answer token is the only one that depends on the idea (the ideas differ in 2-3 of
    ~256 prompt tokens): a mean-loss threshold on alternating chats (the earlier recipe) stopped at a model
    that wrote the kite's answer for the bicycle too, at batch 1 as at batch 2 (issue 21's "batch defect")."""
    path = CACHE / f"tiny_unfit_whisperer_{_digest(Path(w.__file__), Path(__file__))}"
    if (path / "config.json").is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    import torch
    from fixtures.tiny_llm import save_pretrained_atomic
    from transformers import AutoTokenizer, LlamaForCausalLM

    from rezcty_core.llm.chat import assemble_inputs, encode_chat

    base = tiny_llm_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
    chats = [encode_chat(tokenizer, w.whisperer_messages(idea, False, True), answer)
             for idea, answer in UNFIT_ANSWERS.items()]
    torch.manual_seed(0)
    steps = 400
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for step in range(steps):
        loss, exact = 0.0, True
        for chat in chats:
            embeds, labels = assemble_inputs(model, None, chat)
            hidden = model.model(inputs_embeds=embeds).last_hidden_state[0]
            targets = (labels[0] != -100).nonzero().squeeze(1)
            logits = model.lm_head(hidden[targets - 1])
            loss = loss + torch.nn.functional.cross_entropy(logits, labels[0, targets])
            top2 = logits.detach().float().topk(2, dim=-1)
            right = top2.indices[:, 0] == labels[0, targets]
            exact = exact and bool(right.all()) and bool((top2.values[:, 0] - top2.values[:, 1] > 2.0).all())
        if step >= 20 and exact:  # every answer token the argmax, by a margin, for both chats
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return save_pretrained_atomic(model, tokenizer, path)


def test_row_sampler_is_independent_of_batch_mates():
    llm = core_llm.load_llm(tiny_llm_dir())
    chats = [w.whisperer_messages(i, False, True) for i in ("a knight", "a teapot", "a dragon kite")]
    alone = llm.generate_batch(chats[:1], [7], max_new_tokens=12)
    with_b = llm.generate_batch(chats[:2], [7, 8], max_new_tokens=12)
    with_c = llm.generate_batch([chats[0], chats[2]], [7, 9], max_new_tokens=12)
    assert alone[0] == with_b[0] == with_c[0]
    assert llm.generate_batch(chats[:2], [7, 8], max_new_tokens=12) == with_b  # same seeds, same texts
    assert llm.generate_batch(chats[:1], [70], max_new_tokens=12) != alone


def test_greedy_text_of_an_idea_is_the_same_at_batch_1_and_batch_2():
    # same idea + same seed -> same text whether it runs alone or left-padded next to another idea
    llm = core_llm.load_llm(unfit_llm_dir(), keep_loaded=False)
    chats = [w.whisperer_messages(i, False, True) for i in UNFIT_ANSWERS]
    alone = [llm.generate_batch([c], [1], do_sample=False, max_new_tokens=48)[0] for c in chats]
    assert alone == list(UNFIT_ANSWERS.values())  # the fixture tells the two ideas apart
    assert llm.generate_batch(chats, [1, 1], do_sample=False, max_new_tokens=48) == alone
    # a longer batch mate pads these rows on the left
    long_chat = w.whisperer_messages("a very long idea about a lighthouse on a cliff over a stormy sea at dusk",
                                     False, True)
    assert llm.generate_batch([long_chat, *chats], [1, 1, 1], do_sample=False, max_new_tokens=48)[1:] == alone


def test_eight_ideas_batched_through_the_server(comfy):
    graph = whisper_graph(SMOL, "\n".join(IDEAS), seed=4, max_new_tokens=24, batch_size=8)
    result = comfy.run(graph)
    texts = result.text("3")
    assert len(texts) == 8
    shown = result.ui("2")["text"][0]
    assert shown.count("batch of 8") >= 1  # the first round ran all 8 ideas in one generate()
    unfit = load_blocklist()
    for text in texts:
        assert text.endswith(", " + TRIGGERS)
        assert text.count("rezcty_style") == 1 and text.count("rezcty_structure") == 1
        assert "\n" not in text and "<|" not in text
        assert not [h for h in unfit.find(text) if h.category == UNFIT_CATEGORY]
    # independence from batch mates (same text at batch 1) is tested in the core: test_row_sampler_...


def test_unfit_phrase_dropped_and_all_unfit_idea_retried_then_fallback(comfy):
    name = link_model(comfy, "LLM", unfit_llm_dir(), "tiny-unfit-whisperer")
    result = comfy.run(whisper_graph(name, "a red bicycle\na blue kite", seed=1, max_new_tokens=48,
                                     temperature=0.2, batch_size=2))
    bicycle, kite = result.text("3")
    assert bicycle == f"{FIT_BODY}, {TRIGGERS}"
    assert kite == f"a blue kite, {TRIGGERS}"  # every phrase unfit on every attempt: the idea + triggers
    shown = result.ui("2")["text"][0]
    assert "FALLBACK" in shown and "3 attempts" in shown and "unfit" in shown


def test_untrained_embedded_llm_gives_valid_json_first_try_through_the_server(comfy):
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(qc_synth.clean_image(321, 640, 480)).save(comfy.input_dir / "qc_constrained.png")
    graph = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "qc_constrained.png"}},
        "llm": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": SMOL, "adapter": "none",
                                                             "quantization": "none", "keep_loaded": True}},
        "judge": {"class_type": "RezctyQCJudge", "inputs": {"images": ["img", 0], "profile": "adobe_stock",
                                                            "llm": ["llm", 0]}},
        "report": {"class_type": "PreviewAny", "inputs": {"source": ["judge", 2]}},
        "meta": {"class_type": "RezctyMetadataWriter", "inputs": {
            "images": ["img", 0], "prompt": "a calm lake at dawn, pine trees, mist, rezcty_style",
            "filename_prefix": "constrained/", "csv_name": "constrained.csv", "category": "auto", "llm": ["llm", 0]}},
        "meta_json": {"class_type": "PreviewAny", "inputs": {"source": ["meta", 0]}},
    }
    result = comfy.run(graph)
    [entry] = json.loads(result.text("report")[0])
    assert entry["llm"]["valid"] is True and entry["llm"]["attempts"] == 1
    assert entry["llm"]["verdict"] in ("pass", "reject")
    [meta] = json.loads(result.text("meta_json")[0])
    blob = json.dumps(meta)
    assert "llm (1 attempt)" in blob, blob[:600]
    assert not any("rezcty" in k for k in meta["keywords"])


@pytest.mark.parametrize("text", ["a cat, hardcore porn, soft light", "nice tits, sunset"])
def test_unfit_terms_never_reach_metadata(text):
    from rezcty_core.stock import rules

    meta = rules.build_metadata(text, np.full((64, 96, 3), 90, np.uint8))
    assert meta.title and len(meta.keywords) >= 15
    words = " ".join([meta.title, meta.description, *meta.keywords]).lower()
    assert "porn" not in words and "tits" not in words


def test_qwen_from_the_embedded_folder_writes_english_for_indonesian_ideas(comfy):
    # the test server runs on a fresh base directory: the model comes from the embedded cache, not models/LLM
    assert not (comfy.models_dir / "LLM" / "Qwen2.5-Coder-1.5B-Instruct").exists()
    graph = whisper_graph("embedded: Qwen2.5-Coder-1.5B-Instruct", "matahari terbit di atas gunung\nkucing di bawah hujan",
                          seed=2, max_new_tokens=24, temperature=0.5, batch_size=2)
    graph["1"]["inputs"]["keep_loaded"] = False  # 3.5 GB: freed once the node is done
    result = comfy.run(graph)
    sun, cat = (t.lower() for t in result.text("3"))
    assert ("sun" in sun) and "mountain" in sun and "matahari" not in sun and "gunung" not in sun
    assert ("cat" in cat or "kitten" in cat) and "kucing" not in cat and "hujan" not in cat
    shown = result.ui("2")["text"][0]
    assert "FALLBACK" not in shown and "Indonesian idea translated" in shown
