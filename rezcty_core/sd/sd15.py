"""A user's single-file SD 1.5 checkpoint (ldm layout) as diffusers/transformers modules, offline.

No hub access: the UNet config is read from the state-dict shapes (so a reduced-depth checkpoint
loads as well as a real SD 1.5), the VAE and CLIP configs likewise, and the tokenizer is the real
CLIP BPE built from the embedded open_clip vocabulary (`rezcty_core.sd.clip_tokens`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rezcty_core.common.hashing import file_sha256

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")
SD_VAE_SCALING = 0.18215
# SD 1.x attention layout: 8 heads everywhere (not readable from shapes).
SD15_HEADS = 8


class CheckpointError(ValueError):
    """The file is not a usable SD 1.5 single-file checkpoint; the message names it."""


@dataclass
class SD15:
    """The parts of an SD 1.5 checkpoint that training needs."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    path: Path
    sha256: str
    unet_config: dict


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a .safetensors / .ckpt checkpoint; clear one-line errors for missing or bad files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (expected an SD 1.5 .safetensors or .ckpt file)")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        return state.get("state_dict", state)
    except Exception as e:  # corrupt/truncated/not a checkpoint
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def infer_unet_config(state: dict, path: str | Path = "checkpoint") -> dict:
    """diffusers `UNet2DConditionModel` config from ldm UNet shapes (keys start with `model.diffusion_model.`)."""
    unet = _sub(state, UNET_PREFIX)
    if "input_blocks.0.0.weight" not in unet:
        raise CheckpointError(f"{path}: no SD UNet found (no '{UNET_PREFIX}input_blocks.0.0.weight')")
    model_channels, in_channels = unet["input_blocks.0.0.weight"].shape[:2]
    context = next((v.shape[1] for k, v in unet.items() if k.endswith("attn2.to_k.weight")), None)
    if context != 768 or model_channels != 320:
        raise CheckpointError(f"{path}: not an SD 1.5 checkpoint (model_channels {model_channels}, "
                              f"context_dim {context}; SD 1.5 has 320 and 768)")
    n_input = 1 + max(int(k.split(".")[1]) for k in unet if k.startswith("input_blocks."))
    levels: list[dict] = [{"channels": None, "res": 0, "attn": False, "depth": 0}]
    linear_proj = False
    for i in range(1, n_input):
        if f"input_blocks.{i}.0.op.weight" in unet:  # downsample closes the level
            levels.append({"channels": None, "res": 0, "attn": False, "depth": 0})
            continue
        level = levels[-1]
        level["channels"] = unet[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]
        level["res"] += 1
        if f"input_blocks.{i}.1.proj_in.weight" in unet:
            level["attn"] = True
            linear_proj = unet[f"input_blocks.{i}.1.proj_in.weight"].ndim == 2
            blocks = {int(m.group(1)) for k in unet
                      if (m := re.match(rf"input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\.", k))}
            level["depth"] = max(level["depth"], len(blocks))
    res_counts = {lv["res"] for lv in levels}
    if len(res_counts) != 1:
        raise CheckpointError(f"{path}: uneven res blocks per level {sorted(res_counts)} are not supported")
    mid_blocks = {int(m.group(1)) for k in unet if (m := re.match(r"middle_block\.1\.transformer_blocks\.(\d+)\.", k))}
    return {
        "sample_size": 64,
        "in_channels": int(in_channels),
        "out_channels": int(unet["out.2.weight"].shape[0]),
        "down_block_types": ["CrossAttnDownBlock2D" if lv["attn"] else "DownBlock2D" for lv in levels],
        "up_block_types": ["CrossAttnUpBlock2D" if lv["attn"] else "UpBlock2D" for lv in reversed(levels)],
        "block_out_channels": [int(lv["channels"]) for lv in levels],
        "layers_per_block": res_counts.pop(),
        "cross_attention_dim": int(context),
        "attention_head_dim": SD15_HEADS,
        "use_linear_projection": linear_proj,
        "transformer_layers_per_block": [max(lv["depth"], 1) for lv in levels],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_blocks else None,
    }


