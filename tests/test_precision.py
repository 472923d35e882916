"""rezcty_core.common.precision: the dtype table, overrides, autocast and the grad scaler."""
from __future__ import annotations

import pytest
import torch

from rezcty_core.common.precision import choose_precision, normalize_dtype, policy_dtype


@pytest.mark.parametrize("capability, want", [
    ((6, 1), "fp16"),   # P100 / GTX 10xx
    ((7, 0), "fp16"),   # V100
    ((7, 5), "fp16"),   # T4: the user's GPU, bf16 only emulated
    ((8, 0), "bf16"),   # A100
    ((8, 6), "bf16"),   # RTX 30xx, A10
    ((8, 9), "bf16"),   # L4, RTX 40xx
    ((9, 0), "bf16"),   # H100
])
def test_capability_table(capability, want):
    dtype, reason = policy_dtype("cuda", capability)
    assert dtype == want, reason
    assert f"{capability[0]}.{capability[1]}" in reason


def test_cpu_is_fp32_and_needs_no_scaler():
    prec = choose_precision("cpu", training=True)
    assert prec.dtype == "fp32" and prec.torch_dtype == torch.float32
    assert not prec.uses_grad_scaler and not prec.grad_scaler().is_enabled()
    assert prec.record()["dtype"] == "fp32" and prec.record()["device"] == "cpu"
    x = torch.ones(2, 2)
    with prec.autocast():
        assert (x @ x).dtype == torch.float32


def test_t4_trains_fp16_with_a_grad_scaler_and_infers_without():
    train = choose_precision("cuda", training=True, capability=(7, 5))
    assert train.dtype == "fp16" and train.uses_grad_scaler
    assert train.record() == {"dtype": "fp16", "device": "cuda", "reason": train.reason, "grad_scaler": True,
                              "overridden": False, "compute_capability": "7.5"}
    infer = choose_precision("cuda", training=False, capability=(7, 5))
    assert infer.dtype == "fp16" and not infer.uses_grad_scaler
    ampere = choose_precision("cuda", training=True, capability=(8, 0))
    assert ampere.dtype == "bf16" and not ampere.uses_grad_scaler


def test_override_is_recorded_and_bad_choices_are_refused():
    forced = choose_precision("cuda", "bf16", training=True, capability=(7, 5))
    assert forced.dtype == "bf16" and forced.overridden and "emulates" in forced.reason
    same = choose_precision("cuda", "fp16", capability=(7, 5))
    assert same.dtype == "fp16" and not same.overridden
    cpu_bf16 = choose_precision("cpu", "bf16")
    assert cpu_bf16.dtype == "bf16" and cpu_bf16.overridden
    x = torch.ones(4, 4)
    with cpu_bf16.autocast():
        assert (x @ x).dtype == torch.bfloat16  # autocast really runs in the chosen dtype
    with pytest.raises(ValueError, match="fp16 cannot train on the CPU"):
        choose_precision("cpu", "fp16", training=True)
    with pytest.raises(ValueError, match="expected one of auto, fp32, fp16, bf16"):
        normalize_dtype("int8")
    assert normalize_dtype("torch.bfloat16") == "bf16" and normalize_dtype("half") == "fp16"
    with pytest.raises(ValueError, match="compute capability"):
        policy_dtype("cuda", None)


def test_sd_training_follows_the_policy_and_records_it():
    """train_lora / train_embedding: `--mixed-precision auto` is the policy's pick, written into the file's metadata."""
    import argparse
    import json

    from training.train_lora import pick_runtime, precision_record

    args = argparse.Namespace(device="cpu", mixed_precision="auto", gradient_checkpointing=None)
    rt = pick_runtime(args)
    assert rt.autocast_dtype is None and rt.weight_dtype == torch.float32
    assert json.loads(precision_record(args)) == {"dtype": "fp32", "device": "cpu", "grad_scaler": False,
                                                  "requested": "auto"}
