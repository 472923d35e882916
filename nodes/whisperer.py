"""Whisperer Expand: one short idea per line in, one rich rezcty prompt per idea out (an output list)."""
from __future__ import annotations

import logging

from rezcty_core.llm import whisperer as core

from .common import CATEGORY, EmbeddingType, LLMType
from .host import io, ui

log = logging.getLogger("rezcty.whisperer")


class RezctyWhispererExpand(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RezctyWhispererExpand",
            display_name="Whisperer Expand",
            category=f"{CATEGORY}/llm",
            description="Expand each line of `prompt` (one short idea per line) into a rich Stable Diffusion prompt "
                        "with the LLM, ending with the trigger words exactly once each. Outputs a list: one prompt "
                        "per idea. The CLIP token count of each prompt is shown on the node.",
            inputs=[
                LLMType.Input("llm", tooltip="From LLM Loader: the embedded SmolLM2 works with built-in examples; "
                                             "a whisperer adapter gives prompts in your trained manner."),
                io.String.Input("prompt", multiline=True, default="a knight\nsunrise over mountains",
                                tooltip="One idea per line; every non-empty line becomes one expanded prompt."),
                io.String.Input("trigger_words", default=core.DEFAULT_TRIGGERS,
                                tooltip="Appended exactly as given at the end of every prompt; any copy the model "
                                        "wrote elsewhere is removed, so each trigger appears once."),
                io.Int.Input("seed", default=0, min=0, max=core.SEED_MAX, control_after_generate=True,
                             tooltip="Same seed, same ideas, same model: same prompts. A retry after a bad "
                                     "generation uses a seed derived from this one."),
                io.Float.Input("temperature", default=0.75, min=0.0, max=2.0, step=0.05,
                               tooltip="The brief's 0.75 (0.7-0.9). 0 = greedy."),
                io.Float.Input("top_p", default=0.95, min=0.0, max=1.0, step=0.01, tooltip="Nucleus sampling."),
                io.Int.Input("top_k", default=50, min=0, max=1000, tooltip="Sample among the k likeliest tokens."),
                io.Int.Input("max_new_tokens", default=core.DEFAULT_MAX_NEW_TOKENS, min=1, max=2048,
                             tooltip="Upper bound on the LLM's answer (LLM tokens, not CLIP tokens)."),
                EmbeddingType.Input("image_embedding", optional=True,
                                    tooltip="From DINOv2 Embed: steers the expansion through the adapter's "
                                            "projector (needs an adapter trained with images). One embedding "
                                            "steers every idea; several embeddings with one idea give one prompt "
                                            "per image; N embeddings with N ideas pair up in order."),
                io.Boolean.Input("keep_within_77", default=False, optional=True,
                                 tooltip="Cut each prompt (never the triggers) so it fits one 77-token CLIP window."),
                io.Int.Input("batch_size", default=0, min=0, max=256, optional=True,
                             tooltip="Ideas generated together in one batch (left-padded). 0 = chosen from free "
                                     "memory. Each idea is sampled with its own seed, so batch mates do not change "
                                     "its prompt (up to float rounding, see docs/whisperer.md)."),
            ],
            outputs=[io.String.Output(display_name="prompt", is_output_list=True,
                                      tooltip="One expanded prompt per idea (a list: downstream nodes run once each).")],
        )

    @classmethod
    def execute(cls, llm, prompt: str, trigger_words: str, seed: int, temperature: float, top_p: float,
                top_k: int, max_new_tokens: int, image_embedding=None, keep_within_77: bool = False,
                batch_size: int = 0) -> io.NodeOutput:
        images = list(image_embedding) if isinstance(image_embedding, (list, tuple)) else (
            [image_embedding] if image_embedding is not None else None)
        try:
            expansions = core.expand_ideas(
                llm, prompt, trigger_words, seed=seed, images=images, temperature=temperature, top_p=top_p,
                top_k=top_k, max_new_tokens=max_new_tokens, keep_within_77=bool(keep_within_77),
                batch_size=int(batch_size or 0))
        finally:
            llm.release()  # keep_loaded off: freed when the prompt ends (a list of ideas loads the model once)
        for e in expansions:
            for warning in e.warnings:
                log.warning("[rezcty] Whisperer Expand, idea %r: %s", e.idea, warning)
        shown = "\n\n".join(e.summary() for e in expansions)
        return io.NodeOutput([e.text for e in expansions], ui=ui.PreviewText(shown))


NODES = [RezctyWhispererExpand]
