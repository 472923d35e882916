"""The projector-LLM: a causal LLM (+ optional rezcty adapter) that can read DINOv2 embeddings.

    llm = load_llm("embedded", adapter="models/rezcty_adapters/whisperer_v1")
    text = llm.generate(build_messages("whisperer", "a knight", has_image=True), image=embedding, seed=1)
    reply = llm.generate_json(build_messages("judge", "...", False), validate_judge_reply, temperature=0.2)

`LoadedLLM` (a `TextGenerator`, `llm/interface.py`) and the handles shared by `load_llm`. Generation goes
through the one sampler (`llm/sampling.py`): `generate` is a batch of one, `generate_batch` many,
`generate_json` adds a schema constraint as a logits processor. Memory belongs to the host
(`rezcty_core.common.residency`): weights load on first use on the host's device, and inside ComfyUI its
memory manager evicts and releases them. The chat encoding with the image placeholder is
`rezcty_core.llm.chat`, the device and quantization `rezcty_core.llm.device`, the embedded models
`rezcty_core.llm.embedded`, JSON replies `rezcty_core.llm.json_reply`.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rezcty_core.common import residency
from rezcty_core.common.hashing import file_sha256
from rezcty_core.llm import constrained
from rezcty_core.llm.adapter import (
    LORA_FILE,
    PROJECTOR_FILE,
    AdapterConfig,
    AdapterError,
    check_base,
    check_eye,
    model_fingerprint,
    read_adapter_config,
)
from rezcty_core.llm.batching import default_batch_size
from rezcty_core.llm.chat import assemble_inputs, encode_chat, with_image_placeholder
from rezcty_core.llm.device import device_map_for, print_memory_plan, quantization_config
from rezcty_core.llm.embedded import base_display_name, resolve_base
from rezcty_core.llm.json_reply import JsonReply, extract_json
from rezcty_core.llm.sampling import sample_rows
from rezcty_core.llm.templates import IMAGE_PLACEHOLDER

# a JSON retry must be able to differ from the reply it retries: it samples, at least at this temperature
RETRY_TEMPERATURE = 0.7


class LoadedLLM:
    """A base LLM with an optional rezcty adapter (LoRA + projector); weights load on first use, and the host
    (`rezcty_core.common.residency`) decides when they leave."""

    kind = "LLM"

    def __init__(self, base: str | os.PathLike, adapter: str | os.PathLike | None = None,
                 quantization: str = "none", device: str = "auto", keep_loaded: bool = True, dtype: str = "auto"):
        from rezcty_core.common.precision import choose_precision

        self.base_dir = resolve_base(base)
        self.base_name = base_display_name(self.base_dir)
        self.adapter_dir = Path(adapter) if adapter else None
        self.adapter_name = self.adapter_dir.name if self.adapter_dir else None
        self.quantization = quantization
        self.device = residency.host().device(device)
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
        self.patcher: Any = None  # the host's record of the loaded weights (ComfyUI: a ModelPatcher)
        self.loads = 0  # how often this handle read its weights from disk
        self._memory_needed: int | None = None
        self._lock = threading.RLock()

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

    @property
    def label(self) -> str:
        return f"{self.base_name} + {self.adapter_name}" if self.adapter_name else self.base_name

    def __repr__(self) -> str:
        eye = self.config.eye.get("model") if self.config and self.config.eye else None
        return (f"LoadedLLM(base={self.base_name}, adapter={self.adapter_name or 'none'}, "
                f"specialist={self.specialist}, can_see={self.can_see}, eye={eye}, "
                f"quantization={self.quantization}, dtype={self.precision.dtype}, device={self.device})")

    # -- residency (what the host calls) --------------------------------------------------
    @property
    def movable(self) -> bool:
        """bitsandbytes weights are quantized onto their device while loading and cannot move off it."""
        return self.quantization == "none"

    @property
    def weights_loaded(self) -> bool:
        return self.model is not None

    def memory_needed(self) -> int:
        """The planned inference peak (weights, KV cache, activations) from config.json, without the weights."""
        from rezcty_core.llm.memory_plan import plan_memory, read_config

        if self._memory_needed is None:
            try:
                plan = plan_memory(read_config(self.base_dir), device_type=self.device.split(":")[0],
                                   mode="inference", quantization=self.quantization, dtype=self.precision.dtype,
                                   seq_len=1024, image_tokens=4 if self.can_see else 0)
                self._memory_needed = int(plan.total)
            except (ValueError, FileNotFoundError):
                self._memory_needed = int(sum(f.stat().st_size for f in self.base_dir.glob("*.safetensors")) * 1.2)
        return self._memory_needed

    def load_weights(self, device: str) -> None:
        """Read tokenizer, weights, LoRA and projector from disk onto `device` (a no-op when loaded)."""
        with self._lock:
            if self.model is None:
                self._load(device)

    def weight_modules(self) -> dict[str, Any]:
        return {name: m for name, m in (("llm", self.model), ("projector", self.projector)) if m is not None}

    def drop_weights(self) -> None:
        """Forget the weights (the next use reads them again) and give their memory back."""
        with self._lock:
            if self.model is None:
                return
            self.model = self.tokenizer = self.projector = None  # `patcher` is the host's to replace
        gc.collect()  # transformers models hold reference cycles: collect them now, not at some later gc
        try:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        print(f"[rezcty] LLM weights dropped: {self.label}", file=sys.stderr, flush=True)

    def _load(self, device: str) -> None:
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
            model.to(device)
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
        self.loads += 1
        print(f"[rezcty] LLM weights loaded from disk: {self.label} on {device} "
              f"(load {self.loads} of this handle)", file=sys.stderr, flush=True)

    # -- use ------------------------------------------------------------------------------
    def load(self) -> LoadedLLM:
        """Make the weights ready for use: loaded, on the device, known to the host as just used."""
        residency.host().use(self)
        return self

    def unload(self) -> None:
        """Drop the weights now, through the host (a later generate() loads them again)."""
        residency.host().unload(self)

    def release(self) -> None:
        """Called by consumers after use: gives the memory back unless the loader asked to keep the model
        loaded (inside ComfyUI at the end of the prompt, so a list of ideas loads the model once)."""
        if not self.keep_loaded:
            residency.host().release(self)

    # -- generation -----------------------------------------------------------------------
    def check_image(self, image: Any) -> None:
        """A clear error when `image` (an ImageEmbedding) cannot be read by this model: no projector, another eye."""
        if image is None:
            return
        if not self.can_see:
            raise ValueError(f"LLM '{self.base_name}' with adapter '{self.adapter_name or 'none'}' cannot see: it has "
                             "no projector; load an adapter trained with image embeddings or leave the image "
                             "input unconnected")
        check_eye(self.config, self.adapter_name or "", dict(getattr(image, "meta", {}) or {}))

    def input_embeddings(self, messages: list[dict], image: Any = None) -> Any:
        """`(L, H)` input embeddings of one chat, the image's projected tokens at its `<image>` placeholder."""
        self.load()
        return self._embed(messages, image)

    def _embed(self, messages: list[dict], image: Any) -> Any:
        import torch

        self.check_image(image)
        messages = with_image_placeholder(messages) if image is not None else messages
        encoded = encode_chat(self.tokenizer, messages)
        if encoded.has_image and image is None:
            raise ValueError(f"the chat holds {IMAGE_PLACEHOLDER} but no image embedding was given")
        vector = getattr(image, "vector", image)
        with torch.inference_mode():
            embeds, _ = assemble_inputs(self.model, self.projector, encoded,
                                        torch.as_tensor(vector) if vector is not None else None)
        return embeds[0]

    def generate_batch(self, chats: list[list[dict]], seeds: list[int], images: list | None = None, *,
                       temperature: float = 0.75, top_p: float = 0.95, top_k: int = 50, max_new_tokens: int = 128,
                       do_sample: bool = True, processors: list | None = None) -> list[str]:
        """Answer every chat in one `generate()` call, each row sampled with its own seed (`llm/sampling.py`)."""
        if len(seeds) != len(chats):
            raise ValueError(f"{len(chats)} chats but {len(seeds)} seeds")
        if not chats:
            return []
        images = list(images) if images is not None else [None] * len(chats)
        for image in images:
            self.check_image(image)  # before loading: a wiring error costs no load
        self.load()
        rows = [self._embed(m, img) for m, img in zip(chats, images)]
        return sample_rows(self.model, self.tokenizer, rows, list(seeds), temperature=temperature, top_p=top_p,
                           top_k=top_k, max_new_tokens=max_new_tokens, do_sample=do_sample, processors=processors)

    def generate(self, messages: list[dict], image: Any = None, *, temperature: float = 0.75, top_p: float = 0.95,
                 top_k: int = 50, max_new_tokens: int = 128, seed: int = 0, do_sample: bool = True) -> str:
        """Answer a chat: a batch of one. `image` is an ImageEmbedding (`.vector`, `.meta`) for `<image>`."""
        return self.generate_batch([messages], [seed], [image], temperature=temperature, top_p=top_p, top_k=top_k,
                                   max_new_tokens=max_new_tokens, do_sample=do_sample)[0]

    def generate_json(self, messages: list[dict], validate: Callable[[Any], Any] | None = None, *,
                      retries: int = 2, image: Any = None, seed: int = 0, schema: dict | None = None,
                      **sampling: Any) -> JsonReply:
        """Generate until the reply holds JSON that `validate` accepts (it returns the value or raises).

        With `schema` (a JSON schema) and xgrammar installed, decoding is constrained to it
        (`rezcty_core.llm.constrained`, a logits processor of the same sampler): the first reply always parses,
        retries are left for `validate`'s semantic checks. Each retry uses the next seed and samples (at
        RETRY_TEMPERATURE at least), so a retry can differ.
        """
        held = schema is not None and constrained.available()
        opts = dict(sampling)
        if held:
            opts["max_new_tokens"] = max(int(opts.get("max_new_tokens", constrained.MIN_JSON_TOKENS)),
                                         constrained.MIN_JSON_TOKENS)
        errors: list[str] = []
        raw = ""
        for attempt in range(int(retries) + 1):
            run = dict(opts)
            if attempt:
                run["do_sample"] = True
                if float(run.get("temperature", RETRY_TEMPERATURE) or 0.0) <= 0:
                    run["temperature"] = RETRY_TEMPERATURE
            processors = [constrained.json_processor(self.load(), schema)] if held else None
            raw = self.generate_batch([messages], [int(seed) + attempt], [image], processors=processors, **run)[0]
            try:
                obj = json.loads(raw) if held else extract_json(raw)
            except ValueError as e:
                why = (f"not JSON ({e}); the reply hit max_new_tokens {run['max_new_tokens']} before the document "
                       "closed") if held else str(e)
                errors.append(f"attempt {attempt + 1}: {why}")
                continue
            try:
                value = validate(obj) if validate else obj
                return JsonReply(obj if value is None else value, attempt + 1, raw, errors)
            except (ValueError, TypeError, KeyError) as e:
                errors.append(f"attempt {attempt + 1}: {e}")
        return JsonReply(None, int(retries) + 1, raw, errors)

    # -- helpers the Whisperer uses ---------------------------------------------------------
    def batch_size(self, prompt_tokens: int = 512, new_tokens: int = 128) -> int:
        """Rows per `generate_batch` chosen from free memory on the model's device."""
        self.load()
        return default_batch_size(self.model, prompt_tokens=prompt_tokens, new_tokens=new_tokens)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's tokenizer (no special tokens)."""
        self.load()
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


