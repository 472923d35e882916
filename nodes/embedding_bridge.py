"""Embedding Bridge: encode a prompt with the rezcty_genius textual-inversion embedding at a weight.

cond = (1 - weight) * encode(text without the embedding) + weight * encode(text with it); the
embedding itself is injected by ComfyUI's own tokenizer (`embedding:FILE`). See docs/lora.md.
"""
from __future__ import annotations

from rezcty_core.sd import ti_embedding
from rezcty_core.sd.lora_meta import EMBEDDING_WEIGHT_RANGE

from . import host
from .common import CATEGORY
from .host import io, ui
from .lora import TRIGGERS_ATTACHMENT

BRIEF_LORA_TRIGGERS = ["rezcty_style", "rezcty_structure"]


def clip_width(clip) -> int | None:
    """Width of the token vectors the (SD 1.x) CLIP tokenizer accepts, e.g. 768."""
    tok = clip.tokenizer
    inner = getattr(tok, getattr(tok, "clip", ""), None) or tok
    width = getattr(inner, "embedding_size", None)
    return int(width) if width else None


def _embedded_count(tokens: dict) -> int:
    """How many token slots hold a vector (not a token id), per text encoder; the largest."""
    counts = [sum(1 for batch in batches for t in batch if not isinstance(t[0], int)) for batches in tokens.values()]
    return max(counts, default=0)




def _blend(plain: list, bridged: list, weight: float) -> list:
    if len(plain) != len(bridged):
        raise ValueError("Embedding Bridge: CLIP hook schedules differ between the two encodings; remove the hooks")
    out = []
    for (c0, d0), (c1, d1) in zip(plain, bridged):
        d = dict(d0)
        if d0.get("pooled_output") is not None and d1.get("pooled_output") is not None:
            d["pooled_output"] = ti_embedding.blend(d0["pooled_output"], d1["pooled_output"], weight)
        out.append([ti_embedding.blend(c0, c1, weight), d])
    return out


NONE = "none"


def _default_embedding(embeddings: list[str]) -> str:
    """rezcty_genius where it is installed, else the first embedding, else none."""
    genius = [e for e in embeddings if e.rsplit("/", 1)[-1].split(".", 1)[0] == "rezcty_genius"]
    return (genius or embeddings or [NONE])[0]


class RezctyEmbeddingBridge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        lo, hi = EMBEDDING_WEIGHT_RANGE
        embeddings = host.model_filenames("embeddings")
        return io.Schema(
            node_id="RezctyEmbeddingBridge",
            display_name="Embedding Bridge",
            category=f"{CATEGORY}/conditioning",
            description="Encodes the prompt with the rezcty_genius textual-inversion embedding blended in at "
                        "`weight` (0 = no embedding, 1 = plain embedding), the 'semantic bridge' between the LoRAs.",
            inputs=[
                io.Clip.Input("clip", tooltip="CLIP from the Dual LoRA Loader (or the checkpoint)."),
                io.String.Input("text", multiline=True, default="",
                                tooltip="The prompt. Where it names the embedding's trigger, the embedding goes "
                                        "there; otherwise it is appended at the end."),
                io.Combo.Input("embedding", options=[NONE, *embeddings], default=_default_embedding(embeddings),
                               tooltip="Textual-inversion embedding from models/embeddings (A1111 .pt/.safetensors, "
                                       "diffusers learned_embeds), or none: the prompt encoded without one (a "
                                       "line 2 before rezcty_genius is trained)."),
                io.Float.Input("weight", default=0.3, min=0.0, max=2.0, step=0.01,
                               tooltip=f"Blend of the embedding into the encoded prompt; the brief's range is "
                                       f"{lo:g}–{hi:g}. 0 = exactly the prompt without it."),
            ],
            outputs=[
                io.Conditioning.Output(),
                io.String.Output(display_name="encoded_text",
                                 tooltip="The text actually encoded (ComfyUI `embedding:` syntax where it sits)."),
            ],
        )

    @classmethod
    def execute(cls, clip, text, embedding, weight) -> io.NodeOutput:
        if embedding == NONE:  # the plain prompt, as CLIPTextEncode would encode it
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
            return io.NodeOutput(cond, text, ui=ui.PreviewText(f"no embedding (none)\nencoded: {text}"))
        path = host.model_file_path_or_raise("embeddings", embedding)
        emb = ti_embedding.load_ti_embedding(path, expected_width=clip_width(clip))
        if any(c.isspace() for c in embedding):
            raise ValueError(f"Embedding Bridge: ComfyUI cannot refer to '{embedding}' (it contains spaces); "
                             "rename the file without spaces")
        plain, bridged, found = ti_embedding.bridge_texts(text, emb.aliases, f"embedding:{embedding}")
        lora_triggers = list(clip.patcher.get_attachment(TRIGGERS_ATTACHMENT) or []) + BRIEF_LORA_TRIGGERS
        notes = [n for n in (ti_embedding.trigger_clash(emb.trigger, lora_triggers),
                             ti_embedding.weight_note(weight, *EMBEDDING_WEIGHT_RANGE)) if n]
        # the endpoints need one encoding only: weight 0 is the plain text, weight 1 the bridged one
        plain_tokens, bridged_tokens = clip.tokenize(plain), clip.tokenize(bridged)
        plain_cond = clip.encode_from_tokens_scheduled(plain_tokens) if weight != 1 else None
        if weight == 0:
            shown = "\n".join([f"{emb.trigger}: weight 0, no embedding", f"encoded: {plain}"] + notes)
            return io.NodeOutput(plain_cond, plain, ui=ui.PreviewText(shown))
        # other `embedding:` words in the prompt are in both texts; ours must add exactly its vectors
        added = _embedded_count(bridged_tokens) - _embedded_count(plain_tokens)
        expected = emb.n_vectors * max(found, 1)
        if added != expected:
            raise ValueError(f"Embedding Bridge: ComfyUI's tokenizer placed {added} vectors for 'embedding:{embedding}', "
                             f"expected {expected}; check the file name and the prompt")
        bridged_cond = clip.encode_from_tokens_scheduled(bridged_tokens)
        cond = bridged_cond if weight == 1 else _blend(plain_cond, bridged_cond, weight)
        where = f"{found}× in the prompt" if found else "appended"
        shown = "\n".join([f"{emb.trigger} ({emb.n_vectors} vectors, {emb.file_format}) {where} at weight {weight:g}",
                           f"encoded: {bridged}"] + notes)
        return io.NodeOutput(cond, bridged, ui=ui.PreviewText(shown))


NODES = [RezctyEmbeddingBridge]
