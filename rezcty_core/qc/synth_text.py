"""Watermark and lettering overlays, for calibrating and testing the QC text check (rezcty_core/qc/text.py).

`watermark(rgb, kind, opacity, height_pct, seed)` composites one of `KINDS` onto a copy of `rgb`:
* `centre` — a line of stock-preview text ("SAMPLE PREVIEW", ...) across the middle;
* `corner` — a logo-like mark in a corner: a ring with initials beside a short agency name;
* `tiled` — a repeated word tiled diagonally (30 degrees) over the whole frame, like stock previews.
Text is white with a dark 1-px outline at `opacity` (0..1); its cap height is `height_pct` % of the frame
height. The font is Pillow's bundled one (no system fonts needed). `lettering(rgb, text)` paints a given text
across the middle (a brand name on a product: the Metadata Writer's test).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("centre", "corner", "tiled")
WORDS = ("SAMPLE PREVIEW", "STOCK WATERMARK", "PREVIEW ONLY", "COPYRIGHT PHOTO", "DEMO IMAGE", "NOT FOR SALE")
AGENCIES = ("PIXSTOCK", "photobank", "IMAGERY co", "StockLab", "VISUALS")


def _font(px: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, int(px)))


def _text_layer(size: tuple[int, int], text: str, px: int, opacity: float, xy: tuple[int, int] | None = None,
                anchor: str = "mm") -> Image.Image:
    w, h = size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    a = int(round(255 * opacity))
    draw.text(xy or (w // 2, h // 2), text, font=_font(px), fill=(255, 255, 255, a), anchor=anchor,
              stroke_width=max(1, px // 24), stroke_fill=(30, 30, 30, a))
    return layer


def watermark(rgb: np.ndarray, kind: str = "centre", opacity: float = 0.5, height_pct: float = 6.0,
              seed: int = 0) -> np.ndarray:
    """A copy of `rgb` (uint8 HxWx3) with a watermark of `kind` at `opacity`, text `height_pct` % of the height."""
    if kind not in KINDS:
        raise ValueError(f"unknown watermark kind {kind!r}; one of {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    base = Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("RGBA")
    w, h = base.size
    px = max(6, int(round(h * height_pct / 100.0 / 0.72)))  # cap height ~0.72 of the font size
    if kind == "centre":
        text = WORDS[int(rng.integers(len(WORDS)))]
        while _font(px).getlength(text) > 0.95 * w and px > 6:
            px -= 1
        layer = _text_layer((w, h), text, px, opacity)
    elif kind == "corner":
        name = AGENCIES[int(rng.integers(len(AGENCIES)))]
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        a = int(round(255 * opacity))
        r = int(px * 0.9)
        margin = max(4, int(0.03 * min(w, h)))
        right, bottom = bool(rng.integers(2)), bool(rng.integers(2))
        text_w = int(_font(px).getlength(name))
        total = 2 * r + px // 3 + text_w
        x0 = w - margin - total if right else margin
        cy = h - margin - r if bottom else margin + r
        draw.ellipse([x0, cy - r, x0 + 2 * r, cy + r], outline=(255, 255, 255, a), width=max(2, r // 6))
        draw.text((x0 + r, cy), name[:2].upper(), font=_font(int(r * 0.9)), fill=(255, 255, 255, a), anchor="mm")
        draw.text((x0 + 2 * r + px // 3, cy), name, font=_font(px), fill=(255, 255, 255, a), anchor="lm",
                  stroke_width=max(1, px // 24), stroke_fill=(30, 30, 30, a))
    else:  # tiled
        word = WORDS[int(rng.integers(len(WORDS)))].split()[0]
        big = int(1.5 * max(w, h))
        layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        a = int(round(255 * opacity))
        font = _font(px)
        step_x, step_y = int(font.getlength(word) + 2 * px), int(3.5 * px)
        for row, y in enumerate(range(0, big, step_y)):
            for x in range(-(row % 2) * step_x // 2, big, step_x):
                draw.text((x, y), word, font=font, fill=(255, 255, 255, a),
                          stroke_width=max(1, px // 24), stroke_fill=(30, 30, 30, a))
        layer = layer.rotate(30, resample=Image.BICUBIC)
        left, top = (big - w) // 2, (big - h) // 2
        layer = layer.crop((left, top, left + w, top + h))
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB"))


def lettering(rgb: np.ndarray, text: str, height_pct: float = 8.0, opacity: float = 1.0) -> np.ndarray:
    """A copy of `rgb` with `text` painted across the middle (a shop sign, a brand name on a product)."""
    base = Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("RGBA")
    w, h = base.size
    px = max(6, int(round(h * height_pct / 100.0 / 0.72)))
    while _font(px).getlength(text) > 0.95 * w and px > 6:
        px -= 1
    return np.asarray(Image.alpha_composite(base, _text_layer((w, h), text, px, opacity)).convert("RGB"))
