"""Which embedded LLM to run where: Qwen2.5-Coder-1.5B-Instruct when memory allows, else SmolLM2-135M.

    choice = choose_embedded_llm(free_bytes=12 * GiB, device_type="cpu", purpose="analyst")
    choice.name      # "embedded: Qwen2.5-Coder-1.5B-Instruct" (a RezctyLLMLoader base_model value)
    choice.reason    # one line: the planned peak against the free memory, or why not

The decision is the memory plan (`rezcty_core.llm.memory_plan`) of the model's `config.json` at the dtype
the precision policy picks for the device (fp32 on the CPU, 2 bytes on a GPU), plus a headroom for what
else the server holds (the DINOv2 eye, images, ComfyUI itself), against the free memory reported by the
server (`/system_stats`: `ram_free` on the CPU, the first GPU's `vram_free`). No weights are read.

Time is the second rule, for `./rezcty demo`: `within_budget` keeps Qwen only while the demo's estimate from the one
declared cost table (`rezcty_core/data/llm_costs.json`: measured seconds per task, model and device, each with its
source) stays within that device's budget; where the table has no budget or figure, memory alone decides.
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


# ---------------------------------------------------------------------------------------------
# time: the one declared cost table (rezcty_core/data/llm_costs.json)

COSTS_FILE = Path(__file__).resolve().parents[1] / "data" / "llm_costs.json"
REST = "demo_rest"  # the task row holding what the demo costs besides its LLM lines


@dataclass(frozen=True)
class Cost:
    task: str
    model: str  # a RezctyLLMLoader base_model value, or "*"
    device: str
    seconds: float
    items: int
    source: str

    @property
    def per_item(self) -> float:
        return self.seconds / max(1, self.items)


@dataclass(frozen=True)
class CostTable:
    costs: tuple[Cost, ...]
    budgets: dict  # device -> (seconds, source)
    path: Path | None = None

    def find(self, task: str, model: str, device: str) -> Cost | None:
        return next((c for c in self.costs if c.task == task and c.device == device and c.model in (model, "*")), None)

    def estimate(self, task: str, model: str, device: str, items: int) -> float | None:
        """Seconds for `items` items of `task` with `model` on `device`; None where nothing was measured."""
        cost = self.find(task, model, device)
        return None if cost is None else cost.per_item * items


def load_costs(path: str | Path | None = None) -> CostTable:
    """The cost table; a malformed row is a one-line error naming the file and the row."""
    path = Path(path) if path is not None else COSTS_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    costs = []
    for n, row in enumerate(data.get("costs", []), 1):
        try:
            costs.append(Cost(str(row["task"]), str(row["model"]), str(row["device"]), float(row["seconds"]),
                              int(row.get("items", 1)), str(row["source"])))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: costs row {n}: expected task, model, device, seconds, items, source ({e})") from None
    budgets = {str(b["device"]): (float(b["seconds"]), str(b.get("source", ""))) for b in data.get("budgets", [])}
    return CostTable(tuple(costs), budgets, path)


def within_budget(choice: Choice, task: str, device_type: str, items: int, costs: CostTable | None = None,
                  flag: str = "--whisperer-llm") -> Choice:
    """Qwen (chosen by memory) kept only while the demo's estimate on this device stays within its time budget:
    the task's measured seconds per item x items + the rest of the demo (the cost table). Where the table has no
    budget or no figure for this device, the memory plan alone decides."""
    if not choice.is_qwen:
        return choice
    costs = costs or load_costs()
    budget = costs.budgets.get(device_type)
    qwen = costs.estimate(task, QWEN, device_type, items)
    if budget is None or qwen is None:
        return choice
    rest = costs.estimate(REST, QWEN, device_type, 1) or 0.0
    smol = costs.estimate(task, SMOLLM2, device_type, items)
    unit = "ideas" if task == "whisperer" else "images"
    measured = f"{qwen:.0f} s for {items} {unit} + {rest:.0f} s the rest of the demo on {device_type}"
    other = f"; SmolLM2 {smol:.0f} s" if smol is not None else ""
    if qwen + rest > budget[0]:
        purpose = choice.reason.split(":", 1)[0]
        return Choice(SMOLLM2, f"{purpose}: SmolLM2-135M, {QWEN_NAME} is estimated at {measured} (> {budget[0]:.0f} s "
                               f"budget{other}; {costs.path.name if costs.path else 'cost table'}); {flag} qwen runs "
                               f"it anyway (memory allows it: {choice.reason.split(', ', 1)[-1]})",
                      choice.planned_gib, choice.free_gib)
    return Choice(choice.name, f"{choice.reason}; estimated {measured} (within the {budget[0]:.0f} s budget{other})",
                  choice.planned_gib, choice.free_gib)
