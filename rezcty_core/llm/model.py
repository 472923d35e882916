"""The projector-LLM: a causal LLM (+ optional rezcty adapter) that can read DINOv2 embeddings.

    llm = load_llm("embedded", adapter="models/rezcty_adapters/whisperer_v1")
    text = llm.generate(build_messages("whisperer", "a knight", has_image=True), image=embedding, seed=1)
    reply = llm.generate_json(build_messages("judge", "...", False), validate_judge_reply, temperature=0.2)

`LoadedLLM` and the process-wide cache (`load_llm`, `unload_all`). The chat encoding with the image
placeholder is `rezcty_core.llm.chat`, the device and quantization `rezcty_core.llm.device`, the embedded
models `rezcty_core.llm.embedded`, JSON replies `rezcty_core.llm.json_reply`.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rezcty_core.llm import constrained
from rezcty_core.llm.adapter import (
    LORA_FILE,
    PROJECTOR_FILE,
    AdapterConfig,
    AdapterError,
    check_base,
    check_eye,
    file_sha256,
    model_fingerprint,
    read_adapter_config,
)
from rezcty_core.llm.chat import assemble_inputs, encode_chat, eos_token_ids, with_image_placeholder
from rezcty_core.llm.device import device_map_for, pick_device, print_memory_plan, quantization_config
from rezcty_core.llm.embedded import base_display_name, resolve_base
from rezcty_core.llm.json_reply import JsonReply, extract_json
from rezcty_core.llm.templates import IMAGE_PLACEHOLDER


class LoadedLLM:
    """A base LLM with an optional rezcty adapter (LoRA + projector); loads lazily, unloads on request."""

    def __init__(self, base: str | os.PathLike, adapter: str | os.PathLike | None = None,
                 quantization: str = "none", device: str = "auto", keep_loaded: bool = True, dtype: str = "auto"):
        from rezcty_core.common.precision import choose_precision

        self.base_dir = resolve_base(base)
        self.base_name = base_display_name(self.base_dir)
        self.adapter_dir = Path(adapter) if adapter else None
        self.adapter_name = self.adapter_dir.name if self.adapter_dir else None
        self.quantization = quantization
        self.device = pick_device(device)
        self.keep_loaded = keep_loaded
        self.precision = choose_precision(self.device, dtype)
        quantization_config(quantization, self.device, self.precision.torch_dtype)  # fail early, saying why
        self.config: AdapterConfig | None = read_adapter_config(self.adapter_dir) if self.adapter_dir else None
        self.base_hash = model_fingerprint(self.base_dir)
        if self.config is not None:
            check_base(self.config, str(self.adapter_dir), self.base_name, self.base_hash)
        self.model: Any = None
        self.tokenizer: Any = None
        self.projector: Any = None
        self._lock = threading.Lock()

    # -- identity -------------------------------------------------------------------------
    @property
    def specialist(self) -> str | None:
        return self.config.specialist if self.config else None

    @property
    def can_see(self) -> bool:
        """True when the adapter has a projector, i.e. `generate(image=...)` is meaningful."""
        return bool(self.config and self.config.projector)

    @property
    def identity(self) -> dict:
        ident = {"base": self.base_name, "base_hash": self.base_hash, "adapter": self.adapter_name,
                 "adapter_hash": None, "quantization": self.quantization}
        if self.adapter_dir:
            files = [self.adapter_dir / n for n in ("rezcty_adapter.json", LORA_FILE, PROJECTOR_FILE)]
            ident["adapter_hash"] = "-".join(file_sha256(p)[:8] for p in files if p.is_file())
        return ident

    def __repr__(self) -> str:
        eye = self.config.eye.get("model") if self.config and self.config.eye else None
        return (f"LoadedLLM(base={self.base_name}, adapter={self.adapter_name or 'none'}, "
                f"specialist={self.specialist}, can_see={self.can_see}, eye={eye}, "
                f"quantization={self.quantization}, dtype={self.precision.dtype}, device={self.device})")

    # -- loading --------------------------------------------------------------------------
    def load(self) -> LoadedLLM:
        with self._lock:
            if self.model is None:
                self._load()
        return self

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = self.precision.torch_dtype
        quant = quantization_config(self.quantization, self.device, dtype)
        print_memory_plan(self.base_dir, self.device, mode="inference", quantization=self.quantization,
                          dtype=self.precision.dtype, seq_len=1024, image_tokens=4 if self.can_see else 0)
        kwargs: dict = {"dtype": dtype}
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map=device_map_for(self.device))
        tokenizer = AutoTokenizer.from_pretrained(self.base_dir)
        model = AutoModelForCausalLM.from_pretrained(self.base_dir, **kwargs)
        if quant is None:
            model.to(self.device)
        hidden = model.get_input_embeddings().weight.shape[1]
        projector = None
        if self.config is not None and self.config.lora:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter_dir), is_trainable=False)
        if self.config is not None and self.config.projector:
            from safetensors.torch import load_file

            from rezcty_core.llm.projector import Projector

            projector = Projector.from_config(self.config.projector)
            if projector.out_dim != hidden:
                raise AdapterError(f"adapter '{self.adapter_name}' projects to {projector.out_dim}-d but base model "
                                   f"'{self.base_name}' has hidden size {hidden}")
            projector.load_state_dict(load_file(str(self.adapter_dir / PROJECTOR_FILE)))
            projector.to(device=model.get_input_embeddings().weight.device, dtype=dtype).eval()
        model.eval()
        self.model, self.tokenizer, self.projector = model, tokenizer, projector

    def unload(self) -> None:
        """Drop the weights (a later generate() loads them again)."""
        with self._lock:
            self.model = self.tokenizer = self.projector = None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def release(self) -> None:
        """Called by consumers after use: unloads unless the loader asked to keep the model loaded."""
        if not self.keep_loaded:
            self.unload()

    # -- generation -----------------------------------------------------------------------
    def generate(self, messages: list[dict], image: Any = None, *, temperature: float = 0.75, top_p: float = 0.95,
                 top_k: int = 50, max_new_tokens: int = 128, seed: int = 0, do_sample: bool = True) -> str:
        """Answer a chat. `image` is an ImageEmbedding (`.vector`, `.meta`) for the `<image>` placeholder."""
        import torch

        self.load()
        messages = with_image_placeholder(messages) if image is not None else messages
        if image is not None:
            if not self.can_see:
                raise ValueError(f"LLM '{self.base_name}' with adapter '{self.adapter_name or 'none'}' cannot see: "
                                 "it has no projector; load an adapter trained with image embeddings or leave the "
                                 "image input unconnected")
            check_eye(self.config, self.adapter_name or "", dict(getattr(image, "meta", {}) or {}))
        vector = getattr(image, "vector", image)
        encoded = encode_chat(self.tokenizer, messages)
        if encoded.has_image and image is None:
            raise ValueError(f"the chat holds {IMAGE_PLACEHOLDER} but no image embedding was given")
        sample = do_sample and temperature > 0
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) % (2**63))
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(int(seed) % (2**63))
            embeds, _ = assemble_inputs(self.model, self.projector, encoded,
                                        torch.as_tensor(vector) if vector is not None else None)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            eos = eos_token_ids(self.tokenizer, self.model)
            kwargs: dict = {"max_new_tokens": int(max_new_tokens), "do_sample": sample, "eos_token_id": eos,
                            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]}
            if sample:
                kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    def generate_json(self, messages: list[dict], validate: Callable[[Any], Any] | None = None, *,
                      retries: int = 2, image: Any = None, seed: int = 0, schema: dict | None = None,
                      **sampling: Any) -> JsonReply:
        """Generate until the reply holds JSON that `validate` accepts (it returns the value or raises).

        With `schema` (a JSON schema) decoding is constrained to it (`rezcty_core.llm.constrained`): the first
        reply always parses, retries are left for `validate`'s semantic checks.
        Each retry uses the next seed; a greedy request retries with sampling so a retry can differ.
        """
        if schema is not None:
            if constrained.available():
                return constrained.generate_json_constrained(self, messages, schema, validate, retries=retries,
                                                             image=image, seed=seed, **sampling)
        errors: list[str] = []
        raw = ""
        for attempt in range(int(retries) + 1):
            opts = dict(sampling)
            if attempt and not opts.get("do_sample", True):
                opts["do_sample"] = True
            raw = self.generate(messages, image, seed=int(seed) + attempt, **opts)
            try:
                obj = extract_json(raw)
                value = validate(obj) if validate else obj
                return JsonReply(obj if value is None else value, attempt + 1, raw, errors)
            except (ValueError, TypeError, KeyError) as e:
                errors.append(f"attempt {attempt + 1}: {e}")
        return JsonReply(None, int(retries) + 1, raw, errors)


# --- the process-wide cache ----------------------------------------------------------------

_CACHE: dict[tuple, LoadedLLM] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(base: Path, adapter: Path | None, quantization: str, device: str) -> tuple:
    stamp = None
    if adapter is not None:
        cfg = adapter / "rezcty_adapter.json"
        stamp = cfg.stat().st_mtime_ns if cfg.is_file() else None
    return (str(base.resolve()), str(adapter.resolve()) if adapter else None, stamp, quantization, device)


def load_llm(base: str | os.PathLike, adapter: str | os.PathLike | None = None, quantization: str = "none",
             device: str = "auto", keep_loaded: bool = True, dtype: str = "auto") -> LoadedLLM:
    """Load (or reuse) a base LLM with an optional adapter. Cached by (base, adapter, quantization, device, dtype)
    while `keep_loaded`; with `keep_loaded=False` the model is not cached and `release()` frees it.
    `dtype` auto follows the precision policy (rezcty_core.common.precision); fp32/fp16/bf16 override it."""
    base_dir = resolve_base(base)
    adapter_dir = Path(adapter) if adapter else None
    key = (*_cache_key(base_dir, adapter_dir, quantization, pick_device(device)), dtype)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            if not keep_loaded:
                _CACHE.pop(key)
                cached.keep_loaded = False
            return cached.load()
    llm = LoadedLLM(base_dir, adapter_dir, quantization, device, keep_loaded, dtype).load()
    if keep_loaded:
        with _CACHE_LOCK:
            _CACHE[key] = llm
    return llm


def unload_all() -> None:
    """Free every cached LLM."""
    with _CACHE_LOCK:
        items = list(_CACHE.values())
        _CACHE.clear()
    for llm in items:
        llm.unload()
