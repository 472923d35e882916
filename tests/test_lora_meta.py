"""rezcty_core.sd.lora_meta and rezcty_core.sd.ti_embedding on their own (no server)."""
from __future__ import annotations

import json

import pytest
import torch
from fixtures import lora_files

from rezcty_core.sd import lora_meta, ti_embedding
from rezcty_core.sd.ti_embedding import EmbeddingError, blend, bridge_texts, load_ti_embedding


def test_trigger_from_rezcty_key_wins_over_sidecar_and_kohya(tmp_path):
    p = lora_files.write_kohya_lora(tmp_path / "a.safetensors", text_encoder=False, metadata={
        "rezcty_trigger": "rezcty_style", "rezcty_role": "style", "ss_output_name": "other"})
    (tmp_path / "a.txt").write_text("sidecar_word")
    info = lora_meta.lora_triggers(p)
    assert (info.words, info.source, info.role) == (["rezcty_style"], "rezcty_trigger", "style")


def test_trigger_from_sidecar_then_kohya_sources(tmp_path):
    p = lora_files.write_kohya_lora(tmp_path / "b.safetensors", text_encoder=False, metadata={
        "ss_output_name": "b_out", "ss_tag_frequency": json.dumps({"3_tok cls": {"x": 1, "y": 1}})})
    (tmp_path / "b.txt").write_text("# comment\nfoo, bar\nfoo\n")
    assert lora_meta.lora_triggers(p).words == ["foo", "bar"]
    (tmp_path / "b.txt").unlink()
    # one caption per folder: tag counts say nothing, the folder name's instance token does
    info = lora_meta.lora_triggers(p)
    assert (info.words, info.source) == (["tok"], "ss_dataset_dir")
    assert lora_meta.kohya_triggers({"ss_output_name": "zz"}) == (["zz"], "ss_output_name")
    assert lora_meta.kohya_triggers({}) == ([], "none")
    freq = {"10_a": {"rezcty_style": 40, "a tree": 3}, "5_b": {"rezcty_style": 9, "sky": 2, "other": 9}}
    assert lora_meta.kohya_triggers({"ss_tag_frequency": json.dumps(freq)}) == (
        ["rezcty_style", "other"], "ss_tag_frequency")


def test_non_safetensors_lora_uses_sidecar(tmp_path):
    p = tmp_path / "old.pt"
    torch.save({"x": torch.zeros(1)}, str(p))
    assert lora_meta.lora_triggers(p).words == []
    (tmp_path / "old.txt").write_text("oldword")
    assert lora_meta.lora_triggers(p).words == ["oldword"]


def test_dedupe_keeps_first_and_order():
    assert lora_meta.dedupe(["a", "B", "b", " a ", "c"]) == ["a", "B", "c"]


def test_strength_notes_follow_the_brief():
    assert lora_meta.strength_note("style", "model", 0.85) is None
    assert lora_meta.strength_note("style", "model", 0.0) is None
    assert "0.7–1" in lora_meta.strength_note("style", "clip", 1.2)
    assert lora_meta.strength_note("structure", "model", 0.4) is None
    assert "0.4–0.7" in lora_meta.strength_note("structure", "model", 0.9)


def test_unmatched_keys_by_module_prefix():
    keys = ["m1.lora_down.weight", "m1.lora_up.weight", "m1.alpha", "unet.x.processor.to_q_lora.down.weight",
            "zz.lora_A.weight", "zz.lora_B.weight"]
    assert lora_meta.unmatched_keys(keys, ["m1", "unet.x.processor.to_q"]) == ["zz.lora_A.weight", "zz.lora_B.weight"]
    assert lora_meta.unmatched_warning("style", "f", 0, 6) is None
    w = lora_meta.unmatched_warning("style", "f", 5, 6)
    assert "5 of 6 keys match no layer" in w and "SDXL" in w
    few = lora_meta.unmatched_warning("structure", "f", 1, 600)
    assert "1 of 600 keys" in few and "SDXL" not in few
    assert "3 layers have the wrong shape" in lora_meta.unmatched_warning("style", "f", 0, 600, shape_mismatch=3)


