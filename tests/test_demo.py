"""`./rezcty demo` end to end on a bare models folder, and the Colab notebook's commands."""
from __future__ import annotations

import ast
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO, link_model, prefetch, prefetched
from rezcty_core.factory.cli import build_parser
from rezcty_core.llm import embedded_choice
from rezcty_core.llm.memory_plan import GiB, plan_memory, read_config

sys.path.insert(0, str(REPO / "tools"))
import demo as demo_tool  # noqa: E402

EXPECTED_REASON = {  # sample image -> the reason code its defect must produce
    "defect_blurry.png": "blurry",
    "defect_noisy.png": "noisy",
    "defect_small.png": "low_resolution",
    "defect_overexposed.png": "overexposed",
    "duplicate_of_clean_1.png": "duplicate",
}


@prefetch("demo")
def start_demo(folder: Path) -> subprocess.Popen:
    """`./rezcty demo` on a bare machine (no SD 1.5 checkpoint anywhere), in its own process and server."""
    bare = folder / "no-models"
    bare.mkdir()
    # SmolLM2 for line 1: the fast model of the tests (the Qwen default is measured in docs/whisperer.md)
    return subprocess.Popen([str(REPO / "rezcty"), "demo", "--out", str(folder / "results"), "--models", str(bare),
                             "--whisperer-llm", "smollm2"], cwd=REPO, stdout=open(folder / "stdout.txt", "w"),
                            stderr=open(folder / "stderr.txt", "w"), start_new_session=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    code, folder = prefetched("demo", tmp_path_factory, timeout=1500)
    res = subprocess.CompletedProcess("./rezcty demo", code, (folder / "stdout.txt").read_text(),
                                      (folder / "stderr.txt").read_text())
    print(res.stdout[-3000:])
    return res, folder / "results", folder / "no-models"


def test_demo_prints_a_summary_and_the_results_path(demo):
    res, out, bare = demo
    assert f"results: {out}" in res.stdout, res.stdout + res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert "error" not in summary, summary.get("error")
    line2 = summary["lines"]["line2"]
    assert line2["skipped"] == "no SD 1.5 checkpoint"
    assert f"put an SD 1.5 checkpoint in {bare / 'checkpoints'}/" in res.stdout
    missing = [line for line, v in summary["lines"].items() if "missing nodes" in str(v.get("skipped", ""))]
    # a line is skipped only while its nodes are not in this build, and then the demo says so and exits 1
    assert res.returncode == (1 if missing else 0), res.stdout + res.stderr
    for line in missing:
        assert f"{line.replace('line', 'line ')} skipped: this build has no" in res.stdout


def test_demo_line1_writes_prompts_json(demo):
    res, out, _ = demo
    prompts = json.loads((out / "prompts.json").read_text())
    ideas = [i for i in (out / "inputs" / "ideas.txt").read_text().splitlines() if i]
    assert [p["idea"] for p in prompts] == ideas
    assert all(p["prompt"].endswith("rezcty_style, rezcty_structure") for p in prompts)
    # the model that wrote them is named in prompts.json, the summary and the printed summary
    assert {p["whisperer_llm"] for p in prompts} == {embedded_choice.SMOLLM2}
    line1 = json.loads((out / "summary.json").read_text())["lines"]["line1"]
    assert line1["model"] == embedded_choice.SMOLLM2 and "asked for" in line1["model_reason"]
    assert f"line 1 model   : {embedded_choice.SMOLLM2}" in res.stdout


def test_demo_line3_rejects_each_defect_and_writes_csv_jpegs_contact_sheet(demo):
    res, out, _ = demo
    verdicts = {v["image"]: v for v in json.loads((out / "qc_report.json").read_text())}
    assert len(verdicts) == 8, verdicts
    for name in ("clean_1.png", "clean_2.png", "clean_3.png"):
        assert verdicts[name]["verdict"] == "pass", verdicts[name]
    for name, reason in EXPECTED_REASON.items():
        assert verdicts[name]["verdict"] == "reject" and reason in verdicts[name]["reasons"], verdicts[name]
    files = json.loads((out / "summary.json").read_text())["files"]
    adobe = out / "stock" / "adobe_stock.csv"
    assert adobe.relative_to(out).as_posix() in files["csv"]
    rows = list(csv.reader(open(adobe, encoding="utf-8", newline="")))
    assert rows[0] == ["Filename", "Title", "Keywords", "Category", "Releases"]
    assert len(rows) - 1 == 3  # one row per passed image, none for the rejected
    for row in rows[1:]:
        data = (adobe.parent / row[0]).read_bytes()  # the CSV names files beside it
        assert b"http://ns.adobe.com/xap/1.0/" in data and b"dc:title" in data  # XMP embedded
    assert list((out / "qc").glob("*")), "no QC contact sheet in the results folder"
    assert "line 3 QC      : 8 checked, 3 passed, 5 rejected" in res.stdout


def _verdict(sidecar: Path) -> str:
    side = json.loads(sidecar.read_text(encoding="utf-8"))
    return (side.get("qc") or {}).get("verdict") or side.get("qc_verdict")


def test_demo_results_hold_every_file_the_summary_counts(demo):
    """Issue 27: the Metadata Writer numbers files per folder, so passed and rejected images may share a name; the
    demo keeps the server's folders (stock/, stock/rejected/) and counts what really is in the results folder."""
    res, out, _ = demo
    files = json.loads((out / "summary.json").read_text())["files"]
    stock = out / files["folder"]
    on_disk = sorted(p.relative_to(out).as_posix() for p in stock.rglob("*.jpg"))
    assert sorted(files["passed"] + files["rejected"]) == on_disk
    assert len(files["passed"]) == 3 and len(files["rejected"]) == 5, files
    for listed in [*files["passed"], *files["rejected"], *files["csv"], *files["contact_sheets"]]:
        assert (out / listed).is_file(), listed
    # every file is where its verdict says, with its own sidecar: a rejected image never stands in for a passed one
    assert all(_verdict((out / p).with_suffix(".json")) == "pass" for p in files["passed"]), files["passed"]
    assert all(_verdict((out / p).with_suffix(".json")) == "reject" for p in files["rejected"]), files["rejected"]
    assert files["sidecars"] == len(on_disk)
    for csv_name, count in files["csv_rows"].items():
        path = out / csv_name
        rows = list(csv.DictReader(open(path, encoding="utf-8-sig", newline="")))
        assert count == {"rows": len(rows), "files_here": len(rows)}, (csv_name, count)
        for row in rows:  # the row's title is the title of the image of that name beside the CSV
            side = json.loads((path.parent / row["Filename"]).with_suffix(".json").read_text(encoding="utf-8"))
            assert side["title"] == row["Title"] and _verdict((path.parent / row["Filename"]).with_suffix(".json")) == "pass"
    assert "JPEGs          : 3 passed in stock/, 5 rejected in stock/rejected/" in res.stdout, res.stdout
    assert "adobe_stock.csv (3 rows, 3 of their files beside it)" in res.stdout, res.stdout


def test_demo_shows_the_x4_upscale_step_without_a_checkpoint(demo):
    """No SD 1.5 checkpoint: line 2 is skipped, but one sample goes through the embedded Real-ESRGAN x4."""
    from PIL import Image

    res, out, _ = demo
    step = json.loads((out / "summary.json").read_text())["lines"]["upscale"]
    assert step["model"] == "RealESRGAN_x4plus.safetensors", step
    with Image.open(out / step["input"]) as src, Image.open(out / step["output"]) as up:
        assert (up.width, up.height) == (4 * src.width, 4 * src.height)
    assert "x4 upscale     : " in res.stdout


def test_colab_notebook_commands_are_valid():
    """Static check (tests/test_colab.py executes it): every cell parses, every workflow it names exists,
    and the three lines go through the client's `line` (factory/lines.py), each followed by free."""
    nb = json.loads((REPO / "colab" / "rezcty_colab.ipynb").read_text())
    assert nb["nbformat"] == 4
    verbs = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        python_lines = [line[: len(line) - len(line.lstrip())] + "pass" if line.strip().startswith(("!", "%"))
                        else line for line in src.splitlines()]
        tree = ast.parse("\n".join(python_lines))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"workflows/api/\w+\.json", node.value):
                assert (REPO / node.value).is_file(), node.value
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "client" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                verbs.append(node.args[0].value)
    assert set(verbs) <= set(build_parser()._subparsers._group_actions[0].choices), verbs
    assert verbs.count("line") >= 3 and verbs.count("free") >= 2, verbs


