"""Batched generation prefills the prompt prefix its rows share once: same text as the plain batch.

Real embedded SmolLM2-135M, the Whisperer's own few-shot chats; greedy and seeded sampling. The node-level batch
invariance (batch 1 == batch N through the server) is in tests/test_whisperer_batch.py.
"""
from __future__ import annotations

import pytest

from rezcty_core.llm import sampling
from rezcty_core.llm.model import load_llm
from rezcty_core.llm.whisperer import whisperer_messages

IDEAS = ["a red bicycle", "sunrise over a mountain", "a quiet harbour at dusk"]


@pytest.fixture(scope="module")
def llm():
    model = load_llm("embedded", None, keep_loaded=True)
    yield model
    model.unload()


def _both(llm, monkeypatch, **options) -> tuple[list[str], list[str]]:
    chats = [whisperer_messages(i, has_image=False, few_shot=True) for i in IDEAS]
    seeds = list(range(7, 7 + len(IDEAS)))
    used = []
    real = sampling._generate_shared_prefix
    monkeypatch.setattr(sampling, "_generate_shared_prefix", lambda *a: used.append(real(*a)) or used[-1])
    shared = llm.generate_batch(chats, seeds, max_new_tokens=12, **options)
    assert used and used[0] is not None, "the shared-prefix path did not run"
    monkeypatch.setattr(sampling, "SHARED_PREFIX_MIN", 10**9)  # the plain path: every row prefilled whole
    plain = llm.generate_batch(chats, seeds, max_new_tokens=12, **options)
    assert used[-1] is None
    return shared, plain


def test_the_whisperer_chats_share_a_long_prefix(llm):
    chats = [whisperer_messages(i, has_image=False, few_shot=True) for i in IDEAS]
    rows = [llm.input_embeddings(c) for c in chats]
    prefix = sampling.shared_prefix_length(rows)
    assert prefix >= sampling.SHARED_PREFIX_MIN + 1
    assert prefix < min(r.shape[0] for r in rows)  # the ideas themselves differ


def test_shared_prefix_gives_the_plain_batch_text_greedy(llm, monkeypatch):
    shared, plain = _both(llm, monkeypatch, do_sample=False)
    assert shared == plain
    assert len(set(shared)) == len(IDEAS) and all(shared)


def test_shared_prefix_gives_the_plain_batch_text_sampled(llm, monkeypatch):
    shared, plain = _both(llm, monkeypatch, do_sample=True, temperature=0.75, top_p=0.95, top_k=50)
    assert shared == plain
