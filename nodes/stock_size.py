"""Stock Size: an aspect preset -> the SD 1.5 base size for the first pass and the exact Adobe Stock target size."""
from __future__ import annotations

from rezcty_core.sd import presets

from .common import CATEGORY
from .host import io


def _preset_table() -> str:
    return "; ".join(f"{p.name} {p.base[0]}x{p.base[1]} -> {p.target[0]}x{p.target[1]}" for p in presets.PRESETS.values())


class RezctyStockSize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RezctyStockSize",
            display_name="Stock Size (aspect preset)",
            category=f"{CATEGORY}/image",
            description="Picks the sizes of one aspect preset: the SD 1.5-native base size for Empty Latent Image "
                        "and the exact stock target (>= 4 MP) for the final Upscale Image. " + _preset_table(),
            inputs=[
                io.Combo.Input("preset", options=list(presets.NAMES), default=presets.DEFAULT_PRESET,
                               tooltip="Aspect ratio (width:height). " + _preset_table()),
                io.Float.Input("base_scale", default=1.0, min=0.05, max=2.0, step=0.05,
                               tooltip="Scales the base (first-pass) size only, kept on multiples of 8: 1.0 = the "
                                       "SD 1.5-native size; smaller for quick drafts. The stock target never changes."),
            ],
            outputs=[
                io.Int.Output(display_name="base_width", tooltip="Width for Empty Latent Image."),
                io.Int.Output(display_name="base_height", tooltip="Height for Empty Latent Image."),
                io.Int.Output(display_name="target_width", tooltip="Exact width of the finished stock image."),
                io.Int.Output(display_name="target_height", tooltip="Exact height of the finished stock image."),
                io.String.Output(display_name="info", tooltip="The preset and its sizes as text."),
            ],
        )

    @classmethod
    def execute(cls, preset: str, base_scale: float = 1.0) -> io.NodeOutput:
        # API-format graphs may send any string: refuse an unknown one with the allowed values
        p = presets.get_preset(preset)
        bw, bh = p.base_size(base_scale)
        tw, th = p.target
        info = f"{p.name} {p.label}: base {bw}x{bh}, stock target {tw}x{th} ({tw * th / 1e6:.2f} MP)"
        return io.NodeOutput(bw, bh, tw, th, info, ui={"text": [info]})


NODES = [RezctyStockSize]
