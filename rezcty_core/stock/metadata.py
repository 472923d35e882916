"""Adobe Stock metadata: title, description, keywords and category for generated images.

Two sources feed a draft: the judge/analyst LLM when one is given (schema-checked JSON with
retries) and a deterministic extractor from the prompt and the pixels that always works
offline. The rules layer (`apply_rules`) always runs last and enforces every Adobe limit and
every blocklist, whatever the source said. `write_batch` turns a batch into stock JPEGs with
embedded XMP/IPTC, JSON sidecars and rows of Adobe's upload CSV.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rezcty_core.common import language as indonesian
from rezcty_core.common.blocklists import Blocklist, load_blocklist
from rezcty_core.stock import adobe_csv as stock_csv
from rezcty_core.stock import categories, keywords, seen_brands, xmp_iptc

TITLE_MAX = 70
DESCRIPTION_MAX = 200
KEYWORDS_MIN = 15
KEYWORDS_RECOMMENDED_MAX = 35
KEYWORDS_MAX = 49
KEYWORD_MAX_WORDS = 4
MIN_PIXELS = 4_000_000
MAX_PIXELS = 100_000_000
# Judge sampling from the brief: temperature 0.2, top_p 0.9, max 256 new tokens.
LLM_SAMPLING = {"temperature": 0.2, "top_p": 0.9, "top_k": 50, "max_new_tokens": 256}

_LEAD_DROP = {"and", "or", "but", "with", "by", "of", "in", "from", "featuring", "at", "on", "for", "to", "as",
              "like", "inspired", "plus", "while"}
_TAIL_DROP = _LEAD_DROP | {"the", "a", "an", "art", "style", "made", "its", "his", "her", "their", "very", "under",
                           "over", "into", "near", "above", "below", "behind", "through", "against", "is", "are"}
_PHOTO_HINTS = re.compile(r"\b(photo|photograph|photography|photorealistic|photo-realistic|realistic|dslr|raw photo|"
                          r"\d{2,3}\s?mm|f/\d|shot on|canon|nikon|sony a\d|film grain|bokeh|depth of field)\b", re.I)


# --- cleaning the prompt -----------------------------------------------------------------------

def strip_prompt_syntax(prompt: str) -> str:
    """Positive prompt text without weights, LoRA tags, embeddings, A1111/Midjourney parameters."""
    text = re.split(r"(?im)^\s*(?:negative prompt|steps)\s*:", prompt)[0]
    text = re.sub(r"(?i)\bnegative prompt\s*:.*", " ", text, flags=re.S)
    text = re.sub(r"(?<!\w)--[a-z]+(?:\s+(?!--)[^\s,]+)?", " ", text)  # --ar 16:9, --v 5.2, --no x
    text = re.sub(r"<[^<>]*>", " ", text)  # <lora:name:0.8>, <hypernet:...>
    text = re.sub(r"(?i)\bembedding:[^\s,()\[\]]+", " ", text)
    text = re.sub(r"\\([()\[\]{}])", r"\1", text)
    text = re.sub(r":\s*-?\d+(?:\.\d+)?\s*(?=[)\]>])", "", text)  # (word:1.3) -> (word)
    text = re.sub(r"::\s*-?\d*(?:\.\d+)?", ", ", text)  # word::2 (Midjourney)
    text = re.sub(r"\[([^\[\]:|]*):([^\[\]:|]*)(?::[^\[\]]*)?\]", r"\1, \2", text)  # [from:to:when]
    text = re.sub(r"[|]", ", ", text)  # {a|b}, [a|b]
    text = re.sub(r"[()\[\]{}<>]", " ", text)
    text = re.sub(r"\b(?:BREAK|AND)\b", ",", text)
    text = re.sub(r"(?<![\w.])\d+\.\d+(?![\w.])", " ", text)  # stray weights
    text = re.sub(r"(?i)\b(?:\d{2,3}\s?mm|f/\d+(?:\.\d+)?|iso\s?\d+|1/\d+\s?s)(?!\w)", " ", text)  # camera settings
    return re.sub(r"[ \t]+", " ", text).strip()


def _tidy_segment(segment: str) -> str:
    words = segment.split()
    while words and words[0].lower() in _LEAD_DROP:
        words.pop(0)
    while words and words[-1].lower() in _TAIL_DROP:
        words.pop()
    return " ".join(words)


@dataclass
class CleanPrompt:
    original: str
    language: str
    segments: list[str]
    removed: list[dict] = field(default_factory=list)

    @property
    def text(self) -> str:
        return ", ".join(self.segments)


def clean_prompt(prompt: str, blocklist: Blocklist | None = None) -> CleanPrompt:
    """Content-only English text of a prompt, in comma segments; blocked terms cut out and listed."""
    blocklist = blocklist or load_blocklist()
    text = strip_prompt_syntax(prompt)
    language = indonesian.detect_language(text)
    if language == "id":
        text = indonesian.translate_indonesian(text)
    text, hits = blocklist.remove(text)
    removed = [{"term": h.term, "category": h.category} for h in hits]
    for token in re.findall(r"[^\W\d_]*_[\w]*", text):  # trigger-like tokens (`xyz_style`)
        removed.append({"term": token, "category": "triggers"})
    text = re.sub(r"[\w-]*_[\w-]*", " ", text)
    segments = []
    for seg in keywords.segments(text):
        tidy = _tidy_segment(re.sub(r"\s+", " ", seg))
        if any(keywords.is_keyword_word(w) for w in tidy.split()):
            segments.append(tidy)
    return CleanPrompt(prompt, language, segments, removed)


# --- what the pixels say --------------------------------------------------------------------

@dataclass
class ImageFacts:
    width: int
    height: int
    colors: list[str]
    brightness: str

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def orientation(self) -> str:
        if self.width > self.height * 1.05:
            return "horizontal"
        if self.height > self.width * 1.05:
            return "vertical"
        return "square"


def describe_image(pixels: np.ndarray) -> ImageFacts:
    """Size, dominant named colours (each >= 12 % of the image) and overall brightness."""
    h, w = pixels.shape[:2]
    step = max(1, int(max(h, w) / 96))
    small = pixels[::step, ::step, :3].reshape(-1, 3).astype(np.float32) / 255.0
    mx, mn = small.max(1), small.min(1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    r, g, b = small[:, 0], small[:, 1], small[:, 2]
    delta = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / delta) % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60
    names = np.full(len(small), "", dtype=object)
    names[:] = "gray"
    names[(sat < 0.15) & (mx > 0.85)] = "white"
    chroma = (sat >= 0.15) & (mx >= 0.2)
    bins = [(15, "red"), (40, "orange"), (68, "yellow"), (165, "green"), (255, "blue"), (290, "purple"),
            (345, "pink"), (361, "red")]
    low = 0
    for high, name in bins:
        names[chroma & (hue >= low) & (hue < high)] = name
        low = high
    names[chroma & np.isin(names, ["orange", "red"]) & (mx < 0.55)] = "brown"
    names[mx < 0.2] = "black"
    values, counts = np.unique(names.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    colors = [str(values[i]) for i in order if counts[i] / len(small) >= 0.12][:3]
    luma = float((0.2126 * r + 0.7152 * g + 0.0722 * b).mean())
    brightness = "dark" if luma < 0.25 else "bright" if luma > 0.75 else "medium"
    return ImageFacts(w, h, colors, brightness)


# --- drafts ------------------------------------------------------------------------------

@dataclass
class Draft:
    title: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    category: int | None = None
    source: str = "deterministic"
    notes: list[str] = field(default_factory=list)


def _strip_article(text: str) -> str:
    return re.sub(r"^(?:a|an|the)\s+", "", text.strip(), flags=re.I)


def deterministic_draft(clean: CleanPrompt, facts: ImageFacts | None = None) -> Draft:
    """Title, description and ranked keywords from the cleaned prompt (and the image's colours)."""
    segs = [_strip_article(s) for s in clean.segments]
    title = segs[0] if segs else ""
    if segs and len(title.split()) < 3 and len(segs) > 1:
        title = f"{title} with {segs[1]}"
    rest = [s for s in clean.segments[1:] if s]
    description = _strip_article(clean.segments[0]) if clean.segments else ""
    for i, seg in enumerate(rest):
        joiner = " and " if i == len(rest) - 1 and i > 0 else (" with " if i == 0 else ", ")
        if len(description) + len(joiner) + len(seg) + 1 > DESCRIPTION_MAX:
            break
        description += joiner + seg
    words = keywords.extract_keywords(clean.text, limit=KEYWORDS_MAX)
    words += keywords.related_keywords(words)
    if facts:
        words += [c for c in facts.colors if c not in words]
    return Draft(title, description, words, None, "deterministic")


def judge_user_text(clean: CleanPrompt, facts: ImageFacts | None) -> str:
    lines = ["Write Adobe Stock metadata for this image.", f"Content: {clean.text or 'unknown'}"]
    if facts:
        lines.append(f"Measurements: {facts.width}x{facts.height} px, {facts.orientation}, "
                     f"colours {', '.join(facts.colors) or 'mixed'}, {facts.brightness} exposure.")
    return "\n".join(lines)


def validate_metadata_reply(obj: Any) -> dict:
    """The judge's JSON checked for what metadata needs: a title and a keyword list (raises ValueError)."""
    from rezcty_core.llm.templates import validate_judge_reply

    reply = validate_judge_reply(obj)
    if not reply["title"].strip():
        raise ValueError("'title' is empty")
    if len([k for k in reply["keywords"] if str(k).strip()]) < 3:
        raise ValueError("'keywords' needs at least 3 entries")
    return reply


def llm_draft(llm: Any, clean: CleanPrompt, facts: ImageFacts | None, embedding: Any = None,
              seed: int = 0, retries: int = 2) -> Draft:
    """A draft from the judge LLM (`LoadedLLM.generate_json`); `source` says whether it succeeded."""
    from rezcty_core.llm.templates import build_messages

    image = embedding if embedding is not None and getattr(llm, "can_see", False) else None
    messages = build_messages("judge", judge_user_text(clean, facts), has_image=image is not None)
    from rezcty_core.llm.constrained import metadata_schema

    schema = metadata_schema([f"{n} {name}" for n, name in categories.ADOBE_CATEGORIES.items()])
    reply = llm.generate_json(messages, validate_metadata_reply, retries=retries, image=image, seed=seed,
                              schema=schema, **LLM_SAMPLING)  # constrained decoding: the first reply parses
    if reply.value is None:
        return Draft(source="deterministic", notes=[f"LLM reply unusable after {reply.attempts} attempts: "
                                                    + "; ".join(reply.errors)[-300:]])
    value = reply.value
    category = None
    try:
        category = categories.parse_category(value.get("category")) if value.get("category") else None
    except ValueError:
        category = None
    note = [] if image is not None or embedding is None else ["the LLM cannot see: image_embedding was not used"]
    return Draft(value["title"], value["description"], list(value["keywords"]), category,
                 f"llm ({reply.attempts} attempt{'s' if reply.attempts > 1 else ''})", note)


# --- the rules layer ---------------------------------------------------------------------

@dataclass
class StockMetadata:
    title: str
    description: str
    keywords: list[str]
    category: int
    content_type: str
    source: str
    warnings: list[str] = field(default_factory=list)
    removed_terms: list[dict] = field(default_factory=list)

    @property
    def category_name(self) -> str:
        return categories.ADOBE_CATEGORIES[self.category]

    def to_dict(self) -> dict:
        return {**asdict(self), "category_name": self.category_name}


_PHRASE_STARTS = re.compile(r"\s(?:and|with|while|under|over|near|beside|behind|against|in|on|at|of)\s", re.IGNORECASE)


def _cut_words(text: str, limit: int) -> str:
    """Cut to `limit` at a word; prefer the last phrase boundary in the second half ("…ridges | with a…")."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0] if " " in text[:limit + 1] else text[:limit]
    cut = cut[:limit]
    starts = [m.start() for m in _PHRASE_STARTS.finditer(cut + " ") if m.start() >= limit // 2]
    return cut[:starts[-1]] if starts else cut


def clean_sentence(text: str, blocklist: Blocklist, limit: int, commas: bool) -> str:
    """One line, blocked terms removed, trailing connectors dropped, cut at a word <= limit, capitalised."""
    text = re.sub(r"[\r\n\t\"“”;|#]+", " ", str(text))
    text = strip_prompt_syntax(text)
    text = re.sub(r"[\w-]*_[\w-]*", " ", text)
    text, _ = blocklist.remove(text)
    if not commas:
        text = text.replace(",", " ")
    text = re.sub(r"\s+([,.!?])", r"\1", re.sub(r"\s+", " ", text)).strip(" ,.;:-")
    text = re.sub(r"(?:,\s*)+", ", ", text)
    text = _cut_words(text, limit)
    words = text.rstrip(" ,.;:-").split()
    while words and words[-1].lower().strip(",.") in _TAIL_DROP:
        words.pop()
    while words and words[0].lower() in _LEAD_DROP:
        words.pop(0)
    text = " ".join(words).rstrip(" ,;:-")
    return text[:1].upper() + text[1:]


def clean_keywords(candidates: list[str], blocklist: Blocklist, limit: int = KEYWORDS_MAX) -> list[str]:
    """Lower case, unique (case-insensitively), no blocked term, no commas, <= 4 words and 64 bytes each."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in candidates:
        for piece in re.split(r"[,;\n]+", str(raw)):
            kw = re.sub(r"\s+", " ", strip_prompt_syntax(piece).lower()).strip(" .:-'\"#")
            words = kw.split()
            if not words or len(words) > KEYWORD_MAX_WORDS or "_" in kw or len(kw.encode()) > 64:
                continue
            if not any(keywords.is_keyword_word(w) for w in words) or not keywords.is_keyword_word(words[-1]):
                continue
            if blocklist.is_blocked(kw) or kw in seen:
                continue
            seen.add(kw)
            out.append(kw)
            if len(out) >= limit:
                return out
    return out


def content_type(prompt: str) -> str:
    """'photo' when the prompt asks for a photograph, else 'illustration' (Adobe's upload choice)."""
    return "photo" if _PHOTO_HINTS.search(prompt) else "illustration"


def apply_rules(draft: Draft, clean: CleanPrompt, facts: ImageFacts | None, blocklist: Blocklist,
                category: int | None = None, fallback: Draft | None = None) -> StockMetadata:
    """Enforce every limit on a draft; `fallback` (the deterministic draft) fills what the draft lacks."""
    fallback = fallback or deterministic_draft(clean, facts)
    warnings = list(draft.notes)
    title = clean_sentence(draft.title, blocklist, TITLE_MAX, commas=False)
    if len(title.split()) < 2 and draft is not fallback:
        title = clean_sentence(fallback.title, blocklist, TITLE_MAX, commas=False)
    description = clean_sentence(draft.description, blocklist, DESCRIPTION_MAX - 1, commas=True)
    if len(description.split()) < 3:
        description = clean_sentence(fallback.description, blocklist, DESCRIPTION_MAX - 1, commas=True)
    kws = clean_keywords(list(draft.keywords) + list(fallback.keywords), blocklist)
    number = category or draft.category or categories.classify(kws[:20] or title.split())
    if len(kws) < KEYWORDS_MIN:
        filler = list(categories.GENERIC_KEYWORDS[number])
        if facts:
            filler += ([facts.brightness] if facts.brightness != "medium" else []) + [facts.orientation]
        kws = clean_keywords(kws + filler, blocklist)
    if len(kws) < KEYWORDS_MIN:
        warnings.append(f"only {len(kws)} keywords (Adobe recommends 15-35): give the prompt more content")
    if not title:
        title = " and ".join(k.capitalize() if i == 0 else k for i, k in enumerate(kws[:2])) or "Untitled"
        warnings.append("no usable title in the prompt; made one from the keywords")
    if not description:
        description = title
    if not description.endswith((".", "!", "?")):
        description += "."
    if facts and facts.width * facts.height < MIN_PIXELS:
        warnings.append(f"{facts.width}x{facts.height} is {facts.megapixels:.2f} MP, below Adobe's 4 MP minimum: "
                        "upscale before uploading")
    if facts and facts.width * facts.height > MAX_PIXELS:
        warnings.append(f"{facts.megapixels:.0f} MP is above Adobe's 100 MP maximum")
    return StockMetadata(title, description, kws, number, content_type(clean.original), draft.source, warnings,
                         clean.removed)


def build_metadata(prompt: str, pixels: np.ndarray | None = None, *, category: str | int | None = "auto",
                   llm: Any = None, embedding: Any = None, seed: int = 0,
                   blocklist: Blocklist | None = None) -> StockMetadata:
    """Metadata for one image: LLM draft when `llm` is given, deterministic otherwise; rules last."""
    blocklist = blocklist or load_blocklist()
    clean = clean_prompt(prompt, blocklist)
    facts = describe_image(pixels) if pixels is not None else None
    fallback = deterministic_draft(clean, facts)
    draft = fallback
    if llm is not None:
        draft = llm_draft(llm, clean, facts, embedding, seed)
    return apply_rules(draft, clean, facts, blocklist, categories.parse_category(category), fallback)


# --- QC report -----------------------------------------------------------------------------

def qc_entries(report: str | list | None, n_images: int) -> list[dict | None]:
    """The QC entry of each image. The report may cover this batch (same length, by `index`) or the
    original batch when only the passed images are connected (then every image is a pass)."""
    if report is None or (isinstance(report, str) and not report.strip()):
        return [None] * n_images
    try:
        entries = json.loads(report) if isinstance(report, str) else report
    except json.JSONDecodeError as e:
        raise ValueError(f"qc_report is not valid JSON ({e}); connect the QC Judge's report output") from None
    if isinstance(entries, dict):
        entries = entries.get("entries", entries.get("images", [entries]))
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("qc_report must be a JSON list of entries {\"index\", \"verdict\", ...}")
    if len(entries) == n_images:
        by_index = {int(e.get("index", i)): e for i, e in enumerate(entries)}
        return [by_index.get(i, entries[i]) for i in range(n_images)]
    passed = [e for e in entries if str(e.get("verdict", "")).lower() == "pass"]
    if len(passed) == n_images:
        return passed
    raise ValueError(f"qc_report has {len(entries)} entries ({len(passed)} pass) but {n_images} images arrived: "
                     "connect the same batch the QC Judge saw, or its 'passed' output")


def qc_people_hint(entry: dict | None) -> tuple[int | None, list[str]]:
    """(category, keywords) from a QC entry's flags (rezcty_core/qc/people.py): a face found means Adobe's
    13 People and people words; a large face adds portrait words."""
    flags = (entry or {}).get("flags") or []
    if "people" not in flags:
        return None, []
    share = float(((entry or {}).get("measurements") or {}).get("face_max_share") or 0.0)
    return 13, ["people", "person", "human", *(("portrait", "face") if share >= 0.02 else ())]


# --- reproducibility -----------------------------------------------------------------------

MODEL_INPUTS = {"ckpt_name": "checkpoints", "lora_name": "loras", "style_lora": "loras", "structure_lora": "loras",
                "vae_name": "vae", "embedding": "embeddings", "unet_name": "diffusion_models",
                "clip_name": "text_encoders"}
# inputs whose name is too generic to mean a model folder on any node ("model_name")
CLASS_MODEL_INPUTS = {("UpscaleModelLoader", "model_name"): "upscale_models"}
PARAM_INPUTS = ("steps", "cfg", "sampler_name", "scheduler", "denoise", "width", "height", "strength_model",
                "strength_clip", "style_strength_model", "style_strength_clip", "structure_strength_model",
                "structure_strength_clip", "weight", "upscale_method", "scale_by", "preset", "base_scale", "crop")


def generation_params(graph: dict | None) -> dict:
    """Seeds, model files (by ComfyUI folder) and sampler settings found in an API-format graph."""
    seeds: list[int] = []
    models: list[dict] = []
    nodes: dict[str, dict] = {}
    for node_id, node in sorted((graph or {}).items(), key=lambda kv: str(kv[0])):
        if not isinstance(node, dict):
            continue
        inputs = node.get("inputs", {}) or {}
        params = {}
        for key, value in inputs.items():
            if isinstance(value, list):
                continue  # a link, not a value
            if key in ("seed", "noise_seed") and isinstance(value, int):
                seeds.append(value)
                params[key] = value
            elif key in MODEL_INPUTS and isinstance(value, str) and value not in ("none", ""):
                models.append({"node": str(node_id), "input": key, "folder": MODEL_INPUTS[key], "name": value})
            elif (node.get("class_type"), key) in CLASS_MODEL_INPUTS and isinstance(value, str) and value:
                models.append({"node": str(node_id), "input": key,
                               "folder": CLASS_MODEL_INPUTS[(node.get("class_type"), key)], "name": value})
            elif key in PARAM_INPUTS:
                params[key] = value
        if params:
            nodes[str(node_id)] = {"class_type": node.get("class_type"), **params}
    return {"seeds": seeds, "models": models, "nodes": nodes, "upscaler": upscaler_record(models)}


def upscaler_record(models: list[dict]) -> dict | None:
    """The upscale model of the render (name, and sha256 once the models are hashed), or None."""
    ups = [m for m in models if m.get("folder") == "upscale_models"]
    if not ups:
        return None
    return {k: ups[0][k] for k in ("name", "node", "sha256") if k in ups[0]}


_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """Full SHA-256 of a model file (the hash model sites list), memoised by path, size and mtime."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


# --- the batch writer ----------------------------------------------------------------------

@dataclass
class WriteOptions:
    filename_prefix: str = ""
    csv_name: str = "adobe_stock.csv"
    category: str | int | None = "auto"
    qc_report: str | list | None = None
    generation: dict = field(default_factory=dict)
    workflow: dict | None = None
    max_csv_rows: int = stock_csv.MAX_ROWS


def _csv_path(output_dir: Path, csv_name: str, warnings: list[str]) -> Path:
    folders, name, changed = stock_csv.safe_relative(csv_name, default_name="adobe_stock.csv")
    if not name.lower().endswith(".csv"):
        name = f"{name}.csv"
        changed = True
    if changed:
        warnings.append(f"csv_name '{csv_name}' was made safe: '{'/'.join(folders + [name])}'")
    return stock_csv.inside(output_dir, output_dir.joinpath(*folders, name))


def write_batch(frames: list[np.ndarray], prompt: str, output_dir: str | Path, options: WriteOptions | None = None,
                llm: Any = None, embeddings: list | None = None) -> list[dict]:
    """Write each image as a stock JPEG with metadata + sidecar, and add passed ones to the CSV.

    One entry per image comes back (`error` set when that image failed; the others go on).
    Rejected images (QC report) go to `rejected/` next to the others and never into the CSV.
    """
    opts = options or WriteOptions()
    out_root = Path(output_dir).resolve()
    batch_warnings: list[str] = []
    folders, stem, changed = stock_csv.safe_relative(opts.filename_prefix)
    if changed:
        batch_warnings.append(f"filename_prefix '{opts.filename_prefix}' was made safe: '{'/'.join(folders + [stem])}'")
    folder = stock_csv.inside(out_root, out_root.joinpath(*folders))
    csv_path = _csv_path(out_root, opts.csv_name, batch_warnings)
    stock_csv.check_series(csv_path)  # a foreign CSV fails the batch before any image is written
    qc = qc_entries(opts.qc_report, len(frames))
    blocklist = load_blocklist()
    seeds = list(opts.generation.get("seeds", []))
    repro_base = {"prompt": prompt, **{k: v for k, v in opts.generation.items() if k != "workflow"}}
    results: list[dict] = []
    rows: list[tuple[int, stock_csv.StockRow]] = []
    for index, pixels in enumerate(frames):
        entry: dict[str, Any] = {"index": index, "error": None}
        try:
            emb = embeddings[index] if embeddings and index < len(embeddings) else None
            hint_category, hint_keywords = qc_people_hint(qc[index])
            auto = categories.parse_category(opts.category) is None
            seen = seen_brands.seen_brands(qc[index], blocklist)  # brand names QC read in this image
            image_blocklist = load_blocklist({"brands_seen": seen}) if seen else blocklist
            meta = build_metadata(prompt, pixels, category=hint_category if auto and hint_category else opts.category,
                                  llm=llm, embedding=emb, seed=seeds[0] if seeds else 0, blocklist=image_blocklist)
            if hint_keywords:  # the QC judge saw people: their words early in the list (Adobe weighs the first 10)
                meta.keywords = clean_keywords(meta.keywords[:5] + hint_keywords + meta.keywords[5:], image_blocklist)
            if seen:
                meta.warnings.append("brand names read in the image kept out of the metadata: " + ", ".join(seen))
            verdict = str((qc[index] or {}).get("verdict", "")).lower() or None
            target = folder / "rejected" if verdict == "reject" else folder
            path = stock_csv.reserve_filename(target, stem or meta.title)
            repro = dict(repro_base)
            if emb is not None:
                repro["image_embedding"] = dict(getattr(emb, "meta", {}) or {})
            if llm is not None:
                repro["llm"] = dict(getattr(llm, "identity", {}) or {})
            size = xmp_iptc.write_stock_jpeg(pixels, path, meta.title, meta.description, meta.keywords, repro)
            entry.update(meta.to_dict())
            entry["warnings"] = batch_warnings + meta.warnings
            entry.update(filename=path.name, subfolder=path.parent.relative_to(out_root).as_posix(), bytes=size,
                         width=int(pixels.shape[1]), height=int(pixels.shape[0]), qc_verdict=verdict,
                         csv=None)
            sidecar = {**entry, "reproducibility": repro, "qc": qc[index], "workflow": opts.workflow}
            path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False, default=str),
                                                 encoding="utf-8")
            if verdict != "reject":
                rows.append((index, stock_csv.StockRow(path.name, meta.title, meta.keywords, meta.category)))
        except Exception as e:  # one bad image never stops the batch
            entry["error"] = f"image {index}: {type(e).__name__}: {e}"
        results.append(entry)
    if frames and all(r.get("error") for r in results):
        raise RuntimeError("no image was written: " + " | ".join(r["error"] for r in results)[:2000])
    if rows:
        files = stock_csv.append_rows(csv_path, [r for _, r in rows], max_rows=opts.max_csv_rows)
        for index, _ in rows:
            results[index]["csv"] = files[-1].relative_to(out_root).as_posix()
    return results


def summary(results: list[dict]) -> str:
    """A few lines for the node: counts, CSV, first title and keywords, warnings and errors."""
    ok = [r for r in results if not r.get("error")]
    in_csv = [r for r in ok if r.get("csv")]
    lines = [f"{len(ok)}/{len(results)} written, {len(in_csv)} added to {in_csv[0]['csv'] if in_csv else 'no CSV'}"]
    for r in ok[:3]:
        lines.append(f"{r['filename']}: {r['title']} [{r['category']} {r['category_name']}] "
                     f"({len(r['keywords'])} keywords, {r['source']})")
        lines.append("  " + ", ".join(r["keywords"][:12]) + (" ..." if len(r["keywords"]) > 12 else ""))
    for w in sorted({w for r in ok for w in r.get("warnings", [])}):
        lines.append(f"warning: {w}")
    lines += [r["error"] for r in results if r.get("error")]
    return "\n".join(lines)
