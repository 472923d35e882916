"""Dual LoRA Loader through the real ComfyUI server with the tiny SD 1.5 checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import lora_files
from PIL import Image

from harness import link_model, sd15_graph

NODE = "RezctyDualLoraLoader"


@pytest.fixture(scope="module")
def loras(comfy, tmp_path_factory) -> dict[str, str]:
    """LoRA files of each layout, visible in the server's models/loras/."""
    d = tmp_path_factory.mktemp("loras")
    files = {
        "rezcty": lora_files.write_kohya_lora(d / "rz_style.safetensors", seed=10, metadata={
            "rezcty_trigger": "rezcty_style", "rezcty_role": "style"}),
        "kohya": lora_files.write_kohya_lora(d / "kohya_structure.safetensors", seed=11, metadata={
            "ss_output_name": "kohya_structure",
            "ss_tag_frequency": json.dumps({"10_rezcty_structure": {
                "rezcty_structure": 24, "a valley": 3, "a bridge over a river": 2}})}),
        "diffusers": lora_files.write_diffusers_lora(d / "diffusers_style.safetensors"),
        "sdxl": lora_files.write_sdxl_lora(d / "sdxl_style.safetensors"),
        "dup": lora_files.write_kohya_lora(d / "also_style.safetensors", seed=12, text_encoder=False,
                                           metadata={"rezcty_trigger": "rezcty_style", "rezcty_role": "structure"}),
    }
    (d / "diffusers_style.txt").write_text("# trigger words for this LoRA\nmy_dreamy, rezcty_style\n")
    return {k: link_model(comfy, "loras", p) for k, p in files.items()}


def lora_graph(ckpt: str, prefix: str, style="none", structure="none", style_s=(0.85, 0.85),
               structure_s=(0.55, 0.55), render: bool = True) -> dict:
    g = sd15_graph(ckpt, prefix=prefix)
    g["10"] = {"class_type": NODE, "inputs": {
        "model": ["1", 0], "clip": ["1", 1],
        "style_lora": style, "style_strength_model": style_s[0], "style_strength_clip": style_s[1],
        "structure_lora": structure, "structure_strength_model": structure_s[0],
        "structure_strength_clip": structure_s[1]}}
    g["11"] = {"class_type": "PreviewAny", "inputs": {"source": ["10", 2]}}
    if not render:
        return {k: g[k] for k in ("1", "10", "11")}
    g["2"]["inputs"]["clip"] = ["10", 1]  # the empty negative stays on the checkpoint's CLIP (cfg 1 ignores it)
    g["5"]["inputs"]["model"] = ["10", 0]
    return g


def pixels(comfy, result) -> np.ndarray:
    (item,) = result.ui("7")["images"]
    with Image.open(comfy.output_file(item)) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def node_text(result) -> str:
    return "\n".join(result.text("10"))


def test_schema_matches_contract(comfy, loras):
    info = comfy.object_info(NODE)[NODE]
    req = info["input"]["required"]
    assert list(req) == ["model", "clip", "style_lora", "style_strength_model", "style_strength_clip",
                         "structure_lora", "structure_strength_model", "structure_strength_clip"]
    assert req["style_strength_model"][1]["default"] == 0.85 and req["style_strength_clip"][1]["default"] == 0.85
    assert req["structure_strength_model"][1]["default"] == 0.55
    assert req["structure_strength_clip"][1]["default"] == 0.55
    assert "0.7–1" in req["style_strength_model"][1]["tooltip"]
    assert "0.4–0.7" in req["structure_strength_clip"][1]["tooltip"]
    # the combo lists models/loras plus "none" (re-read on every /object_info)
    options = json.dumps(req["style_lora"])
    assert "none" in options and loras["kohya"] in options and loras["sdxl"] in options
    assert info["output"] == ["MODEL", "CLIP", "STRING"]
    assert info["category"].startswith("rezcty")


def test_strength_zero_and_none_render_like_no_lora_and_strength_one_changes_it(comfy, tiny_sd15, loras):
    plain = pixels(comfy, comfy.run(sd15_graph(tiny_sd15, prefix="lora_plain")))
    none = pixels(comfy, comfy.run(lora_graph(tiny_sd15, "lora_none")))
    zero = pixels(comfy, comfy.run(lora_graph(tiny_sd15, "lora_zero", style=loras["rezcty"], structure=loras["kohya"],
                                              style_s=(0.0, 0.0), structure_s=(0.0, 0.0))))
    assert np.array_equal(plain, none)
    assert np.array_equal(plain, zero)

    res = comfy.run(lora_graph(tiny_sd15, "lora_one", style=loras["rezcty"], style_s=(1.0, 1.0)))
    one = pixels(comfy, res)
    changed = np.abs(one - plain)
    assert changed.max() >= 2 and (changed > 0).mean() > 0.1, (changed.max(), (changed > 0).mean())
    assert "WARNING" not in node_text(res)  # every key of this LoRA fits the tiny SD 1.5


