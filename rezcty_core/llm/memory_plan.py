"""A memory plan before any LLM load or training: from `config.json` alone, no weights.

    plan = plan_memory(read_config(folder), mode="train", quantization="4bit-nf4", dtype="fp16",
                       lora_r=32, seq_len=1024, gradient_checkpointing=True)
    print(plan.text())                  # the table of what takes memory
    check_fits(plan, device="cuda")     # raises MemoryPlanError with the knob to turn when it cannot fit

Arithmetic over the architecture numbers (hidden size, layers, heads, KV heads, head dim,
intermediate size, vocabulary, tied embeddings), the way the pack really loads and trains:

* weights: linear layers of the decoder blocks at 2 (fp16/bf16) / 4 (fp32) bytes, 1 byte + scales (8bit)
  or 0.5 byte + absmax constants (NF4 blocks of 64; double quant stores them in 8 bit); embeddings,
  norms and `lm_head` stay in the compute dtype (bitsandbytes does not quantize them), and QLoRA
  training (`prepare_model_for_kbit_training`) upcasts them to fp32;
* LoRA and the projector: fp32 weights + gradients + two AdamW moments (16 bytes a parameter);
* activations: with gradient checkpointing one hidden state per layer and token plus one layer
  recomputed; without, every layer's saved tensors (SDPA attention: no seq x seq matrix);
  the logits at fp32 with their gradient (a 128k-256k vocabulary makes them large);
* inference: the KV cache for prompt + new tokens and one layer's prefill activations;
* overhead: the CUDA context and allocator slack.

`param_count` is exact (tests compare it with a meta-device build); activations are estimates
(within ~15% of measured peaks is what to expect).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

GiB = 1024**3
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
QUANTIZATIONS = ("none", "8bit", "4bit-nf4")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CUDA_CONTEXT_BYTES = int(0.45 * GiB)  # CUDA context + cuBLAS workspaces, outside torch's allocator
ALLOCATOR_SLACK = 0.08  # fragmentation of the caching allocator
NF4_BYTES_PER_PARAM = 0.5 + (1 + 4 / 256) / 64  # 4-bit codes + 8-bit absmax per 64 + fp32 per 256 absmax
NF4_PLAIN_BYTES_PER_PARAM = 0.5 + 4 / 64
INT8_BYTES_PER_PARAM = 1 + 4 / 4096  # int8 + a row-wise fp32 scale (rows of ~4096)


class MemoryPlanError(RuntimeError):
    """The plan does not fit the device; the message names the knob to turn."""


def read_config(folder_or_file: str | os.PathLike) -> dict:
    path = Path(folder_or_file)
    path = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no config.json to plan memory from") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    return data.get("text_config", data)  # multimodal configs (Gemma 3) keep the LLM under text_config


@dataclass(frozen=True)
class Architecture:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool
    name: str = "?"

    @classmethod
    def from_config(cls, cfg: dict) -> Architecture:
        try:
            hidden, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
            heads = int(cfg["num_attention_heads"])
            inter, vocab = int(cfg["intermediate_size"]), int(cfg["vocab_size"])
        except KeyError as e:
            raise ValueError(f"config.json lacks {e.args[0]!r}: cannot plan memory for this model") from None
        kv = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        model_type = str(cfg.get("model_type", ""))
        qkv_bias = bool(cfg.get("attention_bias", model_type.startswith("qwen2")))
        tied = bool(cfg.get("tie_word_embeddings", model_type.startswith("gemma")))
        return cls(hidden, layers, heads, kv, head_dim, inter, vocab, tied, qkv_bias,
                   name=(cfg.get("architectures") or [model_type or "?"])[0])

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear in one decoder block."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def block_linear_params(self) -> int:
        n = sum(a * b for a, b in self.linear_shapes().values())
        if self.qkv_bias:
            n += self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim
        return n * self.layers

    def other_params(self) -> int:
        """Embeddings, lm_head (untied), norms: what bitsandbytes leaves unquantized."""
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        norms = self.layers * self.norms_per_layer() * self.hidden + self.hidden
        return emb + norms

    def norms_per_layer(self) -> int:
        return 4 if self.name.lower().startswith("gemma2") or self.name.lower().startswith("gemma3") else 2

    def param_count(self) -> int:
        return self.block_linear_params() + self.other_params()

    def lora_params(self, r: int, targets: tuple[str, ...] | list[str]) -> int:
        shapes = self.linear_shapes()
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            raise ValueError(f"LoRA target {unknown[0]!r} is not a linear of this architecture "
                             f"(expected some of {', '.join(shapes)})")
        return self.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


@dataclass
class MemoryPlan:
    """Bytes per part; `total` is the planned peak."""
    mode: str
    settings: dict
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def total_gib(self) -> float:
        return self.total / GiB

    def text(self) -> str:
        s = self.settings
        head = (f"memory plan ({self.mode}) for {s['model']}: quantization {s['quantization']}, dtype {s['dtype']}, "
                f"seq {s['seq_len']}, batch {s['batch_size']}")
        if self.mode == "train":
            head += (f", LoRA r{s['lora_r']} on {len(s['targets'])} targets, gradient checkpointing "
                     f"{'on' if s['gradient_checkpointing'] else 'off'}, {s['image_tokens']} image tokens")
        lines = [head] + [f"  {k:<22} {v / GiB:7.2f} GiB" for k, v in self.parts.items()]
        lines.append(f"  {'planned peak':<22} {self.total_gib:7.2f} GiB")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"mode": self.mode, **self.settings, "parts_gib": {k: round(v / GiB, 3) for k, v in self.parts.items()},
                "total_gib": round(self.total_gib, 3)}


def _weights_bytes(arch: Architecture, quantization: str, dtype: str, upcast_other: bool) -> tuple[int, int]:
    b = DTYPE_BYTES[dtype]
    linear = arch.block_linear_params()
    per = {"none": b, "8bit": INT8_BYTES_PER_PARAM, "4bit-nf4": NF4_BYTES_PER_PARAM}[quantization]
    other_b = 4 if upcast_other and quantization != "none" else b
    return int(linear * per), arch.other_params() * other_b


def plan_memory(config: dict, *, mode: str = "inference", quantization: str = "none", dtype: str = "fp16",
                seq_len: int = 1024, batch_size: int = 1, lora_r: int = 32,
                targets: tuple[str, ...] | list[str] = DEFAULT_TARGETS, gradient_checkpointing: bool = True,
                image_tokens: int = 4, max_new_tokens: int = 256, projector_in: int = 384,
                device_type: str = "cuda", lora: bool = True) -> MemoryPlan:
    """Planned peak memory of loading (`mode="inference"`) or training (`mode="train"`) a model."""
    if mode not in ("inference", "train"):
        raise ValueError(f"mode '{mode}': expected inference or train")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization '{quantization}': expected one of {', '.join(QUANTIZATIONS)}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype '{dtype}': expected one of {', '.join(DTYPE_BYTES)}")
    arch = Architecture.from_config(config)
    b = DTYPE_BYTES[dtype]
    h, i, v, layers = arch.hidden, arch.intermediate, arch.vocab, arch.layers
    kv_dim, q_dim = arch.kv_heads * arch.head_dim, arch.heads * arch.head_dim
    targets = list(targets) if lora else []
    settings = {"model": arch.name, "params_b": round(arch.param_count() / 1e9, 3), "quantization": quantization,
                "dtype": dtype, "seq_len": seq_len, "batch_size": batch_size, "lora_r": lora_r if lora else 0,
                "targets": targets, "gradient_checkpointing": gradient_checkpointing, "image_tokens": image_tokens}
    plan = MemoryPlan(mode, settings)
    linear_w, other_w = _weights_bytes(arch, quantization, dtype, upcast_other=mode == "train")
    plan.parts["weights (blocks)"] = linear_w
    plan.parts["weights (emb/head/norm)"] = other_w
    tokens = batch_size * (seq_len + image_tokens)
    biggest_linear = max(a * c for a, c in arch.linear_shapes().values())
    if quantization != "none":  # one layer's weight is dequantized to the compute dtype at a time
        plan.parts["dequant buffer"] = 2 * biggest_linear * b
    if mode == "train":
        trainable = arch.lora_params(lora_r, targets) if lora else 0
        trainable += projector_in * h + h * h + 2 * h
        plan.parts["LoRA+projector (Adam)"] = trainable * 16
        # saved tensors of one decoder block per token, in the compute dtype: norms, q/k/v/attention out,
        # the MLP's gate/up/act/product, and LoRA dropout copies of each target's input
        lora_in = sum(arch.linear_shapes()[t][0] for t in targets)
        block = (4 * h + q_dim + 2 * kv_dim + q_dim + 4 * i + lora_in) * b
        if gradient_checkpointing:
            plan.parts["activations"] = tokens * (layers * h * b + 2 * block)
        else:
            plan.parts["activations"] = tokens * layers * block
        logit_b = 4 if quantization != "none" else b  # the upcast lm_head gives fp32 logits
        plan.parts["logits + loss grad"] = tokens * v * (logit_b + 4 + 4)
    else:
        total_tokens = batch_size * (seq_len + image_tokens + max_new_tokens)
        plan.parts["KV cache"] = 2 * layers * kv_dim * total_tokens * b
        plan.parts["prefill activations"] = tokens * (4 * h + q_dim + 2 * kv_dim + 3 * i) * b
        plan.parts["logits"] = batch_size * v * 4 * 2  # generate keeps the last position's logits only
    if device_type == "cuda":
        plan.parts["allocator slack"] = int(ALLOCATOR_SLACK * sum(plan.parts.values()))
        plan.parts["CUDA context"] = CUDA_CONTEXT_BYTES
    return plan


def suggestions(config: dict, plan: MemoryPlan, budget: int, **kw) -> list[str]:
    """Knobs that make the plan fit `budget` bytes, each with the plan it gives, cheapest to quality first."""
    s = dict(plan.settings)
    base = {"mode": plan.mode, "quantization": s["quantization"], "dtype": s["dtype"], "seq_len": s["seq_len"],
            "batch_size": s["batch_size"], "lora_r": s["lora_r"] or 32, "targets": s["targets"] or DEFAULT_TARGETS,
            "gradient_checkpointing": s["gradient_checkpointing"], "image_tokens": s["image_tokens"], **kw}
    tries: list[tuple[str, dict]] = []
    if plan.mode == "train" and not s["gradient_checkpointing"]:
        tries.append(("turn gradient checkpointing on (--gradient-checkpointing)", {"gradient_checkpointing": True}))
    if s["quantization"] != "4bit-nf4":
        tries.append(("use 4bit-nf4", {"quantization": "4bit-nf4"}))
        if s["quantization"] == "none":
            tries.append(("use 8bit", {"quantization": "8bit"}))
    if s["batch_size"] > 1:
        tries.append(("lower --batch-size to 1 (raise --grad-accum instead)", {"batch_size": 1}))
    for seq in (512, 256):
        if s["seq_len"] > seq:
            tries.append((f"lower --max-length to {seq}", {"seq_len": seq}))
    if plan.mode == "train" and (s["lora_r"] or 0) > 8:
        tries.append(("lower --lora-r to 8", {"lora_r": 8}))
    out = []
    for label, change in tries:
        alt = plan_memory(config, **{**base, **change})
        if alt.total <= budget:
            out.append(f"{label} (plans {alt.total_gib:.1f} GiB)")
    if not out and tries:
        alt = plan_memory(config, **{**base, **{k: v for _, c in tries for k, v in c.items()}})
        if alt.total <= budget:
            out.append("all of: " + ", ".join(label for label, _ in tries) + f" (plans {alt.total_gib:.1f} GiB)")
    return out


def check_fits(plan: MemoryPlan, config: dict, budget_bytes: int | None = None, device: str = "cuda",
               **kw) -> None:
    """Raise MemoryPlanError when the plan exceeds `budget_bytes` (default: the GPU's free memory now).

    On the CPU with no budget given nothing is checked (RAM is not what a T4 user runs out of)."""
    if budget_bytes is None:
        if not str(device).startswith("cuda"):
            return
        import torch

        budget_bytes = torch.cuda.mem_get_info(torch.device(device))[0] + CUDA_CONTEXT_BYTES * int(
            torch.cuda.is_initialized())
    if plan.total <= budget_bytes:
        return
    fixes = suggestions(config, plan, budget_bytes, **kw)
    hint = "; ".join(fixes) if fixes else "pick a smaller base model"
    raise MemoryPlanError(f"planned peak {plan.total_gib:.1f} GiB for {plan.settings['model']} ({plan.mode}, "
                          f"{plan.settings['quantization']}, {plan.settings['dtype']}) exceeds the "
                          f"{budget_bytes / GiB:.1f} GiB free on {device}; {hint}")
