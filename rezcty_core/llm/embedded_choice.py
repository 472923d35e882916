"""Which embedded LLM to run where: Qwen2.5-Coder-1.5B-Instruct when memory allows, else SmolLM2-135M.

    choice = choose_embedded_llm(free_bytes=12 * GiB, device_type="cpu", purpose="analyst")
    choice.name      # "embedded: Qwen2.5-Coder-1.5B-Instruct" (a RezctyLLMLoader base_model value)
    choice.reason    # one line: the planned peak against the free memory, or why not

The decision is the memory plan (`rezcty_core.llm.memory_plan`) of the model's `config.json` at the dtype
the precision policy picks for the device (fp32 on the CPU, 2 bytes on a GPU), plus a headroom for what
else the server holds (the DINOv2 eye, images, ComfyUI itself), against the free memory reported by the
server (`/system_stats`: `ram_free` on the CPU, the first GPU's `vram_free`). No weights are read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rezcty_core.common.paths import embedded_dir
from rezcty_core.common.precision import policy_dtype
from rezcty_core.llm.embedded import QWEN_NAME, SMOLLM2_NAME
from rezcty_core.llm.memory_plan import GiB, plan_memory, read_config

PREFIX = "embedded: "
QWEN = f"{PREFIX}{QWEN_NAME}"
SMOLLM2 = f"{PREFIX}{SMOLLM2_NAME}"
# what the server holds beside the LLM while it runs (ComfyUI + torch, DINOv2-small, a batch of images)
HEADROOM = {"cpu": int(1.5 * GiB), "cuda": int(0.75 * GiB), "mps": int(1.0 * GiB)}
LOAD_FACTOR = 1.10  # transient copies while the weights are cast/moved at load time


@dataclass(frozen=True)
class Choice:
    name: str  # the RezctyLLMLoader base_model value
    reason: str
    planned_gib: float | None = None
    free_gib: float | None = None

    @property
    def is_qwen(self) -> bool:
        return self.name == QWEN

    def to_json(self) -> dict:
        return {"model": self.name, "reason": self.reason, "planned_gib": self.planned_gib, "free_gib": self.free_gib}


def plan_dtype(device_type: str) -> str:
    """The dtype the loader computes in on this device type (sizes only: fp16 and bf16 weigh the same)."""
    return policy_dtype("cpu")[0] if device_type == "cpu" else "fp16"


def needed_bytes(config: dict, device_type: str, *, seq_len: int = 1024, max_new_tokens: int = 256,
                 batch_size: int = 1) -> int:
    plan = plan_memory(config, mode="inference", dtype=plan_dtype(device_type), seq_len=seq_len,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, image_tokens=0,
                       device_type="cuda" if device_type == "cuda" else "cpu")
    return int(plan.total * LOAD_FACTOR) + HEADROOM.get(device_type, HEADROOM["cpu"])


def free_memory(system_stats: dict) -> tuple[str, int]:
    """(device type, free bytes) from a ComfyUI `/system_stats` reply: the first GPU's free VRAM, else free RAM."""
    for dev in system_stats.get("devices") or []:
        kind = str(dev.get("type") or "cpu")
        if kind != "cpu" and dev.get("vram_free") is not None:
            return kind, int(dev["vram_free"])
    ram = (system_stats.get("system") or {}).get("ram_free")
    if ram is None:
        raise ValueError("/system_stats has neither a GPU's vram_free nor system.ram_free")
    return "cpu", int(ram)


def choose_embedded_llm(free_bytes: int, device_type: str = "cpu", *, purpose: str = "analyst",
                        folder: Path | None = None, seq_len: int = 1024, max_new_tokens: int = 256,
                        batch_size: int = 1) -> Choice:
    """Qwen when its planned peak + headroom fits `free_bytes` on `device_type`, else SmolLM2, with the reason."""
    folder = Path(folder) if folder is not None else embedded_dir() / QWEN_NAME
    free_gib = round(free_bytes / GiB, 1)
    try:
        config = read_config(folder)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as e:
        return Choice(SMOLLM2, f"{purpose}: SmolLM2-135M, the embedded Qwen is not set up ({e}; run ./rezcty setup)",
                      None, free_gib)
    need = needed_bytes(config, device_type, seq_len=seq_len, max_new_tokens=max_new_tokens, batch_size=batch_size)
    need_gib = round(need / GiB, 1)
    where = "RAM" if device_type == "cpu" else f"{device_type} memory"
    if need <= free_bytes:
        return Choice(QWEN, f"{purpose}: {QWEN_NAME}, it plans {need_gib} GiB ({plan_dtype(device_type)}, headroom "
                            f"included) and {free_gib} GiB {where} is free", need_gib, free_gib)
    return Choice(SMOLLM2, f"{purpose}: SmolLM2-135M, {QWEN_NAME} plans {need_gib} GiB ({plan_dtype(device_type)}, "
                           f"headroom included) but only {free_gib} GiB {where} is free", need_gib, free_gib)
