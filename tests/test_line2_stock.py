"""Line 2 as stock practice: aspect presets, the detail pass, the exact stock size and reproducible blueprints.

Everything runs the shipped line-2 API workflow on the real server with the tiny SD 1.5 checkpoint. CPU time:
the first pass runs at the preset's base size scaled by 1/8 (`Stock Size.base_scale`, the node input meant for
drafts) and the upscale uses the embedded anime Real-ESRGAN (6 blocks); the final size is the real stock size.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import REPO, link_model
from rezcty_core.client import main as client_main
from rezcty_core.factory import blueprint
from rezcty_core.factory.api import ComfyClient
from rezcty_core.factory.batch import items_from_prompts, write_prompts_json
from rezcty_core.factory.workflow import load_workflow, set_input
from rezcty_core.sd import presets

LINE2 = REPO / "workflows" / "api" / "line2_generation.json"
FAST_UPSCALER = "RealESRGAN_x4plus_anime.safetensors"
DRAFT = 0.125  # base_scale: 512 px -> 64 px first pass


@pytest.fixture(scope="module")
def line2_models(comfy, tiny_sd15, tmp_path_factory) -> dict:
    """The tiny checkpoint, a real one-vector TI embedding, and the embedded upscaler in the loader's list."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("line2-models")
    emb = folder / "rezcty_genius.safetensors"
    save_file({"emb_params": torch.randn(1, 768, generator=torch.Generator().manual_seed(0)) * 0.01}, str(emb))
    info = comfy.object_info("UpscaleModelLoader")["UpscaleModelLoader"]
    listed = info["input"]["required"]["model_name"][1]["options"]
    assert FAST_UPSCALER in listed and "RealESRGAN_x4plus.safetensors" in listed, listed
    return {"ckpt": tiny_sd15, "embedding": link_model(comfy, "embeddings", emb)}


def draft_sets(models: dict) -> list[str]:
    """`--set` values that make line 2 cheap on a CPU without touching the final stock size."""
    return [f"1.ckpt_name={models['ckpt']}", f"3.embedding={models['embedding']}", "6.steps=1", "13.steps=1",
            f"11.base_scale={DRAFT}", f"14.model_name={FAST_UPSCALER}"]


def draft_graph(models: dict, preset: str) -> dict:
    graph = load_workflow(LINE2)
    for item in draft_sets(models):
        target, _, value = item.partition("=")
        set_input(graph, target, value, parse=True)
    set_input(graph, "11.preset", preset)
    return graph


# ---------------------------------------------------------------------------------------------
# the presets (data)

def test_presets_are_sd15_native_and_reach_the_stock_size_exactly():
    assert {"1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16"} <= set(presets.NAMES)
    for p in presets.PRESETS.values():
        bw, bh = p.base
        assert bw % 64 == 0 and bh % 64 == 0, p
        assert 0.25e6 <= bw * bh <= 0.4e6, p
        aw, ah = (int(v) for v in p.name.split(":"))
        tw, th = p.target
        assert tw * ah == th * aw, f"{p.name}: target {tw}x{th} is not exactly {p.name}"
        assert tw * th >= presets.MIN_STOCK_PIXELS and tw % 2 == 0 and th % 2 == 0, p
        # the smallest such size: every smaller even-sided size of that aspect is under 4 MP
        g = math.gcd(aw, ah)
        sw, sh = aw // g, ah // g
        smaller = [(sw * k, sh * k) for k in range(1, tw // sw) if (sw * k) % 2 == 0 and (sh * k) % 2 == 0]
        assert smaller and all(w * h < presets.MIN_STOCK_PIXELS for w, h in smaller), p
        # the base keeps the aspect within the nearest 64-px grid step
        assert abs(bw / bh - aw / ah) <= 64 / min(bw, bh), p
    assert presets.get_preset("3x2") is presets.get_preset(" 3:2 ") is presets.PRESETS["3:2"]
    assert presets.PRESETS["3:2"].base_size(DRAFT) == (96, 64)


def test_unknown_preset_is_refused_with_the_allowed_values(comfy):
    with pytest.raises(ValueError, match=r"unknown aspect preset '5:7'; allowed: 1:1, 3:2, 2:3"):
        presets.get_preset("5:7")
    info = comfy.object_info("RezctyStockSize")["RezctyStockSize"]
    assert info["category"].startswith("rezcty/")
    spec = info["input"]["required"]
    assert spec["preset"][1]["options"] == list(presets.NAMES) and spec["preset"][1]["tooltip"]
    assert spec["base_scale"][1]["tooltip"] and all(o for o in info["output_tooltips"])
    assert info["output"] == ["INT", "INT", "INT", "INT", "STRING"]
    err = comfy.run_error({"1": {"class_type": "RezctyStockSize", "inputs": {"preset": "5:7", "base_scale": 1.0}},
                           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 4]}}})
    assert "5:7" in err and all(name in err for name in presets.NAMES), err


