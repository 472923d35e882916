"""Aspect presets for line 2: an SD 1.5-native base size and the exact Adobe Stock target for each aspect.

The base size is what the first KSampler renders (multiples of 64, 0.25-0.4 MP, the sizes SD 1.5
was trained around); the target is the exact aspect at >= 4,000,000 pixels (Adobe Stock's minimum
is 4 MP), reached by the detail pass, the x4 model upscale and a final exact resize.
Targets are the smallest even multiple of the aspect that reaches 4 MP: 3:2 -> 2454 x 1636
(2448 x 1632 is 3,995,136 px, just under the limit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_STOCK_PIXELS = 4_000_000


@dataclass(frozen=True)
class Preset:
    name: str  # "3:2"
    label: str  # "landscape"
    base: tuple[int, int]  # (width, height) for the first pass
    target: tuple[int, int]  # exact (width, height) of the finished image

    @property
    def target_pixels(self) -> int:
        return self.target[0] * self.target[1]

    def base_size(self, scale: float = 1.0) -> tuple[int, int]:
        """The base size times `scale`, kept on the latent grid (multiples of 8, at least 64)."""
        if not scale > 0:
            raise ValueError(f"base scale must be > 0, got {scale}")
        return tuple(max(64, int(round(v * scale / 8)) * 8) for v in self.base)  # type: ignore[return-value]

    def as_dict(self) -> dict:
        return {"preset": self.name, "label": self.label, "base_width": self.base[0], "base_height": self.base[1],
                "target_width": self.target[0], "target_height": self.target[1]}


def stock_target(aw: int, ah: int, min_pixels: int = MIN_STOCK_PIXELS) -> tuple[int, int]:
    """The smallest exact aw:ah size with even sides and at least `min_pixels` pixels."""
    g = math.gcd(aw, ah)
    aw, ah = aw // g, ah // g
    k = math.ceil(math.sqrt(min_pixels / (aw * ah)))
    while (aw * k) * (ah * k) < min_pixels or (aw * k) % 2 or (ah * k) % 2:
        k += 1
    return aw * k, ah * k


def _p(name: str, label: str, base: tuple[int, int]) -> Preset:
    aw, ah = (int(v) for v in name.split(":"))
    return Preset(name, label, base, stock_target(aw, ah))


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _p("1:1", "square", (512, 512)),
    _p("3:2", "landscape", (768, 512)),
    _p("2:3", "portrait", (512, 768)),
    _p("4:3", "landscape", (704, 512)),
    _p("3:4", "portrait", (512, 704)),
    _p("16:9", "wide", (768, 448)),
    _p("9:16", "tall", (448, 768)),
)}
DEFAULT_PRESET = "1:1"
NAMES = tuple(PRESETS)


def get_preset(name: object) -> Preset:
    """A preset by name ("3:2"; "3x2", "3/2" and spaces are accepted); an unknown one names the allowed values."""
    key = str(name).strip().lower().replace(" ", "").replace("x", ":").replace("/", ":")
    if key in PRESETS:
        return PRESETS[key]
    raise ValueError(f"unknown aspect preset {name!r}; allowed: {', '.join(NAMES)}")
