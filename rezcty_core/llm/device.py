"""Where an LLM runs and how it is quantized: the device pick, the bitsandbytes probe and config, the
`device_map` of a quantized model, and the printed memory plan (the planner is `rezcty_core.llm.memory_plan`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

QUANTIZATIONS = ("none", "8bit", "4bit-nf4")


def pick_device(device: str) -> str:
    """`auto` -> `cuda` when a CUDA GPU is available, else `cpu`; an explicit device is checked and returned."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    return device


_PROBES: dict[tuple[str, str], str | None] = {}


def quantization_problem(quantization: str, device: str) -> str | None:
    """Why `quantization` cannot run on `device` here, or None when it can.

    Probed, not assumed: bitsandbytes runs 8-bit and NF4 on the CPU as well as on CUDA, so a tiny
    quantize + matmul is tried once per process on the device itself.
    """
    if quantization == "none":
        return None
    key = (quantization, device.split(":")[0])
    if key in _PROBES:
        return _PROBES[key]
    problem = None
    try:
        import torch
        from bitsandbytes.nn import Linear4bit, Linear8bitLt

        dev = "cuda" if key[1] == "cuda" else key[1]
        if quantization == "8bit":
            layer = Linear8bitLt(64, 32, bias=False, has_fp16_weights=False).to(dev)
        else:
            layer = Linear4bit(64, 32, bias=False, compute_dtype=torch.float32, quant_type="nf4",
                               compress_statistics=True).to(dev)
        out = layer(torch.randn(2, 64, device=dev))
        if not torch.isfinite(out).all():
            problem = f"bitsandbytes' {quantization} kernels return non-finite values on {dev}"
    except ImportError as e:
        problem = (f"bitsandbytes is not installed ({e}); `pip install bitsandbytes` or choose quantization 'none'")
    except Exception as e:  # a missing kernel for this device raises anything from RuntimeError to NotImplementedError
        problem = f"bitsandbytes cannot run {quantization} on {key[1]} ({type(e).__name__}: {str(e)[:160]})"
    _PROBES[key] = problem
    return problem


def quantization_config(quantization: str, device: str, compute_dtype: Any = None) -> Any:
    """bitsandbytes config for `8bit` / `4bit-nf4` (NF4, double quant, compute in `compute_dtype`, default
    the precision policy's choice for the device); None for `none`. Raises saying why and what to pick
    when bitsandbytes cannot run it on this device."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization '{quantization}': expected one of {', '.join(QUANTIZATIONS)}")
    if quantization == "none":
        return None
    problem = quantization_problem(quantization, device)
    if problem:
        other = "4bit-nf4" if quantization == "8bit" else "8bit"
        fallback = "'none'" if quantization_problem(other, device) else f"'{other}' or 'none'"
        raise RuntimeError(f"quantization '{quantization}' cannot run here: {problem}; choose quantization {fallback}")
    from transformers import BitsAndBytesConfig

    if compute_dtype is None:
        from rezcty_core.common.precision import choose_precision

        compute_dtype = choose_precision(device).torch_dtype
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def device_map_for(device: str) -> dict:
    """`device_map` that puts a quantized model wholly on `device` (bitsandbytes quantizes while loading)."""
    return {"": 0 if device == "cuda" else device}


def print_memory_plan(base_dir: Path, device: str, **plan_kw: Any) -> Any:
    """Plan the peak memory from config.json (no weights), print it, and on CUDA refuse early when it
    cannot fit the free memory, naming the knob to turn. Returns the plan (None when no plan can be made)."""
    from rezcty_core.llm.memory_plan import check_fits, plan_memory, read_config

    try:
        config = read_config(base_dir)
        plan = plan_memory(config, device_type=device.split(":")[0], **plan_kw)
    except (ValueError, FileNotFoundError) as e:
        print(f"[rezcty] memory plan skipped: {e}", file=sys.stderr)
        return None
    print(f"[rezcty] {plan.text()}", file=sys.stderr)
    check_fits(plan, config, device=device)
    return plan