# ---------------------------------------------------------------------------------------------
# the shipped workflow, every preset

def test_line2_workflow_gives_the_exact_stock_size_for_every_preset(comfy, line2_models, tmp_path):
    """Every preset through the shipped workflow (detail pass at x1 here: the upscaler's CPU time is most of
    the test); the 4:3 run also goes through line 3's Metadata Writer, whose record names the upscaler."""
    from rezcty_core.stock.provenance import file_sha256

    client = ComfyClient(comfy.url)
    sizes = {}
    for name in presets.PRESETS:
        graph = draft_graph(line2_models, name)
        set_input(graph, "12.scale_by", 1.0)
        if name == "4:3":
            graph["90"] = {"class_type": "RezctyMetadataWriter", "inputs": {
                "images": ["8", 0], "prompt": "a red barn in a field", "filename_prefix": "line2/barn",
                "csv_name": "line2_stock.csv", "category": "auto"}}
        result = client.run(graph, tmp_path / name.replace(":", "x"))
        [png] = [f for f in result.files if f.suffix == ".png"]
        with Image.open(png) as im:
            sizes[name] = im.size
            assert im.mode == "RGB"  # JPEG-ready: line 3's Metadata Writer writes the JPEG
        if name == "4:3":
            [jpeg] = [f for f in result.files if f.suffix == ".jpg"]
            with Image.open(jpeg) as im:
                assert im.format == "JPEG" and im.size == presets.PRESETS["4:3"].target
            [written] = result.outputs["90"]["images"]
            saved = comfy.output_dir / written["subfolder"] / written["filename"]
            ups = json.loads(saved.with_suffix(".json").read_text())["reproducibility"]["upscaler"]
            assert ups["name"] == FAST_UPSCALER
            # the file the loader read: the embedded one (any base directory) or one in models/upscale_models/
            roots = [Path(os.environ.get("REZCTY_EMBEDDED_DIR", REPO / ".comfyui" / "embedded")), comfy.models_dir]
            [found, *_] = [f for root in roots for f in root.rglob(FAST_UPSCALER)]
            assert ups["sha256"] == file_sha256(found)
    assert sizes == {name: p.target for name, p in presets.PRESETS.items()}
    assert all(w * h >= 4_000_000 for w, h in sizes.values())


def test_line2_detail_pass_and_upscale_are_in_the_shipped_graphs():
    for name in ("line2_generation", "line2_generation_vae", "all_in_one"):
        graph = load_workflow(REPO / "workflows" / "api" / f"{name}.json")
        by_class = {}
        for node_id, node in graph.items():
            by_class.setdefault(node["class_type"], []).append(node_id)
        first, detail = sorted(by_class["KSampler"], key=int)
        up = graph[by_class["LatentUpscaleBy"][0]]["inputs"]
        assert 1.5 <= up["scale_by"] <= 2.0 and up["samples"] == [first, 0]
        d = graph[detail]["inputs"]
        assert d["latent_image"] == [by_class["LatentUpscaleBy"][0], 0] and 0.2 <= d["denoise"] <= 0.6
        for key in ("positive", "negative", "model"):
            assert d[key] == graph[first]["inputs"][key], f"{name}: detail pass {key} differs"
        assert graph[by_class["UpscaleModelLoader"][0]]["inputs"]["model_name"] == "RealESRGAN_x4plus.safetensors"
        exact = graph[by_class["ImageScale"][0]]["inputs"]
        size_node = by_class["RezctyStockSize"][0]
        assert exact["width"] == [size_node, 2] and exact["height"] == [size_node, 3]
        assert exact["image"] == [by_class["ImageUpscaleWithModel"][0], 0]


# ---------------------------------------------------------------------------------------------
# blueprints

