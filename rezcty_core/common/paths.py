"""Where rezcty's own files live: the embedded default models and user-editable data."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
ENV = "REZCTY_EMBEDDED_DIR"
MODELS_SUBDIR = ("rezcty", "embedded")  # under ComfyUI's models/, beside the other packs' downloads

_host_dirs: Callable[[], list[str]] | None = None


def set_host_embedded_dirs(provider: Callable[[], list[str]] | None) -> None:
    """The running ComfyUI's folders for embedded models (the nodes register `models/rezcty/embedded` with
    folder_paths, so `extra_model_paths.yaml` can add more); asked on each lookup, never at import."""
    global _host_dirs
    _host_dirs = provider


def _pack_locations() -> list[Path]:
    """The pack's folder as imported and as resolved (a linked pack has both)."""
    here = Path(os.path.abspath(__file__)).parents[2]
    return [here] if here == PACK_DIR else [here, PACK_DIR]


def embedded_dirs() -> list[Path]:
    """The folders searched for embedded models, in order.

    `REZCTY_EMBEDDED_DIR`, when set, is the only one. Otherwise: the running ComfyUI's `models/rezcty/embedded`
    (and any extra model path for `rezcty_embedded`), then `<ComfyUI>/models/rezcty/embedded` found from the pack's
    own place in `<ComfyUI>/custom_nodes/<pack>`; a clone outside any `custom_nodes/` uses its `.comfyui/embedded`.
    """
    env = os.environ.get(ENV)
    if env:
        return [Path(env)]
    out: list[Path] = []
    if _host_dirs is not None:
        try:
            out += [Path(p) for p in _host_dirs()]
        except Exception:  # a host that cannot answer: the pack's own place still works
            pass
    for pack in _pack_locations():
        if pack.parent.name == "custom_nodes":
            out.append(pack.parent.parent.joinpath("models", *MODELS_SUBDIR))
    if not out:  # a development clone: ./rezcty set-up's folder
        out.append(PACK_DIR / ".comfyui" / "embedded")
    return list(dict.fromkeys(out))


def embedded_dir() -> Path:
    """The folder of the embedded default models: the first of `embedded_dirs()` that exists, else the first
    (where `python -m rezcty_core.embedded prepare` writes by default)."""
    dirs = embedded_dirs()
    return next((d for d in dirs if d.is_dir()), dirs[0])


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