# ---------------------------------------------------------------------------------------------
# which embedded LLM the demo runs, and line 2 made small for the CPU

QWEN_DIR = embedded_choice.embedded_dir() / embedded_choice.QWEN_NAME


def test_embedded_choice_follows_the_memory_plan_and_says_why():
    """Qwen where its plan (config.json of the embedded folder, the device's dtype) + headroom fits, else SmolLM2."""
    config = read_config(QWEN_DIR)
    cpu_need = embedded_choice.needed_bytes(config, "cpu")
    gpu_need = embedded_choice.needed_bytes(config, "cuda")
    fp32 = plan_memory(config, dtype="fp32", image_tokens=0, device_type="cpu").total
    assert fp32 < cpu_need < fp32 + 3 * GiB and gpu_need < cpu_need  # fp32 on the CPU, 2 bytes on a GPU
    ok = embedded_choice.choose_embedded_llm(cpu_need, "cpu", purpose="analyst")
    assert ok.is_qwen and ok.name == "embedded: Qwen2.5-Coder-1.5B-Instruct" and "RAM is free" in ok.reason
    short = embedded_choice.choose_embedded_llm(cpu_need - 1, "cpu", purpose="analyst")
    assert short.name == embedded_choice.SMOLLM2
    assert short.reason.startswith("analyst: SmolLM2-135M") and f"plans {short.planned_gib} GiB" in short.reason
    t4 = embedded_choice.choose_embedded_llm(int(14.5 * GiB), "cuda")
    assert t4.is_qwen and "fp16" in t4.reason
    missing = embedded_choice.choose_embedded_llm(64 * GiB, "cpu", folder=QWEN_DIR.parent / "no-such-model")
    assert missing.name == embedded_choice.SMOLLM2 and "not set up" in missing.reason


