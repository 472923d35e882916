"""LoRA and textual-inversion files that ComfyUI loads, and the LoRA modules that train them.

File format: kohya's `lora_unet_*` / `lora_te_*` keys (`.lora_down.weight`, `.lora_up.weight`, `.alpha`)
over diffusers UNet / transformers CLIP module names, which ComfyUI's LoRA loaders map onto its own
model. Embeddings are A1111-style `{"emb_params": (n_vectors, 768)}`. Both carry the rezcty metadata
keys agreed in docs/lora.md: `rezcty_trigger`, `rezcty_role`, `rezcty_base_hash`, `rezcty_args`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

# kohya's default LoRA targets: the linear / 1x1-conv layers inside the UNet's transformer blocks,
# and the attention + MLP projections of the CLIP text encoder.
UNET_TARGET_BLOCKS = ("Transformer2DModel",)
TE_TARGET_BLOCKS = ("CLIPAttention", "CLIPMLP")
UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"
ROLE_DEFAULTS = {"style": {"rank": 64, "alpha": 32.0}, "structure": {"rank": 16, "alpha": 8.0}}
METADATA_KEYS = ("rezcty_trigger", "rezcty_role", "rezcty_base_hash", "rezcty_args")


class LoRAModule(nn.Module):
    """y = base(x) + up(down(x)) * alpha / rank * multiplier; `up` starts at zero so training starts at the base."""

    def __init__(self, name: str, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.name = name
        self.rank = rank
        self.alpha = float(alpha)
        self.scale = self.alpha / rank
        self.multiplier = 1.0
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if isinstance(base, nn.Conv2d):
            self.lora_down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.lora_up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            self.lora_down = nn.Linear(base.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.base_forward = base.forward
        base.forward = self.forward  # patched in place, so the model's own code calls through the LoRA

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base_forward(x, *args, **kwargs)
        delta = self.lora_up(self.lora_down(self.dropout(x.to(self.lora_down.weight.dtype))))
        return out + (delta * (self.scale * self.multiplier)).to(out.dtype)


class LoRANetwork(nn.Module):
    """All LoRA modules of a UNet (and optionally the text encoder), named as in the kohya file."""

    def __init__(self, modules: list[LoRAModule]):
        super().__init__()
        self.loras = nn.ModuleDict({m.name: m for m in modules})

    def unet_parameters(self) -> list[nn.Parameter]:
        return [p for n, m in self.loras.items() if n.startswith(UNET_PREFIX + "_") for p in m.parameters()]

    def te_parameters(self) -> list[nn.Parameter]:
        return [p for n, m in self.loras.items() if n.startswith(TE_PREFIX + "_") for p in m.parameters()]

    def set_multiplier(self, value: float) -> None:
        for m in self.loras.values():
            m.multiplier = value

    def kohya_state_dict(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        out = {}
        for name, m in self.loras.items():
            out[f"{name}.lora_down.weight"] = m.lora_down.weight.detach().to("cpu", dtype).contiguous()
            out[f"{name}.lora_up.weight"] = m.lora_up.weight.detach().to("cpu", dtype).contiguous()
            out[f"{name}.alpha"] = torch.tensor(m.alpha, dtype=dtype)
        return out

    def load_kohya_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        names = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in state}
        if names != set(self.loras):
            missing, extra = sorted(set(self.loras) - names)[:3], sorted(names - set(self.loras))[:3]
            raise ValueError(f"{source}: LoRA modules do not match this run (missing {missing}, unexpected {extra}); "
                             "was it written with another rank/target set or --train-text-encoder setting?")
        with torch.no_grad():
            for name, m in self.loras.items():
                m.lora_down.weight.copy_(state[f"{name}.lora_down.weight"])
                m.lora_up.weight.copy_(state[f"{name}.lora_up.weight"])


def _targets(root: nn.Module, block_types: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    found = []
    for block_name, block in root.named_modules():
        if type(block).__name__ not in block_types:
            continue
        for child_name, child in block.named_modules():
            is_linear = isinstance(child, nn.Linear)
            is_1x1 = isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1)
            if is_linear or is_1x1:
                found.append((f"{block_name}.{child_name}", child))
    return found


def inject_lora(unet: nn.Module, text_encoder: nn.Module | None, rank: int, alpha: float,
                dropout: float = 0.0) -> LoRANetwork:
    """Wrap the kohya target layers of `unet` (and `text_encoder` when given) with fresh LoRA modules."""
    if rank <= 0 or alpha <= 0:
        raise ValueError(f"LoRA rank and alpha must be positive (got rank {rank}, alpha {alpha})")
    modules = []
    for name, layer in _targets(unet, UNET_TARGET_BLOCKS):
        modules.append(LoRAModule(f"{UNET_PREFIX}_{name.replace('.', '_')}", layer, rank, alpha, dropout))
    if text_encoder is not None:
        # kohya names CLIP layers from `text_model.`; transformers 5's CLIPTextModel no longer has that level
        root = "" if hasattr(text_encoder, "text_model") else "text_model."
        for name, layer in _targets(text_encoder, TE_TARGET_BLOCKS):
            modules.append(LoRAModule(f"{TE_PREFIX}_{(root + name).replace('.', '_')}", layer, rank, alpha, dropout))
    if not modules:
        raise ValueError("no LoRA target layers found in the UNet")
    net = LoRANetwork(modules)
    device = next(unet.parameters()).device
    return net.to(device=device, dtype=torch.float32)


def _atomic_save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)
    return path


def rezcty_metadata(trigger: str, role: str, base_hash: str, args: dict, **extra: Any) -> dict[str, str]:
    """The metadata keys docs/lora.md documents (all strings), plus any extra (e.g. kohya `ss_*`)."""
    meta = {"rezcty_trigger": trigger, "rezcty_role": role, "rezcty_base_hash": base_hash,
            "rezcty_args": json.dumps(args, sort_keys=True, default=str)}
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def save_lora(path: str | Path, network: LoRANetwork, metadata: dict[str, str],
              dtype: torch.dtype = torch.float16) -> Path:
    """Write the kohya-format LoRA file (atomically)."""
    return _atomic_save(Path(path), network.kohya_state_dict(dtype), metadata)


def save_embedding(path: str | Path, vectors: torch.Tensor, metadata: dict[str, str]) -> Path:
    """Write an A1111-style embedding `{"emb_params": (n_vectors, dim)}` that ComfyUI's embeddings folder loads."""
    vectors = vectors.detach().to("cpu", torch.float32).reshape(-1, vectors.shape[-1]).contiguous()
    return _atomic_save(Path(path), {"emb_params": vectors}, metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` header of a .safetensors file (without loading tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
