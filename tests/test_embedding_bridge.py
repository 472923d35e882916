"""Embedding Bridge through the real ComfyUI server with the tiny SD 1.5 checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
from fixtures import lora_files
from PIL import Image

from harness import link_model, sd15_graph

NODE = "RezctyEmbeddingBridge"
TEXT = "a red cube on a table"


@pytest.fixture(scope="module")
def embeddings(comfy, tmp_path_factory) -> dict[str, str]:
    """Embeddings of each format, visible in the server's models/embeddings/."""
    d = tmp_path_factory.mktemp("embeddings")
    files = {
        "genius": lora_files.write_a1111_safetensors(d / "rezcty_genius.safetensors"),
        "a1111_pt": lora_files.write_a1111_pt(d / "genius_pt.pt", n=4),
        "diffusers": lora_files.write_diffusers_bin(d / "learned_embeds.bin"),
        "sdxl": lora_files.write_sdxl_embedding(d / "genius_xl.safetensors"),
        "sd2": lora_files.write_a1111_pt(d / "genius_sd2.pt", width=1024),
        "clash": lora_files.write_a1111_safetensors(d / "clashing.safetensors", trigger="rezcty_style"),
        "mystyle": lora_files.write_a1111_safetensors(d / "mystyle_emb.safetensors", trigger="mystyle"),
    }
    return {k: link_model(comfy, "embeddings", p) for k, p in files.items()}


def bridge_graph(ckpt: str, prefix: str, embedding: str, weight: float, text: str = TEXT,
                 render: bool = True, clip=("1", 1)) -> dict:
    g = sd15_graph(ckpt, text=text, prefix=prefix)
    g["20"] = {"class_type": NODE, "inputs": {"clip": list(clip), "text": text, "embedding": embedding,
                                              "weight": weight}}
    g["21"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 1]}}
    if not render:
        return {k: g[k] for k in ("1", "20", "21")}
    g["5"]["inputs"]["positive"] = ["20", 0]
    return g


def pixels(comfy, result) -> np.ndarray:
    (item,) = result.ui("7")["images"]
    with Image.open(comfy.output_file(item)) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def test_schema_matches_contract(comfy, embeddings):
    info = comfy.object_info(NODE)[NODE]
    req = info["input"]["required"]
    assert list(req) == ["clip", "text", "embedding", "weight"]
    assert req["text"][1].get("multiline") is True
    assert req["weight"][1]["default"] == 0.3
    assert "0.2–0.4" in req["weight"][1]["tooltip"]
    assert embeddings["genius"] in str(req["embedding"])
    options = req["embedding"][1]["options"] if req["embedding"][0] == "COMBO" else req["embedding"][0]
    assert options[0] == "none" and req["embedding"][1].get("default") == embeddings["genius"]
    assert info["output"] == ["CONDITIONING", "STRING"]


def test_weight_zero_is_no_embedding_and_weight_0_3_changes_the_render(comfy, tiny_sd15, embeddings):
    plain = pixels(comfy, comfy.run(sd15_graph(tiny_sd15, text=TEXT, prefix="emb_plain")))
    res0 = comfy.run(bridge_graph(tiny_sd15, "emb_w0", embeddings["genius"], 0.0))
    assert np.array_equal(plain, pixels(comfy, res0))
    assert res0.text("21") == [TEXT]

    # the trigger named in the prompt is where the embedding goes; at weight 0 it is dropped
    res0t = comfy.run(bridge_graph(tiny_sd15, "emb_w0t", embeddings["genius"], 0.0, text=f"{TEXT}, rezcty_genius",
                                   render=False))
    assert res0t.text("21") == [TEXT]  # the very text the plain render encoded

    res = comfy.run(bridge_graph(tiny_sd15, "emb_w03", embeddings["genius"], 0.3))
    gentle = pixels(comfy, res)
    diff = np.abs(gentle - plain)
    assert (diff > 0).mean() > 0.01, (diff.max(), (diff > 0).mean())
    assert res.text("21") == [f"{TEXT}, embedding:{embeddings['genius']}"]
    assert "rezcty_genius (8 vectors, a1111_safetensors) appended at weight 0.3" in "\n".join(res.text("20"))

    # full weight is ComfyUI's own `embedding:` syntax in a plain CLIPTextEncode
    full = pixels(comfy, comfy.run(bridge_graph(tiny_sd15, "emb_w1", embeddings["genius"], 1.0)))
    native = pixels(comfy, comfy.run(sd15_graph(tiny_sd15, text=f"{TEXT}, embedding:{embeddings['genius']}",
                                                prefix="emb_native")))
    assert np.array_equal(full, native)
    # 0.3 is a gentler move than 1.0
    assert np.abs(full - plain).sum() > diff.sum()