def test_model_and_clip_strengths_act_separately_and_diffusers_layout_loads(comfy, tiny_sd15, loras):
    plain = pixels(comfy, comfy.run(sd15_graph(tiny_sd15, prefix="lora_plain2")))
    clip_only = pixels(comfy, comfy.run(lora_graph(tiny_sd15, "lora_cliponly", structure=loras["kohya"],
                                                   structure_s=(0.0, 1.0))))
    g = lora_graph(tiny_sd15, "lora_modelonly", structure=loras["kohya"], structure_s=(1.0, 0.0))
    g["2"]["inputs"]["clip"] = ["1", 1]  # the CLIP is untouched at strength 0: reuse the cached plain encoding
    model_only = pixels(comfy, comfy.run(g))
    assert not np.array_equal(plain, clip_only)
    assert not np.array_equal(plain, model_only)
    assert not np.array_equal(clip_only, model_only)

    res = comfy.run(lora_graph(tiny_sd15, "lora_diffusers", style=loras["diffusers"], style_s=(1.0, 1.0)))
    assert not np.array_equal(plain, pixels(comfy, res))
    assert "WARNING" not in node_text(res)


def test_trigger_words_come_from_file_metadata_style_first(comfy, tiny_sd15, loras):
    # structure: kohya ss_tag_frequency; style: the project's own rezcty_trigger key
    res = comfy.run(lora_graph(tiny_sd15, "t1", style=loras["rezcty"], structure=loras["kohya"], render=False))
    assert res.text("11") == ["rezcty_style, rezcty_structure"]
    assert "from rezcty_trigger" in node_text(res) and "from ss_tag_frequency" in node_text(res)

    # order follows the slots, not the files; duplicates collapse; a sidecar .txt is read
    res = comfy.run(lora_graph(tiny_sd15, "t2", style=loras["diffusers"], structure=loras["rezcty"], render=False))
    assert res.text("11") == ["my_dreamy, rezcty_style"]
    assert "from sidecar" in node_text(res)

    # a LoRA that is off contributes no trigger; the role in the metadata is checked against the slot
    res = comfy.run(lora_graph(tiny_sd15, "t3", style=loras["kohya"], structure=loras["dup"],
                               style_s=(0.0, 0.0), structure_s=(0.5, 0.5), render=False))
    assert res.text("11") == ["rezcty_style"]
    assert f"style LoRA '{loras['kohya']}' is off" in node_text(res)
    res = comfy.run(lora_graph(tiny_sd15, "t4", style=loras["dup"], style_s=(0.8, 0.8), render=False))
    assert "metadata says it is a structure LoRA" in node_text(res)


def test_strength_outside_brief_range_is_allowed_but_noted(comfy, tiny_sd15, loras):
    res = comfy.run(lora_graph(tiny_sd15, "r1", style=loras["rezcty"], structure=loras["kohya"],
                               style_s=(1.4, 0.9), structure_s=(0.5, 0.2), render=False))
    text = node_text(res)
    assert "style model strength 1.4 is outside the brief's range 0.7–1" in text
    assert "structure clip strength 0.2 is outside the brief's range 0.4–0.7" in text
    assert "style clip" not in text and "structure model" not in text
    res = comfy.run(lora_graph(tiny_sd15, "r2", style=loras["rezcty"], structure=loras["kohya"], render=False))
    assert "outside" not in node_text(res)


def test_sdxl_lora_on_sd15_warns_on_the_node_with_the_count(comfy, tiny_sd15, loras):
    from safetensors import safe_open

    path = comfy.models_dir / "loras" / loras["sdxl"]
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    # of the SDXL blocks only middle_block_1 / output_blocks_0_1 transformer 0 have names in the tiny
    # SD 1.5 (10 linears x 3 keys each); their 1280-wide shapes do not fit its 320-wide layers
    same_name = [k for k in keys if "_transformer_blocks_0_" in k and
                 ("middle_block_1_" in k or "output_blocks_0_1_" in k)]
    assert len(same_name) == 60

    res = comfy.run(lora_graph(tiny_sd15, "lora_sdxl", style=loras["sdxl"], style_s=(1.0, 1.0), render=False))
    text = node_text(res)
    assert f"WARNING style LoRA '{loras['sdxl']}': {len(keys) - 60} of {len(keys)} keys match no layer" in text
    assert "20 layers have the wrong shape" in text
    assert "SDXL on SD 1.5" in text
    # kohya metadata still names its trigger
    assert res.text("11") == ["sdxlstyle"]