# --- handles shared by load_llm ----------------------------------------------------------------
# Weak: a handle is shared while someone holds it (ComfyUI's node cache, a script), never kept alive here;
# what stays loaded is the host's call (LocalHost keeps keep_loaded handles, ComfyUI's memory manager the rest).
_HANDLES: weakref.WeakValueDictionary[tuple, LoadedLLM] = weakref.WeakValueDictionary()
_HANDLES_LOCK = threading.Lock()


def _handle_key(base: Path, adapter: Path | None, quantization: str, device: str, dtype: str) -> tuple:
    stamp = None
    if adapter is not None:
        cfg = adapter / "rezcty_adapter.json"
        stamp = cfg.stat().st_mtime_ns if cfg.is_file() else None
    return (str(base.resolve()), str(adapter.resolve()) if adapter else None, stamp, quantization, device, dtype)


def load_llm(base: str | os.PathLike, adapter: str | os.PathLike | None = None, quantization: str = "none",
             device: str = "auto", keep_loaded: bool = True, dtype: str = "auto") -> LoadedLLM:
    """A loaded base LLM with an optional adapter. One handle per (base, adapter, quantization, device, dtype)
    while anyone holds it, so two loaders of one model share one copy of the weights; the latest loader's
    `keep_loaded` wins. `keep_loaded=False`: `release()` gives the memory back after use.
    `dtype` auto follows the precision policy (rezcty_core.common.precision); fp32/fp16/bf16 override it."""
    base_dir = resolve_base(base)
    adapter_dir = Path(adapter) if adapter else None
    key = _handle_key(base_dir, adapter_dir, quantization, residency.host().device(device), dtype)
    with _HANDLES_LOCK:
        llm = _HANDLES.get(key)
        if llm is None:
            llm = LoadedLLM(base_dir, adapter_dir, quantization, device, keep_loaded, dtype)
            _HANDLES[key] = llm
        llm.keep_loaded = keep_loaded
    keep = getattr(residency.host(), "keep", None)
    if keep is not None:
        keep(llm, keep_loaded)
    return llm.load()


def unload_all() -> None:
    """Drop the weights of every live handle."""
    with _HANDLES_LOCK:
        items = list(_HANDLES.values())
    for llm in items:
        llm.unload()
