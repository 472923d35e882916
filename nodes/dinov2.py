"""DINOv2 Loader and DINOv2 Embed: thin V3 nodes over rezcty_core.eye.dinov2 (the eye)."""
from __future__ import annotations

import os

from rezcty_core.eye import dinov2 as vision
from rezcty_core.eye.dinov2_onnx import EMBEDDED_NAME

from . import host
from .common import (
    CATEGORY,
    EMBEDDED_PREFIX,
    DinoType,
    EmbeddingType,
    images_to_uint8,
    list_model_dirs,
    output_dir,
    resolve_model_dir,
)
from .host import io, ui

EMBEDDED_CHOICE = f"{EMBEDDED_PREFIX}{EMBEDDED_NAME}"
# Features cached by the node live with the server's outputs, never in the repo; `training.precompute_dinov2
# --cache <output>/rezcty_cache/dinov2` shares them (same key, same file name).
CACHE_SUBDIR = os.path.join("rezcty_cache", "dinov2")


def node_cache_dir() -> str:
    return os.environ.get("REZCTY_DINOV2_CACHE") or os.path.join(output_dir(), CACHE_SUBDIR)


class RezctyDINOv2Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RezctyDINOv2Loader",
            display_name="DINOv2 Loader",
            category=f"{CATEGORY}/vision",
            description="Pick a DINOv2 model (HF folders under models/dinov2/, or the embedded dinov2-small). "
                        "Weights load on the first embed and stay loaded in ComfyUI's memory manager, which "
                        "evicts them for other models and frees them on Unload Models.",
            inputs=[
                io.Combo.Input("model", options=[EMBEDDED_CHOICE, *list_model_dirs("dinov2")], default=EMBEDDED_CHOICE,
                               tooltip="A transformers DINOv2 folder in models/dinov2/ (save_pretrained layout), or "
                                       "the embedded default derived from DINOv2-small."),
                io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto",
                               tooltip="auto: ComfyUI's device (the GPU when there is one)."),
                io.Combo.Input("dtype", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                               tooltip="auto: bf16 (or fp16) on GPU, fp32 on CPU. The cache is shared across dtypes."),
            ],
            outputs=[DinoType.Output(display_name="dino")],
        )

    @classmethod
    def execute(cls, model: str, device: str, dtype: str) -> io.NodeOutput:
        path = EMBEDDED_NAME if model == EMBEDDED_CHOICE else resolve_model_dir("dinov2", model)
        return io.NodeOutput(vision.load_dinov2(path, device=device, dtype=dtype))


class RezctyDINOv2Embed(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RezctyDINOv2Embed",
            display_name="DINOv2 Embed",
            category=f"{CATEGORY}/vision",
            description="One DINOv2 embedding per image of the batch, with the same preprocessing and cache as "
                        "training.precompute_dinov2.",
            inputs=[
                DinoType.Input("dino", tooltip="From DINOv2 Loader."),
                io.Image.Input("image", tooltip="A batch of images; each one gets its own embedding."),
                io.Combo.Input("pooling", options=list(vision.POOLINGS), default="cls",
                               tooltip="cls: the class token; mean: mean of patch tokens; cls+mean: both "
                                       "concatenated (2 x dim); patch: the token grid (tokens x dim) for projectors "
                                       "that take several visual tokens."),
                io.Boolean.Input("use_cache", default=True,
                                 tooltip=f"Reuse and store features in output/{CACHE_SUBDIR}/ (one file per image, "
                                         "keyed by pixels + model weights + preprocessing + pooling)."),
                io.Int.Input("resolution", default=0, min=0, max=2044, step=14, optional=True,
                             tooltip="Square input size in pixels, a multiple of 14; 0 = the model's default (224)."),
            ],
            outputs=[EmbeddingType.Output(display_name="embedding")],
        )

    @classmethod
    def execute(cls, dino, image, pooling: str, use_cache: bool, resolution: int = 0) -> io.NodeOutput:
        frames = images_to_uint8(image)
        bar = host.progress_bar(len(frames))
        embeddings = vision.embed_images(
            dino, frames, pooling=pooling, resolution=resolution or None,
            cache_dir=node_cache_dir() if use_cache else None,
            sources=[f"IMAGE[{i}]" for i in range(len(frames))],
            progress=lambda done, total: bar.update_absolute(done, total))
        return io.NodeOutput(embeddings, ui=ui.PreviewText(str(embeddings).splitlines()[0]))


NODES = [RezctyDINOv2Loader, RezctyDINOv2Embed]
