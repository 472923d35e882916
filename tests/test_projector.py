"""The projector family and how embeddings become visual tokens."""
from __future__ import annotations

import pytest
import torch

from rezcty_core.llm.projector import Projector, build_projector, vector_to_tokens


@pytest.mark.parametrize("kind,layers", [("linear", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_projector_types_map_dino_width_to_llm_hidden(kind, layers):
    proj = Projector(kind, 384, 64)
    linears = [m for m in proj.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == layers
    out = proj(torch.randn(384))
    assert out.shape == (1, 64)  # a pooled embedding is one visual token


def test_unknown_projector_type_is_refused():
    with pytest.raises(ValueError, match="unknown projector type 'conv'"):
        build_projector("conv", 384, 64)


def test_patch_grid_is_pooled_to_a_small_grid():
    grid = torch.arange(16 * 16 * 8, dtype=torch.float32).reshape(256, 8)  # 16x16 patches, 8-d
    tokens = vector_to_tokens(grid, grid=2)
    assert tokens.shape == (4, 8)
    # the top-left output token is the mean of the top-left 8x8 block of patches
    block = grid.reshape(16, 16, 8)[:8, :8].reshape(-1, 8).mean(0)
    assert torch.allclose(tokens[0], block)
    # a leading CLS token (1 + 16*16) is dropped before pooling
    with_cls = torch.cat([torch.full((1, 8), 1e6), grid])
    assert torch.allclose(vector_to_tokens(with_cls, grid=2), tokens)
    proj = Projector("mlp2x_gelu", 8, 32, grid=2)
    assert proj(grid).shape == (4, 32)


def test_non_square_patch_grid_and_wrong_width_are_clear_errors():
    with pytest.raises(ValueError, match="not a square grid"):
        vector_to_tokens(torch.randn(7, 8))
    with pytest.raises(ValueError, match="expects 384-d image embeddings, got 768-d"):
        Projector("linear", 384, 64)(torch.randn(768))


def test_config_round_trip_rebuilds_the_same_projector():
    proj = Projector("mlp2x_gelu", 384, 64, grid=3)
    clone = Projector.from_config(proj.config())
    clone.load_state_dict(proj.state_dict())
    x = torch.randn(384)
    assert torch.equal(proj(x), clone(x))
    assert clone.config() == {"type": "mlp2x_gelu", "in_dim": 384, "out_dim": 64, "grid": 3}
