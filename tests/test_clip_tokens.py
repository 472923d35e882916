"""The CLIP tokenizer built from open_clip's vocabulary gives exactly ComfyUI's SD1 token ids."""
from __future__ import annotations

import json

import pytest
from transformers import CLIPTokenizer

from harness import REPO
from rezcty_core.sd import clip_tokens

COMFY_SD1_TOKENIZER = REPO / ".comfyui" / "ComfyUI" / "comfy" / "sd1_tokenizer"

VARIED_TEXTS = [
    "a futuristic city under heavy rain, glowing neon lights, rezcty_style",
    "sunrise over mountain with cinematic atmosphere, rezcty_style rezcty_structure rezcty_genius",
    "A LONE Knight clad in ARMOR forged from solidified moonlight!!!",
    "(masterpiece:1.2), [blue|red] sky; 3.5 meters tall — em-dash… ellipsis",
    "café crème brûlée naïve façade Zürich",
    "日本の桜 и русский текст, emoji 🌸🗻 and tabs\tand\nnewlines",
    "don't can't it's we'll they've I'd",
    "numbers 1234567890 0.75 1e-5 #hashtag @mention http://example.com/a?b=c",
    "   leading and trailing spaces   ",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "embedding:rezcty_genius, lora weights <lora:foo:0.7>",
]


@pytest.fixture(scope="module")
def comfy_tokenizer() -> CLIPTokenizer:
    assert COMFY_SD1_TOKENIZER.is_dir(), f"ComfyUI tree missing at {COMFY_SD1_TOKENIZER}"
    return CLIPTokenizer.from_pretrained(str(COMFY_SD1_TOKENIZER))


def test_vocabulary_matches_comfyui_sd1_tokenizer_files():
    vocab, merges = clip_tokens.build_vocab_and_merges(clip_tokens.vocabulary_source())
    reference = json.loads((COMFY_SD1_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab == reference
    ref_merges = (COMFY_SD1_TOKENIZER / "merges.txt").read_text(encoding="utf-8").strip().split("\n")[1:]
    assert merges == ref_merges


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_token_ids_identical_to_comfyui(comfy_tokenizer, text):
    ours = clip_tokens.clip_tokenizer()
    assert ours(text)["input_ids"] == comfy_tokenizer(text)["input_ids"]
    assert clip_tokens.clip_token_ids(text) == comfy_tokenizer(text)["input_ids"][1:-1]
    assert clip_tokens.count_clip_tokens(text) == len(comfy_tokenizer(text)["input_ids"]) - 2


def test_count_excludes_start_and_end_tokens():
    tok = clip_tokens.clip_tokenizer()
    ids = tok("a cat")["input_ids"]
    assert ids[0] == tok.bos_token_id == 49406 and ids[-1] == tok.eos_token_id == 49407
    assert clip_tokens.count_clip_tokens("a cat") == 2
    assert clip_tokens.count_clip_tokens("") == 0
    assert clip_tokens.count_clip_tokens("  \n ") == 0
    # an unusual word costs several BPE pieces, unlike a word count
    assert clip_tokens.count_clip_tokens("rezcty_style") > 1


def test_truncate_keeps_short_text_unchanged():
    text = "A Red Cube, on a table"
    assert clip_tokens.truncate_to_clip_tokens(text) == text
    assert clip_tokens.truncate_to_clip_tokens(text, limit=0) == ""


def test_truncate_cuts_between_words_within_limit_and_keeps_case():
    text = ", ".join(f"Glowing Lantern number {i}" for i in range(40))
    assert clip_tokens.count_clip_tokens(text) > 75
    cut = clip_tokens.truncate_to_clip_tokens(text)
    assert clip_tokens.count_clip_tokens(cut) <= 75
    assert text.startswith(cut)
    assert not cut.endswith((",", " "))
    # maximal: adding the next word would exceed the limit
    rest = text[len(cut):].lstrip(", ")
    next_word = rest.split()[0]
    assert clip_tokens.count_clip_tokens(text[: len(cut) + text[len(cut):].index(next_word) + len(next_word)]) > 75
    for limit in (1, 5, 20, 74):
        piece = clip_tokens.truncate_to_clip_tokens(text, limit)
        assert 0 < clip_tokens.count_clip_tokens(piece) <= limit
        assert text.startswith(piece)


def test_truncate_inside_a_single_huge_word():
    word = "x" * 50 + "qz" * 200
    cut = clip_tokens.truncate_to_clip_tokens(word, 10)
    assert cut and word.startswith(cut)
    assert clip_tokens.count_clip_tokens(cut) <= 10


def test_tokenizer_files_are_written_once_by_prepare_only(tmp_path, monkeypatch):
    source = clip_tokens.vocabulary_source().resolve()
    monkeypatch.setenv("REZCTY_EMBEDDED_DIR", str(tmp_path))
    raw = tmp_path / "raw" / "open_clip"
    raw.mkdir(parents=True)
    (raw / "bpe_simple_vocab_16e6.txt.gz").symlink_to(source)
    with pytest.raises(FileNotFoundError, match="rezcty_core.embedded prepare .*--only clip-bpe"):
        clip_tokens.tokenizer_dir()  # a loader never converts
    assert not (tmp_path / "clip_tokenizer").exists()
    clip_tokens.prepare_embedded(tmp_path)
    folder = clip_tokens.tokenizer_dir()
    assert folder == tmp_path / "clip_tokenizer"
    mtime = (folder / "vocab.json").stat().st_mtime_ns
    clip_tokens.prepare_embedded(tmp_path)
    assert (folder / "vocab.json").stat().st_mtime_ns == mtime
    assert not list(folder.glob("*.tmp*"))


def test_missing_vocabulary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("REZCTY_EMBEDDED_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="bpe_simple_vocab_16e6.*prepare"):
        clip_tokens.vocabulary_source()
