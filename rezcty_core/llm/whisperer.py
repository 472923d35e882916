"""The Whisperer: a short idea in, one rich rezcty prompt out.

The LLM writes the body; everything after that is hygiene this module guarantees whatever the model
did: one line, no chat artifacts, quotes or "Here is…" preambles, the trigger words exactly once each at
the end in the order given, the CLIP token count measured with the real CLIP tokenizer, optionally kept
within one 77-token CLIP window. An empty or garbage generation is retried with a derived seed; when every
attempt fails the result falls back to the idea plus the triggers, with a warning. Never empty, never raises
for what the model wrote.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from rezcty_core.sd.clip_tokens import CLIP_CONTENT_TOKENS, count_clip_tokens, truncate_to_clip_tokens

# The brief's sampling for the Whisperer.
DEFAULT_SAMPLING = {"temperature": 0.75, "top_p": 0.95, "top_k": 50}
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_TRIGGERS = "rezcty_style, rezcty_structure"
DEFAULT_RETRIES = 2
SEED_MAX = 0xFFFFFFFFFFFFFFFF
UNFIT_CATEGORY = "unfit"  # data/blocklists/unfit.txt

# Chat-template and tokenizer debris a small model may leave in its answer.
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<image>|<unk>|<pad>", re.IGNORECASE)
_ROLE_PREFIX = re.compile(
    r"^\s*(?:assistant|user|system|whisperer|ai|bot)\s*[:\n]\s*", re.IGNORECASE)
_ROLE_ONLY = re.compile(r"(?:assistant|user|system|whisperer)\s*:?", re.IGNORECASE)
_LABEL_PREFIX = re.compile(
    r"^\s*(?:(?:expanded|rich|final|enhanced|improved|stable diffusion|sd|positive|your|the)\s+)*"
    r"(?:prompt|output|answer|result|response|description|expansion)\s*(?:\d+\s*)?[:=\-–—]\s*", re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^\s*(?:here(?:'s| is| are)|sure|certainly|of course|okay|ok|absolutely|great|alright|i'?d be happy|"
    r"i can|i will|i'll|let me|below is|this is)\b[^:\n]*?(?::|!|\.(?=\s|$))\s*", re.IGNORECASE)
_COMMENTARY = re.compile(
    r"^\s*(?:(?:note|notes|explanation|this prompt|the prompt|i hope|hope this|feel free|let me know)\b|"
    r"(?:negative prompt|steps|sampler|cfg scale|seed|size|model)\s*:)", re.IGNORECASE)
_REFUSAL = re.compile(r"\b(?:i'?m sorry|i am sorry|i cannot|i can'?t|as an ai|language model|i apologi[sz]e)\b",
                      re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•·]+|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)
_QUOTES = "\"“”„«»`´"
_EDGE_PUNCT = " \t,;:.-–—|/\\"


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


# -- ideas and triggers ------------------------------------------------------------------------------
def split_ideas(prompt: str) -> list[str]:
    """Every non-empty line is one idea (surrounding whitespace dropped)."""
    return [line.strip() for line in (prompt or "").splitlines() if line.strip()]


@dataclass(frozen=True)
class Triggers:
    words: tuple[str, ...]  # each trigger, in the order given, once
    suffix: str  # the text that ends every prompt

    def __bool__(self) -> bool:
        return bool(self.words)


def parse_triggers(trigger_words: str) -> Triggers:
    """Triggers from the node's text: comma/newline separated (spaces also separate `_`-style words).

    The suffix is the text as given (one line, spacing tidied); a repeated trigger is kept once.
    """
    text = re.sub(r"\s+", " ", (trigger_words or "").replace("\n", ", ")).strip(" ,;")
    if not text:
        return Triggers((), "")
    groups: list[list[str]] = []
    for item in re.split(r"\s*[,;]\s*", text):
        if not item:
            continue
        parts = item.split(" ")
        # "rezcty_style rezcty_structure" is two triggers; "golden hour" is one phrase
        groups.append(parts if len(parts) > 1 and all(_looks_like_token(p) for p in parts) else [item])
    seen: set[str] = set()
    words: list[str] = []
    kept_groups: list[list[str]] = []
    for group in groups:
        kept = [w for w in group if w.lower() not in seen]
        seen.update(w.lower() for w in kept)
        words.extend(kept)
        if kept:
            kept_groups.append(kept)
    suffix = ", ".join(" ".join(g) for g in kept_groups)
    return Triggers(tuple(words), suffix)


def _looks_like_token(word: str) -> bool:
    return bool(re.fullmatch(r"[\w\-.:]+", word)) and bool(re.search(r"[_\d:]", word))


def _trigger_pattern(word: str) -> re.Pattern:
    return re.compile(rf"(?<![\w]){re.escape(word)}(?![\w])", re.IGNORECASE)


def count_trigger(text: str, word: str) -> int:
    """How often a trigger occurs in `text` as a whole word (case-insensitive)."""
    return len(_trigger_pattern(word).findall(text))


def remove_triggers(body: str, triggers: Triggers) -> str:
    """Drop the model's own copies of the triggers, and a trigger it wrote only in part at the end."""
    for word in sorted(triggers.words, key=len, reverse=True):
        body = _trigger_pattern(word).sub(" ", body)
    body = tidy_separators(body)
    head, _, last = body.rpartition(",")
    last = last.strip().lower()
    # "…, rezcty_" is a trigger cut off by max_new_tokens; the whole trigger is appended later anyway
    if len(last) >= 4 and " " not in last and any(w.lower().startswith(last) for w in triggers.words):
        body = tidy_separators(head)
    return body


