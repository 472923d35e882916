"""The shared workflows: generated files up to date, in step with the real nodes, and each one runs.

Every API workflow is run through the headless client against the real server, with the tiny
SD 1.5 checkpoint, a real textual-inversion file and a VAE split out of that checkpoint.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import REPO, link_model
from rezcty_core.factory.api import ComfyClient, RunOutput
from rezcty_core.factory.validate import validate_graph
from rezcty_core.factory.workflow import apply_sets, load_workflow, set_input

sys.path.insert(0, str(REPO / "workflows"))
import build  # noqa: E402  (workflows/build.py)

API = REPO / "workflows" / "api"
UI = REPO / "workflows" / "ui"
ALL = sorted(p.stem for p in API.glob("*.json"))
TRIGGERS = "rezcty_style, rezcty_structure"


def needs(info: dict, graph: dict) -> None:
    """Every node type the workflow uses is registered: a missing one fails (never a skip)."""
    absent = sorted({n["class_type"] for n in graph.values()} - set(info))
    assert not absent, f"node types the workflow uses but the server lacks: {absent}"


def test_generated_files_are_up_to_date():
    res = subprocess.run([sys.executable, str(REPO / "workflows" / "build.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert ALL == sorted(p.stem for p in UI.glob("*.json")) == sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    for name in ALL:
        assert (UI / f"{name}.json").read_text() == (REPO / "example_workflows" / f"{name}.json").read_text()


def test_ui_and_api_files_describe_the_same_graph():
    for name in ALL:
        ui = json.loads((UI / f"{name}.json").read_text())
        api = json.loads((API / f"{name}.json").read_text())
        real = {str(n["id"]): n for n in ui["nodes"] if n["type"] != "Note"}
        assert set(real) == set(api), name
        assert any(n["type"] == "Note" and len(n["widgets_values"][0]) > 200 for n in ui["nodes"]), f"{name}: no note"
        for link_id, src, src_slot, dst, dst_slot, _typ in ui["links"]:
            dst_node = real[str(dst)]
            assert dst_node["inputs"][dst_slot]["link"] == link_id
            assert api[str(dst)]["inputs"][dst_node["inputs"][dst_slot]["name"]] == [str(src), src_slot]
        for node_id, node in api.items():
            assert real[node_id]["type"] == node["class_type"]


def _server_schema(info: dict) -> tuple:
    ins = []
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (info["input"].get(section) or {}).items():
            typ = "COMBO" if isinstance(spec[0], list) else spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            ins.append((name, typ, required, typ in build.WIDGET_TYPES and not opts.get("forceInput")))
    control = tuple(name for section in ("required", "optional") for name, spec in (info["input"].get(section) or {}).items()
                    if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("control_after_generate"))
    return tuple(ins), tuple(zip(info.get("output_name", []), info["output"])), control


def test_schemas_used_by_the_generator_match_the_real_nodes(comfy):
    info = comfy.object_info()
    mismatched, missing = [], []
    for cls, schema in build.SCHEMAS.items():
        if cls not in info:
            missing.append(cls)
            continue
        inputs, outputs, control = _server_schema(info[cls])
        if (inputs, outputs, control) != (schema.inputs, schema.outputs, schema.seed_control):
            mismatched.append(f"{cls}: server has inputs {inputs} outputs {outputs} seed control {control}")
    assert not missing, f"classes the workflows use but the server lacks: {missing}"
    assert not mismatched, "update SCHEMAS in workflows/build.py and rebuild:\n" + "\n".join(mismatched)


@pytest.mark.parametrize("name", ALL)
def test_api_workflow_fits_the_server(comfy, name):
    """Only a missing model or input file may be left (the test server has no SD 1.5 / no samples)."""
    info = comfy.object_info()
    graph = load_workflow(API / f"{name}.json")
    needs(info, graph)
    problems = [p for p in validate_graph(graph, info) if "missing model" not in p and "input file" not in p]
    assert problems == []


# ---------------------------------------------------------------------------------------------
# running each line

@pytest.fixture(scope="module")
def models(comfy, tiny_sd15, tmp_path_factory) -> dict:
    """A real TI embedding (one 768-wide vector) and a VAE split out of the tiny checkpoint."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("wf-models")
    emb = folder / "rezcty_genius.safetensors"
    save_file({"emb_params": torch.randn(1, 768, generator=torch.Generator().manual_seed(0)) * 0.01}, str(emb))
    sd = load_file(str(comfy.models_dir / "checkpoints" / tiny_sd15))
    vae = folder / "tiny_vae.safetensors"
    save_file({k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}, str(vae))
    return {"ckpt": tiny_sd15, "embedding": link_model(comfy, "embeddings", emb),
            "vae": link_model(comfy, "vae", vae)}


@pytest.fixture(scope="module")
def tiny_llm(comfy) -> str:
    """A tiny random LLM folder (tests/fixtures/tiny_llm.py) in models/LLM/: the LLM paths at CPU-test speed."""
    from fixtures.tiny_llm import tiny_llm_dir

    return link_model(comfy, "LLM", tiny_llm_dir(), "tiny-llm")


@pytest.fixture(scope="module")
def client(comfy) -> ComfyClient:
    return ComfyClient(comfy.url)


