"""LLM Loader: a base LLM (+ optional rezcty adapter) for the Whisperer, QC Judge and Metadata Writer."""
from __future__ import annotations

from rezcty_core.llm import model as core
from rezcty_core.llm.device import QUANTIZATIONS
from rezcty_core.llm.embedded import QWEN_NAME, SMOLLM2_NAME

from .common import CATEGORY, EMBEDDED_PREFIX, LLMType, list_model_dirs, resolve_model_dir
from .host import io, ui

EMBEDDED_CHOICE = f"{EMBEDDED_PREFIX}{SMOLLM2_NAME}"
QWEN_CHOICE = f"{EMBEDDED_PREFIX}{QWEN_NAME}"
NO_ADAPTER = "none"


class RezctyLLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RezctyLLMLoader",
            display_name="LLM Loader",
            category=f"{CATEGORY}/llm",
            description="Load a causal LLM (HF folder under models/LLM/, or the embedded SmolLM2-135M-Instruct (fast) / Qwen2.5-Coder-1.5B-Instruct (better prompts)) with "
                        "an optional rezcty adapter (LoRA + DINOv2 projector) from models/rezcty_adapters/. "
                        "Weights load here, on execute, never at start-up, on ComfyUI's device; ComfyUI's memory "
                        "manager owns them (it evicts them for other models, and Unload Models frees them).",
            inputs=[
                io.Combo.Input("base_model", options=[EMBEDDED_CHOICE, QWEN_CHOICE, *list_model_dirs("LLM")], default=EMBEDDED_CHOICE,
                               tooltip="An HF-format model folder in models/LLM/ (Llama 3.1 8B, Mistral 7B, Qwen, ...) "
                                       "or the small embedded default."),
                io.Combo.Input("adapter", options=[NO_ADAPTER, *list_model_dirs("rezcty_adapters")], default=NO_ADAPTER,
                               tooltip="A folder written by `python -m training.train_adapter`: it names its specialist "
                                       "(whisperer/judge), the base model and the DINOv2 eye it was trained with; a "
                                       "mismatched base is refused."),
                io.Combo.Input("quantization", options=list(QUANTIZATIONS), default="none",
                               tooltip="8bit / 4bit-nf4 (double quant, bf16 compute) need a CUDA GPU and bitsandbytes."),
                io.Boolean.Input("keep_loaded", default=True,
                                 tooltip="Keep the weights in memory between runs (ComfyUI still evicts them when "
                                         "another model needs the room). Off: the LLM is freed when the prompt that "
                                         "used it ends (a list of ideas loads it once), so the next line of the "
                                         "factory gets the whole GPU."),
            ],
            outputs=[LLMType.Output(display_name="llm")],
        )

    @classmethod
    def execute(cls, base_model: str, adapter: str, quantization: str, keep_loaded: bool) -> io.NodeOutput:
        if base_model in (EMBEDDED_CHOICE, QWEN_CHOICE):
            base = "embedded" if base_model == EMBEDDED_CHOICE else QWEN_CHOICE
        else:
            base = resolve_model_dir("LLM", base_model)
        adapter_dir = None if adapter == NO_ADAPTER else resolve_model_dir("rezcty_adapters", adapter)
        loaded = core.load_llm(base, adapter_dir, quantization=quantization, keep_loaded=keep_loaded)
        loaded.release()  # keep_loaded off: unloaded when this prompt ends, even if no node used it
        return io.NodeOutput(loaded, ui=ui.PreviewText(repr(loaded)))


NODES = [RezctyLLMLoader]
