"""The LLM judge: the measurements as text, the schema and validation of its reply, and its verdict on one image.

The judge is a `LoadedLLM` specialist (rezcty_core/llm); with an image embedding and a model that can see it,
it also looks at the image. Its verdict is folded into the measured one by `verdict.combine_verdicts`.
"""
from __future__ import annotations

from typing import Any

from rezcty_core.llm.interface import TextGenerator
from rezcty_core.qc.verdict import REASON_CODES

JUDGE_CODES = tuple(c for c in REASON_CODES if c not in ("check_unavailable", "similar"))  # the gate's own codes (a missing check, the batch budget), never the judge's

LLM_TEXT_KEYS = ("width", "height", "megapixels", "upscale_needed", "blur_sigma_px", "motion_blur_px", "noise_sigma", "mean_luma",
                 "highlight_clip_pct", "shadow_clip_pct", "dynamic_range", "channel_range", "color_cast", "colourfulness",
                 "colour_clip_pct", "jpeg_blockiness", "jpeg_quality", "banding_ratio", "brisque",
                 "text_boxes", "text_area_pct", "text_words")


def measurements_text(measurements: dict, failed: list[dict]) -> str:
    """The measurements as the judge reads them when it cannot see (or as a second opinion when it can)."""
    parts = [f"{k} {measurements[k]}" for k in LLM_TEXT_KEYS if measurements.get(k) is not None]
    broken = "; ".join(f"{f['code']} ({f['measure']} {f['value']} vs limit {f['limit']})" for f in failed) or "none"
    return (f"Measurements: {', '.join(parts)}.\nTechnical checks failed: {broken}.\n"
            f"Reason codes: {', '.join(JUDGE_CODES)}.")


def validate_llm_verdict(obj: Any) -> dict:
    """The judge's reply checked by the shared schema (templates.validate_judge_reply) plus an optional score."""
    from rezcty_core.llm.templates import validate_judge_reply

    value = validate_judge_reply(obj)
    score = value.get("score")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"'score' must be a number from 0 to 100, got {score!r}") from None
        if not 0 <= score <= 100:
            raise ValueError(f"'score' must be from 0 to 100, got {score}")
    value["score"] = score
    return value


def llm_verdict(llm: TextGenerator, measurements: dict, failed: list[dict], embedding: Any, profile: dict, seed: int = 0) -> dict:
    """Ask the judge specialist (a `TextGenerator`, e.g. `LoadedLLM`); always returns a dict, `valid` False when no usable answer."""
    from rezcty_core.llm.templates import build_messages

    opts = profile.get("llm", {})
    sees = embedding is not None and llm.can_see
    messages = build_messages("judge", measurements_text(measurements, failed), has_image=sees)
    try:
        reply = llm.generate_json(
            messages, validate_llm_verdict, retries=int(opts.get("retries", 2)), image=embedding if sees else None,
            temperature=float(opts.get("temperature", 0.2)), top_p=float(opts.get("top_p", 0.9)),
            max_new_tokens=int(opts.get("max_new_tokens", 256)), seed=int(seed),
            schema=judge_verdict_schema(JUDGE_CODES))  # constrained decoding: the first reply always parses
    except Exception as e:  # one image's LLM failure must not stop the batch
        return {"valid": False, "status": f"error, verdict from measurements alone: {type(e).__name__}: {e}",
                "saw_image": sees}
    if not reply.ok:
        return {"valid": False, "status": "never parseable, verdict from measurements alone",
                "attempts": reply.attempts, "errors": reply.errors[-3:], "raw": reply.raw[:400], "saw_image": sees}
    value = reply.value
    score = value["score"] if value["score"] is not None else (80.0 if value["verdict"] == "pass" else 20.0)
    return {"valid": True, "status": "answered", "verdict": value["verdict"], "score": score,
            "reasons": value["reasons"], "attempts": reply.attempts, "saw_image": sees}


def judge_verdict_schema(reason_codes: list[str] | tuple[str, ...]) -> dict:
    """The QC judge's verdict: pass/reject, optionally a 0-100 score and reason codes from the list.

    Short by construction (at most ~40 tokens), so it always closes within the token budget."""
    return {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["pass", "reject"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
            "reasons": {"type": "array", "items": {"type": "string", "enum": list(reason_codes)}, "maxItems": 4},
        },
        "required": ["verdict"],
        "additionalProperties": False,
    }