def infer_vae_config(state: dict, path: str | Path = "checkpoint") -> dict:
    vae = _sub(state, VAE_PREFIX)
    if "encoder.conv_in.weight" not in vae:
        raise CheckpointError(f"{path}: no VAE found (no '{VAE_PREFIX}encoder.conv_in.weight')")
    n_down = 1 + max(int(k.split(".")[2]) for k in vae if k.startswith("encoder.down."))
    channels = [int(vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(n_down)]
    layers = 1 + max(int(k.split(".")[4]) for k in vae if k.startswith("encoder.down.0.block."))
    return {
        "in_channels": int(vae["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(vae["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * n_down,
        "up_block_types": ["UpDecoderBlock2D"] * n_down,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": int(vae["decoder.conv_in.weight"].shape[1]),
        "sample_size": 512,
        "scaling_factor": SD_VAE_SCALING,
    }


def clip_state(state: dict, path: str | Path = "checkpoint") -> dict:
    """CLIP-L text encoder weights with `text_model.` keys, as transformers' `CLIPTextModel` names them."""
    for prefix in CLIP_PREFIXES:
        sub = _sub(state, prefix)
        if "embeddings.token_embedding.weight" in sub:
            return {"text_model." + k: v for k, v in sub.items()}
    raise CheckpointError(f"{path}: no CLIP text encoder found (expected 'cond_stage_model.transformer.text_model.*')")


def infer_clip_config(te_state: dict) -> dict:
    vocab, hidden = te_state["text_model.embeddings.token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[3]) for k in te_state if k.startswith("text_model.encoder.layers."))
    return {
        "vocab_size": int(vocab), "hidden_size": int(hidden), "num_hidden_layers": layers,
        "intermediate_size": int(te_state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_attention_heads": int(hidden) // 64, "max_position_embeddings": int(
            te_state["text_model.embeddings.position_embedding.weight"].shape[0]),
        "hidden_act": "quick_gelu", "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407,
        "pad_token_id": 1,
    }


def make_noise_scheduler():
    """The DDPM training schedule SD 1.5 was trained with (scaled-linear betas, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, prediction_type="epsilon")


def clip_tokenizer():
    """The real CLIP tokenizer (shared with the Whisperer's token counting)."""
    from rezcty_core.sd.clip_tokens import clip_tokenizer as shared

    return shared()


def text_transformer(text_encoder):
    """The CLIP text transformer (`.embeddings`, `.encoder`): `text_model` in transformers 4, the model itself in 5."""
    return getattr(text_encoder, "text_model", text_encoder)


def _load_strict(module, weights: dict, what: str, path: Path) -> None:
    """Load into a module built on the meta device (no random init: loading takes seconds, not a minute)."""
    missing, unexpected = module.load_state_dict(weights, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: {what} weights do not match the inferred config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_sd15(path: str | Path, *, dtype=None, device: str = "cpu") -> SD15:
    """Load an SD 1.5 single-file checkpoint into diffusers `UNet2DConditionModel`, `AutoencoderKL`,
    transformers `CLIPTextModel` + `CLIPTokenizer`, and a `DDPMScheduler`; all offline."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    state = read_state_dict(path)
    unet_config = infer_unet_config(state, path)
    vae_config = infer_vae_config(state, path)
    te_state = clip_state(state, path)
    dtype = dtype or torch.float32

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**infer_clip_config(te_state)))
    _load_strict(unet, convert_ldm_unet_checkpoint(state, unet_config), "UNet", path)
    _load_strict(vae, convert_ldm_vae_checkpoint(state, vae_config), "VAE", path)
    if not hasattr(text_encoder, "text_model"):  # transformers 5 flattened CLIPTextModel: no `text_model.` level
        te_state = {k.removeprefix("text_model."): v for k, v in te_state.items()}
    _load_strict(text_encoder, te_state, "CLIP text encoder", path)
    positions = text_encoder.config.max_position_embeddings
    text_transformer(text_encoder).embeddings.position_ids = torch.arange(positions).unsqueeze(0)  # non-persistent
    del state
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its fp32-cast advice does not apply to training copies
    for module in (unet, vae, text_encoder):
        leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if leftover:
            raise CheckpointError(f"{path}: weights missing from the checkpoint: {leftover[:3]}")
        module.to(device=device, dtype=dtype)
        module.requires_grad_(False)
        module.eval()
    return SD15(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(),
                noise_scheduler=make_noise_scheduler(), path=path, sha256=file_sha256(path),
                unet_config=unet_config)


def encode_prompts(model: SD15, prompts: list[str], device=None):
    """CLIP last hidden states `(B, 77, 768)` for a batch of prompts (truncated to 77 tokens, as SD 1.5)."""
    ids = model.tokenizer(prompts, padding="max_length", truncation=True, max_length=77,
                          return_tensors="pt").input_ids
    return model.text_encoder(ids.to(device or model.text_encoder.device))[0]