def test_prompts_json_records_n_distinct_seeds_and_the_line2_settings(tmp_path):
    graph = load_workflow(LINE2)
    set_input(graph, "2.style_lora", "mystyle.safetensors")
    defaults = blueprint.defaults_from_graph(graph)
    results = [{"status": "done", "idea": "a knight", "texts": {"3": ["a knight in armour, rezcty_style"]}},
               {"status": "failed", "idea": "lost", "texts": {}}]
    rows = write_prompts_json(results, "3", tmp_path / "prompts.json", defaults, variations=3, base_seed=7, preset="16x9")
    [row] = json.loads((tmp_path / "prompts.json").read_text())
    assert row == rows[0]
    assert len(set(row["seeds"])) == 3 and row["preset"] == "16:9" and row["upscaler"] == "RealESRGAN_x4plus.safetensors"
    assert row["loras"] == [{"name": "mystyle.safetensors", "strength_model": 0.85, "strength_clip": 0.85}]
    assert row["embedding"] == {"name": "rezcty_genius.safetensors", "weight": 0.3} and row["vae"] is None
    assert row["negative"].startswith("blurry") and row["checkpoint"] == "v1-5-pruned-emaonly.safetensors"
    again = write_prompts_json(results, "3", tmp_path / "again.json", defaults, variations=3, base_seed=7)
    assert again[0]["seeds"] == row["seeds"]  # recorded, and the same on a re-run
    items = items_from_prompts(tmp_path / "prompts.json", "3.text", {}, load_workflow(LINE2), log=lambda m: None)
    assert [(i.values["6.seed"], i.values["13.seed"]) for i in items] == [(s, s) for s in row["seeds"]]
    assert all(i.values["11.preset"] == "16:9" and i.values["2.style_lora"] == "mystyle.safetensors" for i in items)
    assert len({i.key for i in items}) == 3


def _batch(url: str, models: dict, prompts: list, out, capsys) -> tuple[list[dict], str]:
    """`python -m rezcty_core.client batch line2_generation.json --prompts FILE` in-process; (results, stderr)."""
    prompts_file = out.parent / f"{out.name}.json"
    prompts_file.write_text(json.dumps(prompts), encoding="utf-8")
    sets = [a for s in draft_sets(models) for a in ("--set", s)]
    code = client_main(["batch", str(LINE2), "--server", url, "--prompts", str(prompts_file), "--out", str(out),
                        "--quiet", *sets])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads((out / "results.json").read_text()), captured.err


def _pixels(out, row: dict) -> np.ndarray:
    [f] = row["files"]
    with Image.open(out / f) as im:
        return np.asarray(im.convert("RGB"))


def test_blueprint_renders_the_same_pixels_twice_and_n_variations_differ(comfy, line2_models, tmp_path, capsys):
    entry = {"idea": "a lighthouse", "prompt": "a lighthouse in a storm, rezcty_style", "seeds": [11, 12],
             "preset": "3:2", "negative": "blurry, text", "upscaler": FAST_UPSCALER,
             "embedding": {"name": line2_models["embedding"], "weight": 0.3}}
    rows, _ = _batch(comfy.url, line2_models, [entry], tmp_path / "first", capsys)
    assert [r["status"] for r in rows] == ["done"] * 2 and [r["seed"] for r in rows] == [11, 12]
    images = [_pixels(tmp_path / "first", r) for r in rows]
    assert all(im.shape == (1636, 2454, 3) for im in images)
    assert not np.array_equal(images[0], images[1])
    # line 2 writes back what it rendered: a prompts.json that renders the same images again
    recorded = json.loads((tmp_path / "first" / "blueprints.json").read_text())
    assert [r["seeds"] for r in recorded] == [[11], [12]]
    assert all(r["preset"] == "3:2" and r["negative"] == "blurry, text" and r["upscaler"] == FAST_UPSCALER
               and r["checkpoint"] == line2_models["ckpt"] for r in recorded)
    comfy.free()  # nothing cached: the second render computes every pixel again
    again, _ = _batch(comfy.url, line2_models, recorded[:1], tmp_path / "again", capsys)
    assert again[0]["status"] == "done"
    assert np.array_equal(_pixels(tmp_path / "again", again[0]), images[0])


def test_mixed_prompts_file_runs_with_the_defaults_logged(comfy, line2_models, tmp_path, capsys):
    prompts = ["an old-style entry: just the prompt text",
               {"prompt": "a red barn in a field", "seeds": [5], "preset": "9:16"},
               {"prompt": "a malformed entry", "seeds": "five"}]
    rows, err = _batch(comfy.url, line2_models, prompts, tmp_path / "mixed", capsys)
    assert [r["status"] for r in rows] == ["done", "done"], rows
    assert "entry 3 skipped: \"seeds\" must be a non-empty list" in err, err
    assert "blueprint fields absent, the workflow's values are used" in err and "seeds (1 of 3" in err, err
    assert "preset (1 of 3, workflow value '1:1')" in err, err
    sizes = [_pixels(tmp_path / "mixed", r).shape[:2] for r in rows]
    assert sizes == [(2000, 2000), (2688, 1512)]
