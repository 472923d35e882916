"""How many rows go into one `generate()`: the batch size from free memory, and the chunks of a job list.

The sampling itself (left padding, the shared prompt prefix, one seed per row) is `rezcty_core.llm.sampling`.
"""
from __future__ import annotations

from typing import Any

# rows per batch where memory is no constraint: decoding on a CPU is memory-bound and stops gaining past ~16
CPU_MAX_BATCH = 16
GPU_MAX_BATCH = 64


def default_batch_size(model: Any, prompt_tokens: int = 512, new_tokens: int = 128) -> int:
    """Rows per batch chosen from free memory: a quarter of it for the KV cache and activations of the rows."""
    import torch

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


def chunks(items: list, size: int) -> list[list]:
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]
