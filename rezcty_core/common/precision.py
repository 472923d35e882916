"""One precision policy for every model the pack loads or trains.

    prec = choose_precision(device="auto", dtype="auto", training=True)
    model.to(prec.device, prec.torch_dtype)           # or dtype=prec.torch_dtype in from_pretrained
    scaler = prec.grad_scaler()
    with prec.autocast():
        loss = ...
    scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    meta["precision"] = prec.record()

The table (`policy_dtype`): fp32 on the CPU; bf16 on GPUs with native bf16 (compute capability
>= 8.0: A100, L4, RTX 30xx/40xx, H100); fp16 below (T4 7.5, V100 7.0). torch reports bf16 as
"supported" on a T4, but only through emulation: a T4 gets fp16, and training in fp16 gets a
grad scaler. `dtype=` (the `--dtype` flag, a node option) overrides the table; the choice and
why are recorded in the outputs. torch is imported only when a torch object is asked for.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

DTYPES = ("auto", "fp32", "fp16", "bf16")
_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16", "fp32": "fp32",
            "fp16": "fp16", "bf16": "bf16", "auto": "auto"}
BF16_MIN_CAPABILITY = (8, 0)


def normalize_dtype(name: str) -> str:
    key = str(name).strip().lower().replace("torch.", "")
    if key not in _ALIASES:
        raise ValueError(f"dtype '{name}': expected one of {', '.join(DTYPES)}")
    return _ALIASES[key]


def policy_dtype(device_type: str, capability: tuple[int, int] | None = None) -> tuple[str, str]:
    """The table: `(dtype, reason)` for a device type and (for CUDA) its compute capability."""
    if device_type == "cpu":
        return "fp32", "CPU: fp32 (half precision is slow or unsupported in CPU kernels)"
    if device_type == "cuda":
        if capability is None:
            raise ValueError("a CUDA device needs its compute capability to choose a dtype")
        cc = f"{capability[0]}.{capability[1]}"
        if tuple(capability) >= BF16_MIN_CAPABILITY:
            return "bf16", f"GPU compute capability {cc} >= 8.0: native bf16"
        return "fp16", f"GPU compute capability {cc} < 8.0 (T4, V100): no native bf16, fp16 tensor cores"
    if device_type == "mps":
        return "fp16", "Apple MPS: fp16"
    raise ValueError(f"device '{device_type}': expected cpu, cuda or mps")


@dataclass(frozen=True)
class Precision:
    """What one model computes in: `dtype` (fp32/fp16/bf16), on `device`, and whether training scales grads."""
    device: str
    dtype: str
    reason: str
    capability: tuple[int, int] | None = None
    training: bool = False
    overridden: bool = False

    @property
    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def uses_grad_scaler(self) -> bool:
        """fp16 training needs loss scaling (its gradients underflow); bf16 and fp32 do not."""
        return self.training and self.dtype == "fp16"

    def autocast(self):
        """A context that runs the forward in `dtype` (a no-op for fp32)."""
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device_type, dtype=self.torch_dtype)

    def grad_scaler(self):
        """A `torch.amp.GradScaler`, enabled only where `uses_grad_scaler` (disabled it passes values through)."""
        import torch

        return torch.amp.GradScaler(self.device_type if self.device_type != "mps" else "cpu",
                                    enabled=self.uses_grad_scaler)

    def record(self) -> dict:
        """For outputs (adapter config, LoRA metadata): what was chosen and why."""
        out = {"dtype": self.dtype, "device": self.device_type, "reason": self.reason,
               "grad_scaler": self.uses_grad_scaler, "overridden": self.overridden}
        if self.capability is not None:
            out["compute_capability"] = f"{self.capability[0]}.{self.capability[1]}"
        return out


def resolve_device(device: str = "auto") -> str:
    import torch

    if device in ("auto", None, ""):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    return str(device)


def device_capability(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return tuple(torch.cuda.get_device_capability(torch.device(device)))


def choose_precision(device: str = "auto", dtype: str = "auto", *, training: bool = False,
                     capability: tuple[int, int] | None = None) -> Precision:
    """The policy for one model: the table for `device`, unless `dtype` overrides it.

    `capability` stands in for the GPU's (tests; planning for another machine)."""
    wanted = normalize_dtype(dtype)
    dev = device if capability is not None and device not in ("auto", "", None) else resolve_device(device)
    dev_type = dev.split(":")[0]
    cap = capability if capability is not None else device_capability(dev)
    table_dtype, reason = policy_dtype(dev_type, cap)
    if wanted == "auto":
        return Precision(dev, table_dtype, reason, cap, training)
    if wanted == "fp16" and dev_type == "cpu" and training:
        raise ValueError("dtype fp16 cannot train on the CPU (no fp16 grad scaling there); pick fp32 or bf16")
    note = f"--dtype {wanted} chosen (the table says {table_dtype}: {reason})"
    if wanted == "bf16" and cap is not None and tuple(cap) < BF16_MIN_CAPABILITY:
        note += "; this GPU only emulates bf16, expect it to be slow"
    return Precision(dev, wanted, note, cap, training, overridden=wanted != table_dtype)