def test_demo_decides_from_the_servers_free_memory(comfy):
    """The real server's /system_stats: free RAM on the CPU (a GPU's free VRAM where there is one)."""
    stats = comfy.get("/system_stats")
    device, free = embedded_choice.free_memory(stats)
    assert device == "cpu" and free == stats["system"]["ram_free"] > 0
    analyst = demo_tool.choose_llm("auto", stats, "analyst")
    need = embedded_choice.needed_bytes(read_config(QWEN_DIR), "cpu")
    assert analyst.is_qwen == (free >= need), analyst.reason
    assert demo_tool.choose_llm("smollm2", stats, "analyst").name == embedded_choice.SMOLLM2
    # on the CPU the one cost table (rezcty_core/data/llm_costs.json) also weighs the demo's time budget
    costs = embedded_choice.load_costs()
    budget = costs.budgets["cpu"][0]
    rest = costs.estimate("demo_rest", embedded_choice.QWEN, "cpu", 1)
    line1 = demo_tool.choose_line1_llm("auto", {"system": {"ram_free": 64 * GiB}, "devices": []}, 3)
    qwen_s = costs.estimate("whisperer", embedded_choice.QWEN, "cpu", 3)
    assert line1.is_qwen == (qwen_s + rest <= budget) and f"{qwen_s:.0f} s for 3 ideas" in line1.reason, line1.reason
    tight = demo_tool.choose_line1_llm("auto", {"system": {"ram_free": 2 * GiB}, "devices": []})
    assert tight.name == embedded_choice.SMOLLM2 and "only 2.0 GiB RAM is free" in tight.reason
    # line 3's analyst: on the CPU also its measured seconds per image; on a GPU (a T4) the memory plan alone
    roomy_cpu = {"system": {"ram_free": 64 * GiB}, "devices": [{"type": "cpu", "vram_free": 64 * GiB}]}
    analyst_cpu = demo_tool.choose_analyst_llm("auto", roomy_cpu, 8)
    per_image = costs.find("analyst", embedded_choice.QWEN, "cpu").per_item
    assert analyst_cpu.is_qwen == (per_image * 8 + rest <= budget), analyst_cpu
    assert "--analyst-llm qwen runs it anyway" in analyst_cpu.reason and "llm_costs.json" in analyst_cpu.reason
    t4 = {"system": {"ram_free": 12 * GiB}, "devices": [{"type": "cuda", "vram_free": 15 * GiB}]}
    assert demo_tool.choose_analyst_llm("auto", t4, 8).is_qwen and demo_tool.choose_line1_llm("auto", t4).is_qwen
    small_gpu = {"system": {"ram_free": 12 * GiB}, "devices": [{"type": "cuda", "vram_free": 3 * GiB}]}
    assert demo_tool.choose_analyst_llm("auto", small_gpu, 8).name == embedded_choice.SMOLLM2
    assert demo_tool.choose_analyst_llm("qwen", small_gpu, 8).is_qwen  # asked for: no second-guessing


