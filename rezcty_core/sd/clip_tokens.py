"""CLIP token counts, measured with the real CLIP BPE tokenizer (the one SD 1.5's text encoder reads).

The vocabulary is open_clip's `bpe_simple_vocab_16e6.txt.gz` (the manifest's `clip-bpe`). `prepare_embedded`,
run by `python -m rezcty_core.embedded prepare`, turns it once into the `vocab.json` + `merges.txt` pair a
transformers `CLIPTokenizer` reads (nothing here writes at run time), so the
ids are exactly those of ComfyUI's `comfy/sd1_tokenizer` (a test checks it). Counts exclude the start and
end tokens: SD 1.5 sees 75 content tokens per 77-token chunk.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import threading
from functools import lru_cache
from pathlib import Path

from rezcty_core.common.embedded_models import prepare_command, require
from rezcty_core.common.paths import embedded_raw

# One 77-token CLIP window minus the start and end tokens.
CLIP_CONTENT_TOKENS = 75
# CLIP's BPE: 49152 merges lines in the file; the first is a header, 256 bytes + 2 specials are reserved.
_MERGES_END = 49152 - 256 - 2 + 1
_lock = threading.Lock()
EMBEDDED_NAME = "clip-bpe"  # the manifest's name (rezcty_core/data/embedded_models.json)
VOCAB_RAW = ("open_clip", "bpe_simple_vocab_16e6.txt.gz")
OUT_FOLDER = "clip_tokenizer"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table (printable bytes keep their own glyph)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def vocabulary_source(dest: Path | None = None) -> Path:
    path = Path(dest).joinpath("raw", *VOCAB_RAW) if dest is not None else embedded_raw(*VOCAB_RAW)
    if not path.exists():
        raise FileNotFoundError(f"CLIP BPE vocabulary not found at {path}; {prepare_command(EMBEDDED_NAME, dest)}")
    return path


def build_vocab_and_merges(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """open_clip's merge list -> (token -> id vocabulary, merge lines) in CLIP's id order."""
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1:_MERGES_END]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def tokenizer_dir() -> Path:
    """Folder with `vocab.json` + `merges.txt` (prepared; EmbeddedModelMissing naming the command otherwise)."""
    return require(EMBEDDED_NAME) / OUT_FOLDER


def prepare_embedded(dest: Path) -> None:
    """Converter of the manifest's `clip-bpe`: `dest/clip_tokenizer/{vocab.json,merges.txt}` (idempotent)."""
    out = Path(dest) / OUT_FOLDER
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    if vocab_path.exists() and merges_path.exists():
        return
    with _lock:
        vocab, merges = build_vocab_and_merges(vocabulary_source(dest))
        out.mkdir(parents=True, exist_ok=True)
        suffix = f".tmp{os.getpid()}"
        tmp_merges = merges_path.with_name(merges_path.name + suffix)
        tmp_merges.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        os.replace(tmp_merges, merges_path)
        tmp_vocab = vocab_path.with_name(vocab_path.name + suffix)
        tmp_vocab.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp_vocab, vocab_path)


@lru_cache(maxsize=1)
def clip_tokenizer():
    """A transformers `CLIPTokenizer` (as ComfyUI loads it) on the embedded CLIP vocabulary."""
    from transformers import CLIPTokenizer
    from transformers.utils import logging as hf_logging

    folder = tokenizer_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # silence "ftfy not installed": ComfyUI runs the same fallback
    try:
        # from_pretrained reads vocab.json + merges.txt the same way in transformers 4 and 5 (5 renamed the
        # constructor's file arguments), as ComfyUI's own sd1_tokenizer does
        tok = CLIPTokenizer.from_pretrained(
            str(folder), bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
            pad_token="<|endoftext|>", model_max_length=77,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return tok


def clip_token_ids(text: str) -> list[int]:
    """CLIP BPE ids of `text`, without the start/end tokens."""
    tok = clip_tokenizer()
    return tok.convert_tokens_to_ids(tok.tokenize(text))


def count_clip_tokens(text: str) -> int:
    """Number of CLIP tokens in `text`, without the start/end tokens (75 fit in one SD 1.5 window)."""
    if not text or not text.strip():
        return 0
    return len(clip_tokenizer().tokenize(text))


def truncate_to_clip_tokens(text: str, limit: int = CLIP_CONTENT_TOKENS) -> str:
    """The longest prefix of `text` (cut between words, original casing kept) with at most `limit` tokens.

    Trailing separators left by the cut (commas, spaces) are dropped. A single word longer than the limit
    is cut inside the word.
    """
    if limit <= 0:
        return ""
    if count_clip_tokens(text) <= limit:
        return text
    # Cut points: the end of each word. CLIP splits at whitespace, so counts grow monotonically with them.
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    lo, hi = 0, len(ends) - 1
    best = -1
    while lo <= hi:
        mid = (lo + hi) // 2
        if count_clip_tokens(text[: ends[mid]]) <= limit:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best >= 0:
        cut = text[: ends[best]]
    else:  # the first word alone is over the limit: cut by characters
        first = text[: ends[0]]
        lo, hi, n = 1, len(first), 0
        while lo <= hi:
            mid = (lo + hi) // 2
            if count_clip_tokens(first[:mid]) <= limit:
                n, lo = mid, mid + 1
            else:
                hi = mid - 1
        cut = first[:n]
    return cut.rstrip(" \t,;:-")
