"""Batched generation: many chats in one `generate()` call, each row sampled with its own seed.

    texts = generate_batch(llm, chats, seeds=[1, 2, 3], images=[None, emb, None], max_new_tokens=96)

Rows are left-padded with an attention mask; a row with an image gets its projected DINOv2 tokens spliced in
at its `<image>` placeholder (per row, so rows of different lengths mix freely). Sampling is done here, not by
`generate()`'s global RNG: `RowSampler` draws each row's token from that row's own `torch.Generator`, seeded
with the row's seed, so which ideas share a batch does not change the random numbers a row sees.

What can still differ with the batch: the logits themselves. A padded row goes through matrices of another
shape, and float rounding then differs at the 1e-6 level; a draw that falls exactly on a top-p/top-k boundary
or between two almost equal probabilities can flip. In practice prompts are identical for the same idea and
seed at any batch size on the CPU in fp32 (tested); in bf16/fp16 a flip is more likely. What always holds:
same ideas + same seed + same batch size -> same prompts.
"""
from __future__ import annotations

from typing import Any

from rezcty_core.llm.chat import assemble_inputs, encode_chat, eos_token_ids, with_image_placeholder
from rezcty_core.llm.templates import IMAGE_PLACEHOLDER

SEED_MOD = 2**63

# rows per batch where memory is no constraint: decoding on a CPU is memory-bound and stops gaining past ~16
CPU_MAX_BATCH = 16
GPU_MAX_BATCH = 64


class RowSampler:
    """A transformers logits processor that samples each row with its own generator (temperature, top-k,
    top-p) and returns scores where only the drawn token is finite, so `generate(do_sample=False)` emits it."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, top_k: int, device: Any = "cpu"):
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


def default_batch_size(llm: Any, prompt_tokens: int = 512, new_tokens: int = 128) -> int:
    """Rows per batch chosen from free memory: a quarter of it for the KV cache and activations of the rows."""
    import torch

    model = llm.model
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    layers = int(getattr(cfg, "num_hidden_layers", 24))
    heads = int(getattr(cfg, "num_attention_heads", 16))
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    hidden = int(getattr(cfg, "hidden_size", 2048))
    vocab = int(getattr(cfg, "vocab_size", 50000))
    elem = next(model.parameters()).element_size()
    tokens = prompt_tokens + new_tokens
    per_row = 2 * layers * kv_heads * (hidden // heads) * tokens * elem  # KV cache
    per_row += tokens * hidden * 4 * 8 + vocab * 4 * 4  # activations of the prefill + logits/sampling
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cap = GPU_MAX_BATCH
    else:
        free = _available_ram()
        cap = CPU_MAX_BATCH
    return max(1, min(cap, int(free * 0.25) // max(per_row, 1)))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def row_embeddings(llm: Any, messages: list[dict], image: Any = None) -> Any:
    """`(L, H)` input embeddings of one chat, image tokens spliced in at the placeholder."""
    import torch

    from rezcty_core.llm.adapter import check_eye

    if image is not None:
        if not getattr(llm, "can_see", False):
            raise ValueError(f"LLM '{llm.base_name}' with adapter '{llm.adapter_name or 'none'}' cannot see: it has "
                             "no projector; load an adapter trained with image embeddings or leave the image "
                             "input unconnected")
        check_eye(llm.config, llm.adapter_name or "", dict(getattr(image, "meta", {}) or {}))
        messages = with_image_placeholder(messages)
    encoded = encode_chat(llm.tokenizer, messages)
    if encoded.has_image and image is None:
        raise ValueError(f"the chat holds {IMAGE_PLACEHOLDER} but no image embedding was given")
    vector = getattr(image, "vector", image)
    embeds, _ = assemble_inputs(llm.model, llm.projector, encoded,
                                torch.as_tensor(vector) if vector is not None else None)
    return embeds[0]


def generate_batch(llm: Any, chats: list[list[dict]], seeds: list[int], images: list | None = None, *,
                   temperature: float = 0.75, top_p: float = 0.95, top_k: int = 50, max_new_tokens: int = 128,
                   do_sample: bool = True, processors: list | None = None) -> list[str]:
    """Answer every chat in one `generate()` call (left padding + attention mask); one text per chat.

    `processors`: extra logits processors applied before sampling (e.g. a JSON-schema constraint), each
    seeing the whole batch.
    """
    import torch
    from transformers import LogitsProcessorList

    if not chats:
        return []
    if len(seeds) != len(chats):
        raise ValueError(f"{len(chats)} chats but {len(seeds)} seeds")
    images = list(images) if images is not None else [None] * len(chats)
    llm.load()
    model, tokenizer = llm.model, llm.tokenizer
    eos = eos_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    with torch.inference_mode():
        rows = [row_embeddings(llm, m, img) for m, img in zip(chats, images)]
        embed = model.get_input_embeddings()
        device = embed.weight.device
        pad_vec = embed(torch.tensor([pad_id], device=device))[0]
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


SHARED_PREFIX_MIN = 32  # tokens: below this, one prefill of the whole batch is as cheap


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
        import logging

        logging.getLogger(__name__).info("shared-prefix generation unavailable (%s); plain batch", e)
        return None


def chunks(items: list, size: int) -> list[list]:
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]