def small_sd(graph: dict, models: dict, ckpt: str, bridge: str) -> dict:
    """The SD chain at CPU-test cost: 1 step per pass, a 64 px first pass (Stock Size base_scale), the 6-block
    embedded upscaler; the final exact stock size is the real one."""
    set_input(graph, f"{ckpt}.ckpt_name", models["ckpt"])
    set_input(graph, f"{bridge}.embedding", models["embedding"])
    for node_id, node in graph.items():
        if node["class_type"] == "KSampler":
            set_input(graph, f"{node_id}.steps", 1)
        elif node["class_type"] == "RezctyStockSize":
            set_input(graph, f"{node_id}.base_scale", 0.125)
        elif node["class_type"] == "UpscaleModelLoader":
            set_input(graph, f"{node_id}.model_name", "RealESRGAN_x4plus_anime.safetensors")
    return graph


def sample_image(tmp_path: Path, size: int = 256) -> Path:
    sys.path.insert(0, str(REPO / "tools"))
    from demo_samples import landscape

    path = tmp_path / "sample.png"
    Image.fromarray(landscape(1, size)).save(path)
    return path


def test_line1_prompts_runs(comfy, client, tmp_path):
    graph = load_workflow(API / "line1_prompts.json")
    needs(client.object_info(), graph)
    apply_sets(graph, ["Whisperer Expand.prompt=a knight", "2.max_new_tokens=24"])
    result = client.run(graph, tmp_path)
    texts = result.texts()["3"]
    assert len(texts) == 1 and texts[0].endswith(TRIGGERS)


@pytest.mark.parametrize("name", ["line2_generation", "line2_generation_vae"])
def test_line2_generation_runs_to_the_exact_stock_size(comfy, client, models, tmp_path, name):
    graph = load_workflow(API / f"{name}.json")
    needs(client.object_info(), graph)
    small_sd(graph, models, "1", "3")
    set_input(graph, "11.preset", "3:2")
    if "10" in graph:
        set_input(graph, "10.vae_name", models["vae"])
    result = client.run(graph, tmp_path)
    [png] = result.files
    with Image.open(png) as im:
        assert im.size == (2454, 1636)  # the 3:2 preset's stock size (every preset: tests/test_line2_stock.py)


def _check_line3(result: RunOutput, comfy) -> list[dict]:
    report = json.loads(result.texts()["7"][0])
    entries = report if isinstance(report, list) else report.get("entries", [report])
    assert entries and all(e["verdict"] in ("pass", "reject") for e in entries)
    return entries


def test_line3_qc_metadata_fast_runs_and_writes_jpeg_and_csv(comfy, client, tmp_path):
    graph = load_workflow(API / "line3_qc_metadata_fast.json")
    needs(client.object_info(), graph)
    sys.path.insert(0, str(REPO / "tools"))
    from demo_samples import landscape

    img = tmp_path / "clean.png"
    Image.fromarray(landscape(2, 2048)).save(img, compress_level=1)
    apply_sets(graph, [f"1.image={img}", "6.csv_name=wf_test.csv", "6.filename_prefix=wftest"])
    result = client.run(graph, tmp_path / "out")
    entries = _check_line3(result, comfy)
    assert entries[0]["verdict"] == "pass", entries
    jpegs = [f for f in comfy.output_dir.rglob("*.jpg")]
    assert jpegs, "the Metadata Writer wrote no JPEG"
    rows = list(csv.reader(open(next(comfy.output_dir.rglob("wf_test.csv")), encoding="utf-8")))
    assert rows[0] == ["Filename", "Title", "Keywords", "Category", "Releases"] and len(rows) == 2


def test_line3_qc_metadata_with_the_llm_judge_runs(comfy, client, tiny_llm, tmp_path):
    """The judge/writer LLM paths have their own tests (tiny LLMs, valid and invalid JSON) and take minutes
    on a shared CPU; here the workflow runs with the loader shown as text, the rest as shipped."""
    graph = load_workflow(API / "line3_qc_metadata.json")
    needs(client.object_info(), graph)
    apply_sets(graph, [f"1.image={sample_image(tmp_path)}", "6.csv_name=wf_llm.csv", f"4.base_model={tiny_llm}",
                          "5.llm=null", "6.llm=null"])
    graph["90"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}
    result = client.run(graph, tmp_path / "out")
    entries = _check_line3(result, comfy)
    assert "low_resolution" in entries[0]["reasons"]  # 256 px: far below 4 MP
    # the LLM cache is keyed by the resolved folder: other tests may have linked the same tiny model first
    shown = result.texts()["90"][0]
    assert shown.startswith("LoadedLLM(base=tiny-") and "adapter=none" in shown, shown


def test_all_in_one_runs(comfy, client, models, tiny_llm, tmp_path):
    graph = load_workflow(API / "all_in_one.json")
    needs(client.object_info(), graph)
    small_sd(graph, models, "3", "5")
    # the whole chain; the LLM writes the prompt here, its judge/writer paths are covered elsewhere (slow on a CPU)
    apply_sets(graph, ["2.max_new_tokens=16", "14.csv_name=wf_all.csv", f"1.base_model={tiny_llm}",
                          "13.llm=null", "14.llm=null"])
    result = client.run(graph, tmp_path / "out")
    report = json.loads(result.texts()["15"][0])
    assert report
    assert result.texts()["2"][0].rstrip().endswith(TRIGGERS) or TRIGGERS in result.texts()["2"][0]
    arr = np.asarray(Image.open(next(p for p in comfy.output_dir.rglob("*.jpg"))))
    assert arr.ndim == 3
