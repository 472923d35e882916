"""What the pixels say: size, orientation, dominant named colours and brightness of an image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageFacts:
    width: int
    height: int
    colors: list[str]
    brightness: str

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def orientation(self) -> str:
        if self.width > self.height * 1.05:
            return "horizontal"
        if self.height > self.width * 1.05:
            return "vertical"
        return "square"


def describe_image(pixels: np.ndarray) -> ImageFacts:
    """Size, dominant named colours (each >= 12 % of the image) and overall brightness."""
    h, w = pixels.shape[:2]
    step = max(1, int(max(h, w) / 96))
    small = pixels[::step, ::step, :3].reshape(-1, 3).astype(np.float32) / 255.0
    mx, mn = small.max(1), small.min(1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    r, g, b = small[:, 0], small[:, 1], small[:, 2]
    delta = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / delta) % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60
    names = np.full(len(small), "", dtype=object)
    names[:] = "gray"
    names[(sat < 0.15) & (mx > 0.85)] = "white"
    chroma = (sat >= 0.15) & (mx >= 0.2)
    bins = [(15, "red"), (40, "orange"), (68, "yellow"), (165, "green"), (255, "blue"), (290, "purple"),
            (345, "pink"), (361, "red")]
    low = 0
    for high, name in bins:
        names[chroma & (hue >= low) & (hue < high)] = name
        low = high
    names[chroma & np.isin(names, ["orange", "red"]) & (mx < 0.55)] = "brown"
    names[mx < 0.2] = "black"
    values, counts = np.unique(names.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    colors = [str(values[i]) for i in order if counts[i] / len(small) >= 0.12][:3]
    luma = float((0.2126 * r + 0.7152 * g + 0.0722 * b).mean())
    brightness = "dark" if luma < 0.25 else "bright" if luma > 0.75 else "medium"
    return ImageFacts(w, h, colors, brightness)

