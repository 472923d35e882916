"""The Whisperer: a short idea in, one rich rezcty prompt out.

The LLM writes the body; everything after that is hygiene this module guarantees whatever the model
did (the text side is `rezcty_core.llm.whisperer_text`): one line, no chat artifacts, quotes or "Here is…"
preambles, the trigger words exactly once each at the end in the order given, the CLIP token count measured
with the real CLIP tokenizer, optionally kept within one 77-token CLIP window. An empty or garbage generation
is retried with a derived seed; when every attempt fails the result falls back to the idea plus the triggers,
with a warning. Never empty, never raises for what the model wrote.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from rezcty_core.llm.batching import chunks
from rezcty_core.llm.interface import TextGenerator
from rezcty_core.llm.whisperer_text import (
    Triggers,
    clean_generation,
    compose,
    drop_unfit_phrases,
    garbage_reason,
    parse_triggers,
    remove_triggers,
)
from rezcty_core.sd.clip_tokens import CLIP_CONTENT_TOKENS, count_clip_tokens

# The brief's sampling for the Whisperer.
DEFAULT_SAMPLING = {"temperature": 0.75, "top_p": 0.95, "top_k": 50}
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_TRIGGERS = "rezcty_style, rezcty_structure"
DEFAULT_RETRIES = 2
SEED_MAX = 0xFFFFFFFFFFFFFFFF


@dataclass
class Expansion:
    """One idea's expanded prompt and how it came to be."""

    idea: str
    text: str  # the final prompt: body + ", " + triggers
    tokens: int  # CLIP tokens of `text`, without start/end
    seed: int  # seed of the attempt that produced the body (the first one for a fallback)
    attempts: int
    fallback: bool = False
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # every generation, as the model wrote it
    batch: int = 1  # rows of the generate() call that wrote the kept attempt

    def summary(self) -> str:
        """One line for the node's text display: token count, flags, then the prompt."""
        flags = [f"{self.tokens} CLIP tokens"]
        if self.tokens > CLIP_CONTENT_TOKENS:
            flags.append(f"over {CLIP_CONTENT_TOKENS + 2}: SD 1.5 reads it in {-(-self.tokens // CLIP_CONTENT_TOKENS)} chunks")
        if self.truncated:
            flags.append("cut to fit 77")
        if self.batch > 1:
            flags.append(f"batch of {self.batch}")
        if self.fallback:
            flags.append("FALLBACK")
        head = "[" + ", ".join(flags) + "] "
        warn = "".join(f"\n  warning: {w}" for w in self.warnings)
        return head + self.text + warn

    def to_json(self) -> dict[str, Any]:
        return {"idea": self.idea, "prompt": self.text, "clip_tokens": self.tokens, "seed": self.seed,
                "attempts": self.attempts, "fallback": self.fallback, "truncated": self.truncated,
                "warnings": list(self.warnings), "batch": self.batch}


# -- ideas -------------------------------------------------------------------------------------------
def split_ideas(prompt: str) -> list[str]:
    """Every non-empty line is one idea (surrounding whitespace dropped)."""
    return [line.strip() for line in (prompt or "").splitlines() if line.strip()]


