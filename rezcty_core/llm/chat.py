"""Chat encoding shared by training and inference: one chat -> token ids around the `<image>` placeholder.

The chat template is rendered to text, split at the `<image>` placeholder, and the projected
image tokens are spliced in between through `inputs_embeds` (LLaVA-style), so `generate()` and
its KV cache work unchanged. Training (`training.train_adapter`) uses the same `encode_chat` /
`assemble_inputs`, so inference sees exactly what training saw.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rezcty_core.llm.templates import IMAGE_PLACEHOLDER, chat_messages


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


def eos_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every token id that ends a reply: the tokenizer's eos and the model's generation-config eos id(s)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)
