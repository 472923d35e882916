"""Who owns a loaded model's memory: the host the pack runs in, asked before every use.

    host().device("auto")       # where models load: ComfyUI's torch device inside ComfyUI, else CUDA or the CPU
    host().use(model)           # before each forward: weights loaded, on the device, room made for them
    host().release(model)       # keep_loaded off: give the memory back (inside ComfyUI: when the prompt ends)
    host().unload(model)        # give it back now

A model (`Resident`: the LLM with its projector and adapter, DINOv2) knows how to read its weights from disk
and how to drop them; the host decides when. Scripts and tests run on `LocalHost`: weights load on first
use on the device core picks, and stay until `unload()`. The ComfyUI node pack installs its own host
(`nodes/host.py`, through `set_host`): there every model is a ModelPatcher in ComfyUI's memory manager, which
loads it on ComfyUI's device, evicts it when another model needs the memory, and releases it on `/free`.
Nothing here imports torch or ComfyUI.
"""
from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Resident(Protocol):
    """What a host needs from a model to manage its memory."""

    kind: str  # "LLM", "DINOv2": what logs and ComfyUI's model list call it
    label: str  # which one: "SmolLM2-135M-Instruct + whisperer_v1", "dinov2-small"
    device: str  # where its weights run, chosen by `host().device(...)` when the handle was made
    patcher: Any  # the host's own record of the loaded weights (ComfyUI: a ModelPatcher); None when not loaded

    @property
    def movable(self) -> bool:
        """False when the loaded weights cannot change device (bitsandbytes 4-bit/8-bit): unload drops them."""

    @property
    def weights_loaded(self) -> bool: ...

    def memory_needed(self) -> int:
        """Bytes to make room for on `device` before loading (weights, and for an LLM its KV cache)."""

    def load_weights(self, device: str) -> None:
        """Read the weights from disk onto `device` (a no-op when they are loaded)."""

    def weight_modules(self) -> dict[str, Any]:
        """The loaded torch modules by name (what a host moves and measures)."""

    def drop_weights(self) -> None:
        """Forget the weights; the next `host().use()` reads them again."""


def local_device(requested: str = "auto") -> str:
    """Core's own device pick, for scripts without a host: `auto` -> `cuda` when available, else `cpu`."""
    from rezcty_core.common.precision import resolve_device

    return resolve_device(requested)


class LocalHost:
    """No memory manager around us (scripts, tests): load on first use, keep until unloaded.

    Handles made with `keep=True` are held here, so a later `load_llm` of the same model finds them loaded;
    the others live as long as their caller holds them."""

    def __init__(self) -> None:
        self._kept: dict[int, Resident] = {}
        self._lock = threading.Lock()

    def device(self, requested: str = "auto") -> str:
        return local_device(requested)

    def keep(self, model: Resident, keep: bool) -> None:
        with self._lock:
            if keep:
                self._kept[id(model)] = model
            else:
                self._kept.pop(id(model), None)

    def use(self, model: Resident) -> None:
        model.load_weights(model.device)

    def release(self, model: Resident) -> None:
        self.unload(model)

    def unload(self, model: Resident) -> None:
        model.drop_weights()


_HOST: Any = LocalHost()


def set_host(host: Any) -> None:
    """Install the host of this process (the ComfyUI node pack does, at import)."""
    global _HOST
    _HOST = host


def host() -> Any:
    """The host of this process: `LocalHost` unless a node pack installed its own."""
    return _HOST
