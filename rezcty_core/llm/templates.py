"""The prompt templates of the two specialists, one place for training and inference alike.

`build_messages` gives the chat messages a specialist sees; `train_adapter` trains on exactly
these and the nodes generate with exactly these, so an adapter never meets a prompt it was not
trained on. The template name and a hash of its text go into each adapter's config.
"""
from __future__ import annotations

import hashlib
import json

# The image placeholder in a user message; the projected DINOv2 tokens replace it.
IMAGE_PLACEHOLDER = "<image>"

SPECIALISTS = ("whisperer", "judge")

WHISPERER_SYSTEM = (
    "You are the Whisperer, a prompt writer for Stable Diffusion 1.5. "
    "Expand the user's short idea into one rich, concrete prompt: subject, setting, light, colour, "
    "composition and texture, as comma-separated phrases. Describe content only; never name artists, "
    "brands, real people or fictional characters. When an image is given, let its look guide the details. "
    "Answer with the prompt only."
)

# Worked examples shown to a base LLM without a trained whisperer adapter (few-shot); an adapter is trained
# on the plain template above and sees no examples. Idea -> prompt body (the node appends the triggers).
WHISPERER_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("a knight",
     "a lone knight clad in armor forged from solidified moonlight, standing on a misty cliff at dawn, "
     "tattered cape drifting in the wind, pale silver light on wet stone, ruined towers far below"),
    ("a city in the rain",
     "a futuristic city under heavy rain, glowing neon lights reflected in flooded streets, "
     "towers fading into low clouds, one red umbrella crossing an empty plaza"),
    ("a teapot",
     "a porcelain teapot floating above a still lake, steam curling into the shape of birds, "
     "soft morning haze, pastel pink and teal water, tiny ripples under the spout"),
)

JUDGE_SYSTEM = (
    "You are a microstock quality analyst for Adobe Stock. Look at the image and its measurements and "
    "decide whether it passes review: sharp, no artifacts or noise, clear focus, no odd structures or "
    "ambiguous objects. Then write metadata that sells: a natural title of at most 70 characters without "
    "commas, a one-sentence description, and 15 to 35 keywords, most important first, without brands or "
    "content-type words. Answer with one JSON object only: "
    '{"verdict": "pass" or "reject", "reasons": [codes], "title": "...", "description": "...", '
    '"keywords": ["..."]}'
)

PLAIN_SYSTEM = "You are a helpful assistant."

SYSTEM_PROMPTS: dict[str, str] = {"whisperer": WHISPERER_SYSTEM, "judge": JUDGE_SYSTEM}


def system_prompt(specialist: str | None) -> str:
    if specialist is None:
        return PLAIN_SYSTEM
    if specialist not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown specialist '{specialist}': expected one of {', '.join(SPECIALISTS)}")
    return SYSTEM_PROMPTS[specialist]


def build_messages(specialist: str | None, user_text: str, has_image: bool) -> list[dict]:
    """Chat messages for a specialist; with `has_image` the user turn starts with the image placeholder."""
    user = f"{IMAGE_PLACEHOLDER}\n{user_text}" if has_image else user_text
    return [{"role": "system", "content": system_prompt(specialist)}, {"role": "user", "content": user}]


def template_info(specialist: str | None, system_role: str = "native") -> dict:
    """Name and hash of a specialist's template, recorded in the adapter config. `system_role` is how the
    model's chat template took the system prompt (`system_role_mode`); a folded one hashes differently."""
    if system_role not in SYSTEM_ROLE_MODES:
        raise ValueError(f"system_role '{system_role}': expected one of {', '.join(SYSTEM_ROLE_MODES)}")
    fields = {"system": system_prompt(specialist), "placeholder": IMAGE_PLACEHOLDER}
    if system_role != "native":  # native keeps the hash adapters trained before this had
        fields["system_role"] = system_role
    text = json.dumps(fields)
    return {"name": specialist or "plain", "sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
            "system_role": system_role}


# --- chat templates that refuse (or drop) the system role -----------------------------------------

SYSTEM_ROLE_MODES = ("native", "folded")
_PROBE_SYSTEM = "rezcty-system-probe-7f3a"
_MODE_CACHE: dict[str, str] = {}


def system_role_mode(tokenizer) -> str:
    """`native` when the tokenizer's chat template renders a system message, `folded` when it raises on one
    (Gemma 2: "System role not supported") or silently drops it; then the system prompt goes into the first
    user turn instead (`fold_system`). Probed once per template text."""
    template = getattr(tokenizer, "chat_template", None)
    key = hashlib.sha256(str(template).encode()).hexdigest()
    if key in _MODE_CACHE:
        return _MODE_CACHE[key]
    probe = [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": "hi"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        mode = "native" if _PROBE_SYSTEM in str(text) else "folded"
    except Exception:  # jinja's TemplateError from raise_exception(), or anything a template throws
        mode = "folded"
    _MODE_CACHE[key] = mode
    return mode


def fold_system(messages: list[dict]) -> list[dict]:
    """Move the system message(s) into the first user turn: `SYSTEM\n\nUSER` (the placeholder stays in the user turn)."""
    system = "\n\n".join(str(m["content"]) for m in messages if m.get("role") == "system")
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    for m in rest:
        if m.get("role") == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def chat_messages(tokenizer, messages: list[dict]) -> list[dict]:
    """The messages as this tokenizer's chat template can take them; training and inference both render
    through this (rezcty_core.llm.chat.encode_chat), so they fold the same way."""
    if any(m.get("role") == "system" for m in messages) and system_role_mode(tokenizer) == "folded":
        return fold_system(messages)
    return messages


JUDGE_VERDICTS = ("pass", "reject")


def validate_judge_reply(obj: object) -> dict:
    """The judge's JSON answer, checked and normalised; raises ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    verdict = str(obj.get("verdict", "")).strip().lower()
    if verdict not in JUDGE_VERDICTS:
        raise ValueError(f"'verdict' must be 'pass' or 'reject', got {obj.get('verdict')!r}")
    reasons = obj.get("reasons", [])
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list):
        raise ValueError("'reasons' must be a list of codes")
    keywords = obj.get("keywords", [])
    if isinstance(keywords, str):
        keywords = [k.strip() for k in keywords.split(",") if k.strip()]
    if not isinstance(keywords, list):
        raise ValueError("'keywords' must be a list of strings")
    return {
        **obj,
        "verdict": verdict,
        "reasons": [str(r) for r in reasons],
        "title": str(obj.get("title", "")),
        "description": str(obj.get("description", "")),
        "keywords": [str(k) for k in keywords],
    }
