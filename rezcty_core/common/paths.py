"""Where rezcty's own files live: the embedded default models and user-editable data."""
from __future__ import annotations

import os
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def embedded_dir() -> Path:
    """Folder of the converted embedded default models (DINOv2-small, SmolLM2, BRISQUE, CLIP BPE).

    `REZCTY_EMBEDDED_DIR` wins; otherwise the set-up cache inside this repo's `.comfyui/`,
    so the models are found whatever base directory the server runs with.
    """
    env = os.environ.get("REZCTY_EMBEDDED_DIR")
    if env:
        return Path(env)
    return PACK_DIR / ".comfyui" / "embedded"


def embedded_raw(*parts: str) -> Path:
    """A file as unpacked from its PyPI wheel, before any conversion."""
    return embedded_dir().joinpath("raw", *parts)


def read_pairs(path: Path) -> dict[str, str]:
    """A user-editable `source = target` word list (lower-cased; `#` starts a comment)."""
    pairs: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            src, dst = (p.strip().lower() for p in line.split("=", 1))
            if src and dst:
                pairs[src] = dst
    return pairs