@pytest.mark.parametrize("writer, fmt, n", [
    (lambda p: lora_files.write_a1111_pt(p / "e.pt", n=3), "a1111", 3),
    (lambda p: lora_files.write_a1111_safetensors(p / "e.safetensors", n=2), "a1111_safetensors", 2),
    (lambda p: lora_files.write_diffusers_bin(p / "learned_embeds.bin"), "diffusers", 1),
    (lambda p: lora_files.write_sdxl_embedding(p / "e.safetensors", n=2), "sdxl", 2),
])
def test_embedding_formats(tmp_path, writer, fmt, n):
    emb = load_ti_embedding(writer(tmp_path), expected_width=768)
    assert (emb.file_format, emb.n_vectors, emb.width) == (fmt, n, 768)
    assert emb.vectors.dtype == torch.float32


def test_embedding_trigger_names(tmp_path):
    assert load_ti_embedding(lora_files.write_a1111_safetensors(tmp_path / "x.safetensors")).trigger == "rezcty_genius"
    assert load_ti_embedding(lora_files.write_a1111_safetensors(tmp_path / "y.safetensors", trigger=None)).trigger == "y"
    d = load_ti_embedding(lora_files.write_diffusers_bin(tmp_path / "learned_embeds.bin"))
    assert d.trigger == "<rezcty-genius>" and "rezcty-genius" in d.aliases


def test_embedding_width_mismatch_names_both_sizes(tmp_path):
    p = lora_files.write_a1111_pt(tmp_path / "sd2.pt", width=1024)
    with pytest.raises(EmbeddingError, match="'sd2.pt' has vectors 1024 wide, but this CLIP text encoder expects 768"):
        load_ti_embedding(p, expected_width=768)
    assert load_ti_embedding(p).width == 1024


def test_bad_embedding_files_give_clear_errors(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(EmbeddingError, match="junk.safetensors"):
        load_ti_embedding(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(2, 768), "b": torch.zeros(2, 768)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(EmbeddingError, match="unknown layout"):
        load_ti_embedding(tmp_path / "two.safetensors")
    with pytest.raises(EmbeddingError, match="not found"):
        load_ti_embedding(tmp_path / "missing.pt")


def test_bridge_texts_places_and_removes_the_trigger():
    al, ref = ["rezcty_genius", "rezcty_genius.safetensors"], "embedding:rezcty_genius.safetensors"
    assert bridge_texts("a cube", al, ref) == ("a cube", f"a cube, {ref}", 0)
    assert bridge_texts("a, rezcty_genius, b", al, ref) == ("a, b", f"a, {ref}, b", 1)
    assert bridge_texts("rezcty_genius, a", al, ref) == ("a", f"{ref}, a", 1)
    assert bridge_texts("a (rezcty_genius:1.2), b", al, ref) == ("a, b", f"a ({ref}:1.2), b", 1)
    assert bridge_texts(f"x {ref} y", al, ref) == ("x y", f"x {ref} y", 1)
    assert bridge_texts("my_rezcty_genius_x", al, ref)[2] == 0
    assert bridge_texts("", al, ref) == ("", ref, 0)


def test_blend_endpoints_are_exact_and_lengths_are_padded():
    a, b = torch.randn(1, 77, 8), torch.randn(1, 77, 8)
    assert blend(a, b, 0.0) is a and blend(a, b, 1.0) is b
    assert torch.allclose(blend(a, b, 0.3), 0.7 * a + 0.3 * b, atol=1e-6)
    long = torch.randn(1, 154, 8)
    c = blend(a, long, 0.5)
    assert c.shape == (1, 154, 8)
    assert torch.allclose(c[:, :77], 0.5 * (a + long[:, :77]), atol=1e-6)
    assert torch.allclose(c[:, 77:], 0.5 * long[:, 77:], atol=1e-6)  # the missing chunk counts as zeros
    assert ti_embedding.weight_note(0.3) is None and "0.2–0.4" in ti_embedding.weight_note(0.5)
    assert ti_embedding.trigger_clash("rezcty_genius", ["rezcty_style"]) is None
    assert "also a LoRA trigger" in ti_embedding.trigger_clash("Rezcty_Style", ["rezcty_style"])


def test_sidecar_next_to_the_real_file_of_a_linked_lora(tmp_path):
    real = lora_files.write_kohya_lora(tmp_path / "real" / "c.safetensors", text_encoder=False)
    (tmp_path / "real" / "c.txt").write_text("cword")
    (tmp_path / "loras").mkdir()
    link = tmp_path / "loras" / "c.safetensors"
    link.symlink_to(real)
    assert lora_meta.lora_triggers(link).words == ["cword"]