# -- seeds -------------------------------------------------------------------------------------------
def derive_seed(seed: int, salt: int) -> int:
    """A reproducible, well-spread seed for retry `salt` (salt 0 is the seed itself)."""
    if salt == 0:
        return int(seed) & SEED_MAX
    digest = hashlib.sha256(f"rezcty-whisperer:{int(seed)}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF


def idea_seeds(ideas: list[str], seed: int) -> list[int]:
    """One seed per idea: the node's seed for the first occurrence of an idea, derived ones for repeats.

    An idea's prompt does not depend on where it sits in the list, and a repeated idea gets a variation.
    """
    counts: dict[str, int] = {}
    seeds = []
    for idea in ideas:
        n = counts.get(idea, 0)
        counts[idea] = n + 1
        seeds.append(derive_seed(seed, 1000 * n) if n else int(seed) & SEED_MAX)
    return seeds


# -- generation --------------------------------------------------------------------------------------
def whisperer_messages(idea: str, has_image: bool, few_shot: bool) -> list[dict]:
    """The chat the LLM sees: the shared whisperer template, with worked examples for an untrained base."""
    from rezcty_core.llm import templates

    messages = templates.build_messages("whisperer", idea, has_image)
    if few_shot:
        examples = getattr(templates, "WHISPERER_EXAMPLES", ())
        shots = [m for idea_text, prompt in examples
                 for m in ({"role": "user", "content": idea_text}, {"role": "assistant", "content": prompt})]
        messages = messages[:1] + shots + messages[1:]
    return messages


@dataclass
class _Job:
    """One idea on its way through the rounds of batched generation."""

    idea: str
    image: Any
    seed: int
    messages: list[dict]
    raws: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    result: Expansion | None = None
    english: str = ""  # the idea the LLM sees: an Indonesian idea translated (language.english_idea)
    notes: list[str] = field(default_factory=list)


def _make_job(llm: TextGenerator, idea: str, image: Any, seed: int, few_shot: bool | None) -> _Job:
    idea = " ".join(idea.split())
    if not idea:
        raise ValueError("the idea is empty: write a short idea such as 'a lighthouse on a cliff'")
    if few_shot is None:
        few_shot = llm.specialist != "whisperer"
    from rezcty_core.llm.language import english_idea

    english, note = english_idea(idea)
    return _Job(idea, image, int(seed), whisperer_messages(english, image is not None, few_shot), english=english,
                notes=[note] if note else [])


def _generate_round(llm: TextGenerator, jobs: list[_Job], attempt: int, sampling: dict) -> list[str | None]:
    """One generation per job (a batch); None for a job whose generation failed numerically."""
    seeds = [derive_seed(j.seed, attempt) for j in jobs]
    images = [j.image for j in jobs]
    try:
        return list(llm.generate_batch([j.messages for j in jobs], seeds, images, **sampling))
    except RuntimeError as exc:  # a numerical failure of sampling (nan/inf); memory errors are not retried
        if "out of memory" in str(exc).lower():
            raise
        for j in jobs:
            j.reasons.append(f"attempt {attempt + 1}: generation failed ({type(exc).__name__}: {exc})")
        return [None] * len(jobs)


def _settle(llm: TextGenerator, job: _Job, raw: str, attempt: int, triggers: Triggers, max_new_tokens: int,
            keep_within_77: bool, batch: int = 1) -> None:
    job.raws.append(raw)
    body = remove_triggers(clean_generation(raw, cut_off=_hit_limit(llm, raw, max_new_tokens)), triggers)
    body, dropped = drop_unfit_phrases(body)
    reason = garbage_reason(body, job.english or job.idea)
    if reason is None:
        text, truncated = compose(body, triggers, keep_within_77)
        warnings = job.notes + [f"retried: {r}" for r in job.reasons]
        if dropped:
            warnings.append(f"dropped {len(dropped)} phrase(s) with unfit terms: " + "; ".join(dropped))
        job.result = Expansion(job.idea, text, count_clip_tokens(text), derive_seed(job.seed, attempt), attempt + 1,
                               truncated=truncated, warnings=warnings, raw=job.raws, batch=batch)
        return
    if dropped:
        reason = f"{reason} after dropping {len(dropped)} phrase(s) with unfit terms ({'; '.join(dropped)})"
    job.reasons.append(f"attempt {attempt + 1}: {reason}")


def _fallback(job: _Job, triggers: Triggers, retries: int, keep_within_77: bool) -> Expansion:
    body, dropped = drop_unfit_phrases(job.english or job.idea)
    text, truncated = compose(body, triggers, keep_within_77)
    warning = (f"no usable expansion after {retries + 1} attempts ({'; '.join(job.reasons)}): "
               "used the idea + triggers")
    if dropped:
        warning += f" (idea phrases with unfit terms left out: {'; '.join(dropped)})"
    return Expansion(job.idea, text, count_clip_tokens(text), job.seed & SEED_MAX, retries + 1, fallback=True,
                     truncated=truncated, warnings=job.notes + [warning], raw=job.raws)


def expand_batch(llm: TextGenerator, jobs: list[_Job], triggers: Triggers, *, batch_size: int = 0,
                 temperature: float = DEFAULT_SAMPLING["temperature"], top_p: float = DEFAULT_SAMPLING["top_p"],
                 top_k: int = DEFAULT_SAMPLING["top_k"], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 keep_within_77: bool = False, retries: int = DEFAULT_RETRIES) -> list[Expansion]:
    """Every job expanded, `batch_size` rows per `generate()` (0: chosen from free memory).

    Round k generates attempt k of every job still without a usable prompt, in batches, each row with the
    seed derived from its own idea's seed; hygiene, retries and the fallback are decided per job.
    """
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": max_new_tokens}
    if int(batch_size) <= 0:
        batch_size = llm.batch_size(prompt_tokens=512, new_tokens=int(max_new_tokens))
    for attempt in range(int(retries) + 1):
        pending = [j for j in jobs if j.result is None]
        if not pending:
            break
        for group in chunks(pending, batch_size):
            for job, raw in zip(group, _generate_round(llm, group, attempt, sampling)):
                if raw is None:
                    job.raws.append("")
                    continue
                _settle(llm, job, raw, attempt, triggers, max_new_tokens, keep_within_77, len(group))
    return [j.result or _fallback(j, triggers, int(retries), keep_within_77) for j in jobs]


def expand_idea(llm: TextGenerator, idea: str, triggers: Triggers | str, *, seed: int, image: Any = None,
                few_shot: bool | None = None, **options: Any) -> Expansion:
    """Expand one idea with `llm` (a `LoadedLLM`); always returns a usable, non-empty prompt.

    `few_shot` defaults to True unless the LLM carries a trained whisperer adapter, which was trained on the
    plain template and should see exactly that. Options as `expand_batch`.
    """
    if isinstance(triggers, str):
        triggers = parse_triggers(triggers)
    return expand_batch(llm, [_make_job(llm, idea, image, seed, few_shot)], triggers, **options)[0]


def _hit_limit(llm: TextGenerator, raw: str, max_new_tokens: int) -> bool:
    """Whether the answer used (about) all of `max_new_tokens`, i.e. it was cut off mid-phrase."""
    return bool(raw) and llm.count_tokens(raw) >= max_new_tokens - 2


def check_can_see(llm: TextGenerator, image: Any) -> None:
    """A clear error when an image embedding is wired to an LLM that cannot read it."""
    if image is None:
        return
    if not llm.can_see:
        raise ValueError(f"Whisperer Expand: an image_embedding is connected but the LLM ({llm!r}) has no projector; "
                         "load a whisperer adapter trained with image embeddings, or disconnect image_embedding")
    llm.check_image(image)  # the eye it was trained with: model, dim, pooling


def pair_images(ideas: list[str], images: list | None) -> list[tuple[str, Any]]:
    """(idea, image) jobs: one image steers every idea; N images with one idea give N prompts of it;
    N images with N ideas pair up in order."""
    if not images:
        return [(idea, None) for idea in ideas]
    if len(images) == 1:
        return [(idea, images[0]) for idea in ideas]
    if len(ideas) == 1:
        return [(ideas[0], image) for image in images]
    if len(ideas) == len(images):
        return list(zip(ideas, images))
    raise ValueError(f"Whisperer Expand: {len(ideas)} ideas and {len(images)} image embeddings; give one embedding, "
                     "one idea, or as many ideas (lines) as embeddings")


def expand_ideas(llm: TextGenerator, prompt: str, trigger_words: str = DEFAULT_TRIGGERS, *, seed: int = 0,
                 images: list | None = None, **options: Any) -> list[Expansion]:
    """Every non-empty line of `prompt` expanded in batches (see `expand_batch`, `pair_images`); a clear error
    when the prompt is empty or an image cannot be read by this LLM. `batch_size` 0 = from free memory."""
    ideas = split_ideas(prompt)
    if not ideas:
        raise ValueError("Whisperer Expand: the prompt is empty; write one short idea per line, e.g. 'a knight'")
    for image in images or []:
        check_can_see(llm, image)
    jobs = pair_images(ideas, images)
    triggers = parse_triggers(trigger_words)
    seeds = idea_seeds([f"{idea}\x00{id(image)}" for idea, image in jobs], seed)
    few_shot = options.pop("few_shot", None)
    batch = [_make_job(llm, idea, image, s, few_shot) for (idea, image), s in zip(jobs, seeds)]
    return expand_batch(llm, batch, triggers, **options)