def test_none_encodes_the_plain_prompt(comfy, tiny_sd15, embeddings):
    """A line 2 before rezcty_genius exists: `none` renders exactly what CLIPTextEncode renders."""
    plain = pixels(comfy, comfy.run(sd15_graph(tiny_sd15, text=TEXT, prefix="emb_none_plain")))
    res = comfy.run(bridge_graph(tiny_sd15, "emb_none", "none", 0.3))
    assert np.array_equal(plain, pixels(comfy, res))
    assert res.text("21") == [TEXT]
    assert "no embedding (none)" in "\n".join(res.text("20"))


def test_every_embedding_format_is_read(comfy, tiny_sd15, embeddings):
    cases = [("a1111_pt", "genius_pt (4 vectors, a1111) appended at weight 1"),
             ("diffusers", "<rezcty-genius> (1 vectors, diffusers) 1× in the prompt at weight 1"),
             ("sdxl", "genius_xl (4 vectors, sdxl)")]
    for key, expected in cases:
        text = "a castle, <rezcty-genius>" if key == "diffusers" else "a castle"
        res = comfy.run(bridge_graph(tiny_sd15, key, embeddings[key], 1.0, text=text, render=False))
        assert expected in "\n".join(res.text("20")), res.text("20")
        assert res.text("21") == [f"a castle, embedding:{embeddings[key]}"]
    # another embedding named in the prompt stays as it is, in both blended texts
    other = f"a castle, embedding:{embeddings['a1111_pt']}"
    res = comfy.run(bridge_graph(tiny_sd15, "other", embeddings["sdxl"], 1.0, text=other, render=False))
    assert res.text("21") == [f"{other}, embedding:{embeddings['sdxl']}"]


def test_a_1024_wide_embedding_fails_naming_both_sizes(comfy, tiny_sd15, embeddings):
    err = comfy.run_error(bridge_graph(tiny_sd15, "sd2", embeddings["sd2"], 0.3, render=False))
    assert f"embedding '{embeddings['sd2']}' has vectors 1024 wide, but this CLIP text encoder expects 768" in err


def test_embedding_trigger_equal_to_a_lora_trigger_is_warned(comfy, tiny_sd15, embeddings, tmp_path):
    res = comfy.run(bridge_graph(tiny_sd15, "clash", embeddings["clash"], 1.0, render=False))
    assert "WARNING embedding trigger 'rezcty_style' is also a LoRA trigger" in "\n".join(res.text("20"))
    res = comfy.run(bridge_graph(tiny_sd15, "noclash", embeddings["genius"], 1.0, render=False))
    assert "WARNING" not in "\n".join(res.text("20"))

    # the triggers of the LoRAs applied by the Dual LoRA Loader travel with its CLIP
    lora = link_model(comfy, "loras", lora_files.write_kohya_lora(
        tmp_path / "mystyle_lora.safetensors", text_encoder=False, metadata={"rezcty_trigger": "mystyle"}))
    g = bridge_graph(tiny_sd15, "clash2", embeddings["mystyle"], 1.0, render=False, clip=("10", 1))
    g["10"] = {"class_type": "RezctyDualLoraLoader", "inputs": {
        "model": ["1", 0], "clip": ["1", 1], "style_lora": lora, "style_strength_model": 0.8,
        "style_strength_clip": 0.8, "structure_lora": "none", "structure_strength_model": 0.55,
        "structure_strength_clip": 0.55}}
    res = comfy.run(g)
    assert "WARNING embedding trigger 'mystyle' is also a LoRA trigger" in "\n".join(res.text("20"))


def test_weight_outside_brief_range_is_noted(comfy, tiny_sd15, embeddings):
    res = comfy.run(bridge_graph(tiny_sd15, "w08", embeddings["genius"], 0.8, render=False))
    assert "weight 0.8 is outside the brief's range 0.2–0.4" in "\n".join(res.text("20"))
