"""The one sampler: rows of input embeddings in, one text per row out, each row drawn with its own seed.

    texts = sample_rows(model, tokenizer, rows, seeds=[1, 2], temperature=0.75, top_p=0.95, top_k=50)

`LoadedLLM.generate` is a batch of one through here, `LoadedLLM.generate_batch` (the Whisperer) a batch of
many, and `generate_json` adds its schema constraint (`llm/constrained.py`, xgrammar) as one more logits
processor in front of the same `RowSampler`. So a seed means the same random numbers whichever path asks,
and a JSON reply's randomness does not depend on whether xgrammar is installed.

Rows are left-padded with an attention mask. Sampling is done here, not by `generate()`'s global RNG:
`RowSampler` draws each row's token from that row's own `torch.Generator`, seeded with the row's seed, so
which ideas share a batch does not change the random numbers a row sees, and torch's global RNG states (CPU
and every CUDA device) are left as they were found (`preserved_rng`, tested).

What can still differ with the batch: the logits themselves. A padded row goes through matrices of another
shape, and float rounding then differs at the 1e-6 level; a draw that falls exactly on a top-p/top-k boundary
or between two almost equal probabilities can flip. In practice prompts are identical for the same idea and
seed at any batch size on the CPU in fp32 (tested); in bf16/fp16 a flip is more likely. What always holds:
same ideas + same seed + same batch size -> same prompts.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from rezcty_core.llm.chat import eos_token_ids

SEED_MOD = 2**63
SHARED_PREFIX_MIN = 32  # tokens: below this, one prefill of the whole batch is as cheap


class RowSampler:
    """A transformers logits processor that samples each row with its own generator (temperature, top-k,
    top-p) and returns scores where only the drawn token is finite, so `generate(do_sample=False)` emits it."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, top_k: int):
        import torch

        self.generators = []
        for s in seeds:
            g = torch.Generator(device="cpu")
            g.manual_seed(int(s) % SEED_MOD)
            self.generators.append(g)
        self.temperature = max(float(temperature), 1e-5)
        self.top_p = float(top_p)
        self.top_k = int(top_k)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.temperature
        vocab = logits.shape[-1]
        if 0 < self.top_k < vocab:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if 0 < self.top_p < 1:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            probs = sorted_logits.softmax(-1)
            drop = probs.cumsum(-1) - probs > self.top_p  # keep the smallest prefix reaching top_p (>= 1 token)
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1).cpu()
        out = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            p = probs[row]
            if not torch.isfinite(p).all() or float(p.sum()) <= 0:
                raise RuntimeError("sampling failed: the probabilities of a row are not finite (nan/inf logits)")
            token = int(torch.multinomial(p, 1, generator=self.generators[row]))
            out[row, token] = 0.0
        return out


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """torch's global RNG states (CPU and every initialised CUDA device) restored on exit, whatever ran inside.

    The sampler draws only from its own generators; this guard also covers a model or logits processor that
    draws from the global RNG, so a node after ours sees the numbers it would have seen without us."""
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        yield


def sample_rows(model: Any, tokenizer: Any, rows: list, seeds: list[int], *, temperature: float = 0.75,
                top_p: float = 0.95, top_k: int = 50, max_new_tokens: int = 128, do_sample: bool = True,
                processors: list | None = None) -> list[str]:
    """One text per row of `(L, H)` input embeddings, all in one `generate()` call.

    `processors`: logits processors applied before sampling (e.g. a JSON-schema constraint), each seeing the
    whole batch. Greedy (`do_sample` False or temperature 0) takes the argmax after them.
    """
    import torch
    from transformers import LogitsProcessorList

    if not rows:
        return []
    if len(seeds) != len(rows):
        raise ValueError(f"{len(rows)} chats but {len(seeds)} seeds")
    eos = eos_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    with torch.inference_mode(), preserved_rng():
        embed = model.get_input_embeddings()
        pad_vec = embed(torch.tensor([pad_id], device=embed.weight.device))[0]
        chain = list(processors or [])
        if do_sample and temperature > 0:
            chain.append(RowSampler(seeds, temperature, top_p, top_k))
        kwargs = dict(max_new_tokens=int(max_new_tokens), do_sample=False, temperature=None, top_p=None, top_k=None,
                      eos_token_id=eos, pad_token_id=pad_id, logits_processor=LogitsProcessorList(chain))
        out = _generate_shared_prefix(model, rows, pad_vec, kwargs)
        if out is None:
            batch, mask = _left_padded(rows, pad_vec, 0)
            out = model.generate(inputs_embeds=batch, attention_mask=mask, **kwargs)
    texts = []
    for row in out:
        ids = [int(t) for t in row]
        while ids and ids[-1] in (pad_id, *eos):
            ids.pop()
        texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return texts


def shared_prefix_length(rows: list) -> int:
    """How many leading input embeddings all rows share (the system prompt and few-shot turns of one template)."""
    import torch

    shortest = min(r.shape[0] for r in rows)
    same = torch.ones(shortest, dtype=torch.bool, device=rows[0].device)
    for r in rows[1:]:
        same &= torch.all(r[:shortest] == rows[0][:shortest], dim=-1)
    return int(same.long().cumprod(0).sum())


def _left_padded(rows: list, pad_vec: Any, prefix: int) -> tuple[Any, Any]:
    """(B, prefix + W, H) embeddings and mask: the shared prefix first, then each row's rest left-padded to W."""
    import torch

    width = max(r.shape[0] - prefix for r in rows)
    batch = pad_vec.expand(len(rows), prefix + width, pad_vec.shape[-1]).clone()
    mask = torch.zeros(len(rows), prefix + width, dtype=torch.long, device=pad_vec.device)
    for i, r in enumerate(rows):
        rest = r.shape[0] - prefix
        batch[i, :prefix] = r[:prefix]
        mask[i, :prefix] = 1
        batch[i, prefix + width - rest:] = r[prefix:]
        mask[i, prefix + width - rest:] = 1
    return batch, mask


def _generate_shared_prefix(model: Any, rows: list, pad_vec: Any, kwargs: dict) -> Any:
    """Prefill the prompt prefix the rows share once (batch 1), repeat its KV cache over the batch, and generate
    from it: the rows' own parts are left-padded *after* the prefix, positions follow the attention mask.

    Every row of a node run shares the Whisperer's system prompt and few-shot turns (~100-250 tokens), so a
    batch of B otherwise prefills them B times; on a CPU that prefill is most of a batch's time. Greedy text is
    the same as the plain path's (tested). None (the caller runs the plain path) for one row, a short shared
    prefix, or a transformers that lacks what this needs.
    """
    if len(rows) < 2:
        return None
    prefix = shared_prefix_length(rows) - 1  # each row keeps >= 1 token of its own to feed generate
    if prefix < SHARED_PREFIX_MIN:
        return None
    try:
        from transformers import DynamicCache

        cache = DynamicCache()
        model(inputs_embeds=rows[0][:prefix][None], cache=cache, use_cache=True)
        cache.batch_repeat_interleave(len(rows))
        batch, mask = _left_padded(rows, pad_vec, prefix)
        return model.generate(inputs_embeds=batch, attention_mask=mask, cache=cache, **kwargs)
    except (TypeError, ValueError, AttributeError, NotImplementedError) as e:  # an older/newer cache API
        logging.getLogger(__name__).info("shared-prefix generation unavailable (%s); plain batch", e)
        return None