# -- hygiene -----------------------------------------------------------------------------------------
def tidy_separators(text: str) -> str:
    """Collapse spaces and empty comma phrases, drop separators at both ends."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,;:.!?])", r"\1", text)
    text = re.sub(r"(?:[,;]\s*){2,}", ", ", text)
    text = re.sub(r"([,;])(?=\S)", r"\1 ", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    return text.strip(_EDGE_PUNCT + "!?")


def clean_generation(raw: str, cut_off: bool = False) -> str:
    """The model's answer reduced to one clean prompt line (may be empty when nothing usable is left).

    `cut_off`: the generation hit `max_new_tokens`, so its last comma phrase is unfinished and dropped.
    """
    text = _SPECIAL_TOKEN.sub("\n", raw or "")
    text = text.replace("\r", "\n").replace("**", "").replace("__", "\x00")  # keep `rezcty_style`, lose markdown bold
    text = text.replace("\x00", "__")
    lines: list[str] = []
    bullets: list[str] = []
    for line in text.split("\n"):
        line = line.strip().lstrip("#>").strip()
        if not line:
            if lines or bullets:
                break  # the prompt is the first block; what follows a blank line is commentary
            continue
        line = _strip_prefixes(line)
        if not line or _ROLE_ONLY.fullmatch(line):
            continue
        if _COMMENTARY.match(line):
            if lines or bullets:
                break
            continue
        if _BULLET.match(line):
            bullets.append(_BULLET.sub("", line))
            continue
        if bullets:
            break
        if line.endswith(":") and not lines:
            continue  # a heading such as "Prompt for a cat:"
        lines.append(line)
        break  # one line: the first substantive one
    body = ", ".join(bullets) if bullets and not lines else (lines[0] if lines else "")
    body = re.split(r"(?i)\b(?:negative prompt|steps\s*:|sampler\s*:|cfg scale\s*:)", body)[0]
    body = tidy_separators(_strip_quotes(body))
    if cut_off and not raw.rstrip().endswith((",", ".", "!")) and body.count(",") >= 2:
        body = body[: body.rfind(",")]
    return tidy_separators(dedupe_phrases(_trim_dangling(body)))


_DANGLING = {"a", "an", "the", "of", "in", "on", "with", "and", "or", "at", "to", "for", "from", "by", "its",
             "their", "his", "her", "over", "under", "into", "is", "are", "as", "that", "which", "while", "but"}


def _trim_dangling(body: str) -> str:
    """Drop words that cannot end a phrase ("…, a lone knight in the")."""
    words = body.rstrip(_EDGE_PUNCT).split(" ")
    while len(words) > 1 and words[-1].lower().strip(",;") in _DANGLING:
        words.pop()
    return " ".join(words)


def dedupe_phrases(body: str) -> str:
    """Drop comma phrases that repeat an earlier one (same words, in any order, or a subset of one)."""
    kept: list[str] = []
    seen: list[set[str]] = []
    for phrase in body.split(","):
        phrase = phrase.strip()
        words = set(re.findall(r"[\w']+", phrase.lower())) - _DANGLING
        if not phrase or (words and any(words <= earlier for earlier in seen)):
            continue
        kept.append(phrase)
        seen.append(words)
    return ", ".join(kept)


def drop_unfit_phrases(body: str) -> tuple[str, list[str]]:
    """`body` without the comma phrases that hold a sexual, profane or violent term (`data/blocklists/unfit.txt`,
    user-extendable like every blocklist); returns (body, dropped phrases)."""
    from rezcty_core.common.blocklists import load_blocklist

    blocklist = load_blocklist()
    kept, dropped = [], []
    for phrase in body.split(","):
        if any(h.category == UNFIT_CATEGORY for h in blocklist.find(phrase)):
            dropped.append(phrase.strip())
        else:
            kept.append(phrase)
    return (tidy_separators(",".join(kept)) if dropped else body), dropped


def _strip_prefixes(line: str) -> str:
    for _ in range(4):  # "Assistant: Sure! Here is the prompt: Prompt: …"
        before = line
        line = _ROLE_PREFIX.sub("", line)
        line = _PREAMBLE.sub("", line)
        line = _LABEL_PREFIX.sub("", line)
        if line == before:
            break
    return line.strip()


def _strip_quotes(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1]
    for q in _QUOTES:
        text = text.replace(q, "")
    return text


def garbage_reason(body: str, idea: str) -> str | None:
    """Why a cleaned generation is unusable, or None when it is a usable prompt body."""
    if not body:
        return "empty generation"
    letters = sum(ch.isalpha() for ch in body)
    if letters < 12 or len(body.split()) < 3:
        return "too short to be a prompt"
    if letters / max(len(body), 1) < 0.55:
        return "mostly symbols or digits"
    latin = sum(ch.isascii() and ch.isalpha() for ch in body)
    if latin / letters < 0.7:
        return "not English text"
    if _REFUSAL.search(body):
        return "a refusal or chat reply, not a prompt"
    words = [w for w in re.findall(r"[a-z']+", body.lower()) if w not in _DANGLING]
    if len(words) >= 10 and len(set(words)) / len(words) < 0.35:
        return "repetitive"
    phrases = [p.strip().lower() for p in body.split(",") if p.strip()]
    if len(phrases) >= 4 and len(set(phrases)) / len(phrases) < 0.5:
        return "repeated phrases"
    if body.strip(" .,").lower() == idea.strip(" .,").lower():
        return "the idea echoed back, not expanded"
    return None


def compose(body: str, triggers: Triggers, keep_within_77: bool = False) -> tuple[str, bool]:
    """Body + triggers at the end; with `keep_within_77` the body is cut so the whole fits one CLIP window.

    Returns (text, truncated).
    """
    body = remove_triggers(body, triggers)
    if not triggers:
        if keep_within_77 and count_clip_tokens(body) > CLIP_CONTENT_TOKENS:
            return _cut_body(body, CLIP_CONTENT_TOKENS), True
        return body, False
    joined = f"{body}, {triggers.suffix}" if body else triggers.suffix
    if not keep_within_77 or count_clip_tokens(joined) <= CLIP_CONTENT_TOKENS:
        return joined, False
    budget = CLIP_CONTENT_TOKENS - count_clip_tokens(", " + triggers.suffix)
    cut = _cut_body(body, budget) if budget > 0 else ""
    while cut and count_clip_tokens(f"{cut}, {triggers.suffix}") > CLIP_CONTENT_TOKENS:
        cut = _cut_body(cut, count_clip_tokens(cut) - 1)
    return (f"{cut}, {triggers.suffix}" if cut else triggers.suffix), True


def _cut_body(body: str, limit: int) -> str:
    """Cut to `limit` CLIP tokens, preferring to end on a whole comma phrase."""
    cut = truncate_to_clip_tokens(body, limit)
    if cut == body or not cut:
        return cut
    if body[len(cut):].lstrip().startswith(","):
        return tidy_separators(cut)
    last_comma = cut.rfind(",")
    if last_comma >= 0.6 * len(cut):
        cut = cut[:last_comma]
    return tidy_separators(cut)


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


def _make_job(llm: Any, idea: str, image: Any, seed: int, few_shot: bool | None) -> _Job:
    idea = " ".join(idea.split())
    if not idea:
        raise ValueError("the idea is empty: write a short idea such as 'a lighthouse on a cliff'")
    if few_shot is None:
        few_shot = getattr(llm, "specialist", None) != "whisperer"
    from rezcty_core.llm.language import english_idea

    english, note = english_idea(idea)
    return _Job(idea, image, int(seed), whisperer_messages(english, image is not None, few_shot), english=english,
                notes=[note] if note else [])


def _generate_round(llm: Any, jobs: list[_Job], attempt: int, sampling: dict) -> list[str | None]:
    """One generation per job (a batch); None for a job whose generation failed numerically."""
    seeds = [derive_seed(j.seed, attempt) for j in jobs]
    images = [j.image for j in jobs]
    try:
        if hasattr(llm, "model") and hasattr(llm, "load"):
            from rezcty_core.llm.batching import generate_batch

            return list(generate_batch(llm, [j.messages for j in jobs], seeds, images, **sampling))
        return [llm.generate(j.messages, image=j.image, seed=s, **sampling) for j, s in zip(jobs, seeds)]
    except RuntimeError as exc:  # a numerical failure of sampling (nan/inf); memory errors are not retried
        if "out of memory" in str(exc).lower():
            raise
        for j in jobs:
            j.reasons.append(f"attempt {attempt + 1}: generation failed ({type(exc).__name__}: {exc})")
        return [None] * len(jobs)


def _settle(llm: Any, job: _Job, raw: str, attempt: int, triggers: Triggers, max_new_tokens: int,
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


def expand_batch(llm: Any, jobs: list[_Job], triggers: Triggers, *, batch_size: int = 0,
                 temperature: float = DEFAULT_SAMPLING["temperature"], top_p: float = DEFAULT_SAMPLING["top_p"],
                 top_k: int = DEFAULT_SAMPLING["top_k"], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 keep_within_77: bool = False, retries: int = DEFAULT_RETRIES) -> list[Expansion]:
    """Every job expanded, `batch_size` rows per `generate()` (0: chosen from free memory).

    Round k generates attempt k of every job still without a usable prompt, in batches, each row with the
    seed derived from its own idea's seed; hygiene, retries and the fallback are decided per job.
    """
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": max_new_tokens}
    if int(batch_size) <= 0:
        batch_size = _auto_batch_size(llm, max_new_tokens)
    from rezcty_core.llm.batching import chunks

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


def _auto_batch_size(llm: Any, max_new_tokens: int) -> int:
    if not (hasattr(llm, "model") and hasattr(llm, "load")):
        return 1
    from rezcty_core.llm.batching import default_batch_size

    llm.load()
    return default_batch_size(llm, prompt_tokens=512, new_tokens=int(max_new_tokens))


def expand_idea(llm: Any, idea: str, triggers: Triggers | str, *, seed: int, image: Any = None,
                few_shot: bool | None = None, **options: Any) -> Expansion:
    """Expand one idea with `llm` (a `LoadedLLM`); always returns a usable, non-empty prompt.

    `few_shot` defaults to True unless the LLM carries a trained whisperer adapter, which was trained on the
    plain template and should see exactly that. Options as `expand_batch`.
    """
    if isinstance(triggers, str):
        triggers = parse_triggers(triggers)
    return expand_batch(llm, [_make_job(llm, idea, image, seed, few_shot)], triggers, **options)[0]


def _hit_limit(llm: Any, raw: str, max_new_tokens: int) -> bool:
    """Whether the answer used (about) all of `max_new_tokens`, i.e. it was cut off mid-phrase."""
    tokenizer = getattr(llm, "tokenizer", None)
    if tokenizer is None or not raw:
        return False
    return len(tokenizer(raw, add_special_tokens=False)["input_ids"]) >= max_new_tokens - 2


def check_can_see(llm: Any, image: Any) -> None:
    """A clear error when an image embedding is wired to an LLM that cannot read it."""
    if image is None:
        return
    if not getattr(llm, "can_see", False):
        raise ValueError(f"Whisperer Expand: an image_embedding is connected but the LLM ({llm!r}) has no projector; "
                         "load a whisperer adapter trained with image embeddings, or disconnect image_embedding")
    config = getattr(llm, "config", None)
    if config is not None:
        from rezcty_core.llm.adapter import check_eye

        check_eye(config, getattr(llm, "adapter_name", "") or "", dict(getattr(image, "meta", {}) or {}))


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


def expand_ideas(llm: Any, prompt: str, trigger_words: str = DEFAULT_TRIGGERS, *, seed: int = 0,
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