def test_the_cost_table_names_where_each_figure_came_from(tmp_path):
    """One declared table of measured seconds (per task, model, device), each row with its source; a broken
    row is a one-line error naming the file and the row."""
    costs = embedded_choice.load_costs()
    assert costs.path == embedded_choice.COSTS_FILE and costs.budgets["cpu"][1]
    assert {(c.task, c.model) for c in costs.costs} >= {("whisperer", embedded_choice.QWEN),
                                                        ("whisperer", embedded_choice.SMOLLM2),
                                                        ("analyst", embedded_choice.QWEN),
                                                        ("analyst", embedded_choice.SMOLLM2)}
    assert all(c.source and c.seconds > 0 and c.items >= 1 for c in costs.costs)
    assert costs.estimate("whisperer", embedded_choice.QWEN, "cuda", 3) is None  # not measured: memory decides
    demo_src = (REPO / "tools" / "demo.py").read_text()
    assert not re.search(r"MEASURED|\b(83\.7|185\.1|118\.0|50\.8)\b", demo_src)  # no timings in the code
    bad = tmp_path / "costs.json"
    bad.write_text(json.dumps({"costs": [{"task": "whisperer", "model": "x", "device": "cpu"}]}))
    with pytest.raises(ValueError, match=r"costs.json: costs row 1: expected task, model, device, seconds"):
        embedded_choice.load_costs(bad)


def test_demo_line2_sets_the_detail_pass_and_base_size_small_for_the_cpu(comfy, tiny_sd15, tmp_path):
    """With a checkpoint: line 2 renders through the shipped workflow (factory/lines.py) with the demo's
    first-pass steps, detail-pass steps and base scale, at the exact stock size."""
    from PIL import Image

    from rezcty_core.factory import lines
    from rezcty_core.factory.api import ComfyClient
    from rezcty_core.sd import presets

    line = lines.LINE2
    graph = demo_tool.line2_graph(tiny_sd15, 1, 1, 0.125)
    assert [line.value(graph, k) for k in ("steps", "detail_steps", "base_scale", "checkpoint")] == [1, 1, 0.125, tiny_sd15]
    shipped = line.load()
    detail = line.targets(shipped, "detail_steps")[0].rpartition(".")[0]
    assert graph[detail]["class_type"] == "KSampler" and graph[detail]["inputs"]["denoise"] < 1
    assert demo_tool.CPU_LINE2["detail_steps"] < line.value(shipped, "detail_steps")
    assert demo_tool.CPU_LINE2["base_scale"] < 1.0
    import torch
    from safetensors.torch import save_file

    emb = tmp_path / "rezcty_demo_genius.safetensors"  # a real one-vector TI embedding for the Embedding Bridge
    save_file({"emb_params": torch.randn(1, 768, generator=torch.Generator().manual_seed(0)) * 0.01}, str(emb))
    link_model(comfy, "embeddings", emb)
    (tmp_path / "prompts.json").write_text(json.dumps([
        {"idea": "sunrise", "prompt": "sunrise over mountain, rezcty_style, rezcty_structure", "seeds": [7]}]))
    # the embedded anime Real-ESRGAN (6 blocks, not 23): the x4 model's CPU time is most of this render
    result = demo_tool.run_line2(ComfyClient(comfy.url), tiny_sd15, tmp_path, [comfy.url], 1, 1, comfy.models_dir,
                                 detail_steps=1, base_scale=0.125,
                                 settings={"upscaler": "RealESRGAN_x4plus_anime.safetensors"})
    assert result["images"] == 1 and result["failed"] == 0, result
    assert (result["detail_steps"], result["base_scale"]) == (1, 0.125)
    [image] = sorted((tmp_path / "line2" / "files").glob("*.png"))
    with Image.open(image) as im:
        assert im.size == presets.get_preset(line.value(graph, "preset")).target
    [blueprint] = json.loads((tmp_path / "line2" / "blueprints.json").read_text())  # line 2's collected result
    assert blueprint["seeds"] == [7] and blueprint["checkpoint"] == tiny_sd15
    assert blueprint["upscaler"] == "RealESRGAN_x4plus_anime.safetensors"
