"""The adapter folder (`models/rezcty_adapters/NAME/`): format, config, hashes, mismatch checks.

    NAME/
      rezcty_adapter.json        what it is: specialist, base model + hash, eye, projector, template
      adapter_config.json        PEFT LoRA config          } absent for a projector-only adapter
      adapter_model.safetensors  PEFT LoRA weights         }
      projector.safetensors      projector weights, saved apart so they cannot be lost (absent when text-only)

The loader refuses an adapter whose base model or eye differs from what it was trained with,
and says which.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_NAME = "rezcty_adapter.json"
PROJECTOR_FILE = "projector.safetensors"
LORA_FILE = "adapter_model.safetensors"
FORMAT = "rezcty-adapter"
FORMAT_VERSION = 1

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
_EDGE = 1 << 20  # bytes hashed at each end of a weight file


class AdapterError(ValueError):
    """An adapter folder is malformed or does not fit the chosen base model / eye."""


def model_fingerprint(folder: str | os.PathLike) -> str:
    """A quick identity of a model folder: config + tokenizer + each weight file's size and ends.

    Hashing all of an 8B model's 16 GB would take minutes; sizes plus the first and last MiB of
    every weight file tell different checkpoints apart in milliseconds.
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        path = root / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    for path in sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            digest.update(f.read(_EDGE))
            if size > 2 * _EDGE:
                f.seek(size - _EDGE)
                digest.update(f.read(_EDGE))
    return digest.hexdigest()[:16]



@dataclass
class AdapterConfig:
    specialist: str | None
    base_model: dict  # {"name", "hash", "hidden_size"}
    eye: dict | None = None  # {"model", "model_hash", "dim", "pooling"} or None for text-only
    projector: dict | None = None  # Projector.config()
    template: dict = field(default_factory=dict)  # templates.template_info()
    lora: dict | None = None  # {"r", "alpha", "dropout", "target_modules"}
    training: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "specialist": self.specialist,
                "base_model": self.base_model, "eye": self.eye, "projector": self.projector,
                "template": self.template, "lora": self.lora, "training": self.training}

    @classmethod
    def from_json(cls, data: dict, where: str = CONFIG_NAME) -> AdapterConfig:
        if data.get("format") != FORMAT:
            raise AdapterError(f"{where}: not a rezcty adapter config (format {data.get('format')!r}, expected {FORMAT!r})")
        if int(data.get("version", 0)) > FORMAT_VERSION:
            raise AdapterError(f"{where}: adapter format version {data['version']} is newer than this rezcty "
                               f"understands ({FORMAT_VERSION}); update rezcty")
        if "base_model" not in data:
            raise AdapterError(f"{where}: missing 'base_model'")
        return cls(specialist=data.get("specialist"), base_model=data["base_model"], eye=data.get("eye"),
                   projector=data.get("projector"), template=data.get("template") or {}, lora=data.get("lora"),
                   training=data.get("training") or {})


def read_adapter_config(folder: str | os.PathLike) -> AdapterConfig:
    root = Path(folder)
    path = root / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{root}: not a rezcty adapter folder (no {CONFIG_NAME}); train one with "
                           "`python -m training.train_adapter`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    config = AdapterConfig.from_json(data, str(path))
    if config.projector and not (root / PROJECTOR_FILE).is_file():
        raise AdapterError(f"{root}: config names a projector but {PROJECTOR_FILE} is missing")
    if config.lora and not (root / LORA_FILE).is_file():
        raise AdapterError(f"{root}: config names LoRA weights but {LORA_FILE} is missing")
    return config


def write_adapter_config(folder: str | os.PathLike, config: AdapterConfig) -> Path:
    path = Path(folder) / CONFIG_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def check_base(config: AdapterConfig, adapter_dir: str, base_name: str, base_hash: str) -> None:
    """Refuse an adapter trained on another base model, naming both."""
    want = config.base_model
    if want.get("hash") and want["hash"] != base_hash:
        raise AdapterError(
            f"adapter '{Path(adapter_dir).name}' was trained on base model '{want.get('name')}' (hash {want['hash']}) "
            f"but base model '{base_name}' (hash {base_hash}) was chosen; pick the base model it was trained on")


def check_eye(config: AdapterConfig, adapter_name: str, meta: dict) -> None:
    """Refuse an image embedding from another DINOv2 model, dimension or pooling, naming both."""
    eye = config.eye
    if not eye:
        return
    got_dim = meta.get("dim")
    if got_dim is not None and eye.get("dim") is not None and int(got_dim) != int(eye["dim"]):
        raise AdapterError(f"adapter '{adapter_name}' expects {eye['dim']}-d embeddings from '{eye.get('model')}', "
                           f"got {got_dim}-d from '{meta.get('model')}'; embed with the DINOv2 model it was trained with")
    want_hash, got_hash = eye.get("model_hash"), meta.get("model_hash")
    if want_hash and got_hash and want_hash != got_hash:
        raise AdapterError(f"adapter '{adapter_name}' was trained with eye '{eye.get('model')}' (hash {want_hash}) "
                           f"but the embedding comes from '{meta.get('model')}' (hash {got_hash}); "
                           "use the DINOv2 model it was trained with")
    want_pool, got_pool = eye.get("pooling"), meta.get("pooling")
    if want_pool and got_pool and want_pool != got_pool:
        raise AdapterError(f"adapter '{adapter_name}' was trained with pooling '{want_pool}' but the embedding "
                           f"uses '{got_pool}'; set the DINOv2 Embed pooling to '{want_pool}'")
