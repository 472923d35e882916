"""The projection layer: DINOv2 embedding -> tokens in the LLM's input-embedding space.

LLaVA-style family chosen by a string in the adapter config: `linear` or `mlpNx_gelu`
(`mlp2x_gelu` by default). A pooled embedding `(dim,)` becomes one visual token; a patch grid
`(tokens, dim)` is average-pooled to a small `grid x grid` grid first, so the number of visual
tokens stays small whatever the image resolution.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
DEFAULT_PROJECTOR = "mlp2x_gelu"
DEFAULT_PATCH_GRID = 2


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """`linear` or `mlpNx_gelu` (N linear layers with GELU between them)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match:
        raise ValueError(f"unknown projector type '{kind}': expected linear or mlpNx_gelu (e.g. mlp2x_gelu)")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def vector_to_tokens(vector: torch.Tensor, grid: int = DEFAULT_PATCH_GRID) -> torch.Tensor:
    """An embedding vector as `(n_tokens, dim)`: pooled `(dim,)` -> 1 token, patch grid -> grid*grid tokens.

    A patch grid may carry a leading CLS token (tokens = 1 + side*side); it is dropped before pooling.
    """
    if vector.dim() == 1:
        return vector.unsqueeze(0)
    if vector.dim() != 2:
        raise ValueError(f"image embedding must be (dim,) or (tokens, dim), got shape {tuple(vector.shape)}")
    tokens, dim = vector.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        side = math.isqrt(tokens - 1)
        if side * side != tokens - 1:
            raise ValueError(f"patch embedding with {tokens} tokens is not a square grid (with or without CLS)")
        vector = vector[1:]
    if side <= grid:
        return vector
    patches = vector.T.reshape(1, dim, side, side).float()
    pooled = nn.functional.adaptive_avg_pool2d(patches, grid)
    return pooled.reshape(dim, grid * grid).T.to(vector.dtype)


class Projector(nn.Module):
    """Maps image embeddings to `(n_tokens, hidden)` input embeddings for the LLM."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, grid: int = DEFAULT_PATCH_GRID):
        super().__init__()
        self.kind, self.in_dim, self.out_dim, self.grid = kind, in_dim, out_dim, grid
        self.net = build_projector(kind, in_dim, out_dim)

    def forward(self, vector: torch.Tensor) -> torch.Tensor:
        if vector.shape[-1] != self.in_dim:
            raise ValueError(f"projector expects {self.in_dim}-d image embeddings, got {vector.shape[-1]}-d")
        tokens = vector_to_tokens(vector, self.grid)
        param = next(self.net.parameters())
        return self.net(tokens.to(device=param.device, dtype=param.dtype))

    def config(self) -> dict:
        return {"type": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim, "grid": self.grid}

    @classmethod
    def from_config(cls, config: dict) -> Projector:
        return cls(config["type"], int(config["in_dim"]), int(config["out_dim"]), int(config.get("grid", DEFAULT_PATCH_GRID)))
