"""`./rezcty demo` end to end on a bare models folder, and the Colab notebook's commands."""
from __future__ import annotations

import ast
import csv
import json
import re
import subprocess

import pytest

from harness import REPO, nodes_defined_in_pack
from rezcty_core.factory.cli import build_parser

EXPECTED_REASON = {  # sample image -> the reason code its defect must produce
    "defect_blurry.png": "blurry",
    "defect_noisy.png": "noisy",
    "defect_small.png": "low_resolution",
    "defect_overexposed.png": "overexposed",
    "duplicate_of_clean_1.png": "duplicate",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "results"
    bare = tmp_path_factory.mktemp("no-models")  # a bare machine: no SD 1.5 checkpoint anywhere
    res = subprocess.run([str(REPO / "rezcty"), "demo", "--out", str(out), "--models", str(bare)],
                         cwd=REPO, capture_output=True, text=True, timeout=1500)
    print(res.stdout[-3000:])
    return res, out, bare


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
    if "RezctyWhispererExpand" not in nodes_defined_in_pack():
        pytest.skip("Whisperer Expand is not in this build yet (the demo reports line 1 as skipped)")
    prompts = json.loads((out / "prompts.json").read_text())
    ideas = [i for i in (out / "inputs" / "ideas.txt").read_text().splitlines() if i]
    assert [p["idea"] for p in prompts] == ideas
    assert all(p["prompt"].endswith("rezcty_style, rezcty_structure") for p in prompts)


def test_demo_line3_rejects_each_defect_and_writes_csv_jpegs_contact_sheet(demo):
    res, out, _ = demo
    needed = ["RezctyDINOv2Embed", "RezctyQCJudge", "RezctyMetadataWriter"]
    if not all(n in nodes_defined_in_pack() for n in needed):
        pytest.skip("line 3 nodes are not all in this build yet")
    verdicts = {v["image"]: v for v in json.loads((out / "qc_report.json").read_text())}
    assert len(verdicts) == 8, verdicts
    for name in ("clean_1.png", "clean_2.png", "clean_3.png"):
        assert verdicts[name]["verdict"] == "pass", verdicts[name]
    for name, reason in EXPECTED_REASON.items():
        assert verdicts[name]["verdict"] == "reject" and reason in verdicts[name]["reasons"], verdicts[name]
    [csv_name] = json.loads((out / "summary.json").read_text())["files"]["csv"]
    rows = list(csv.reader(open(out / csv_name, encoding="utf-8", newline="")))
    assert rows[0] == ["Filename", "Title", "Keywords", "Category", "Releases"]
    assert len(rows) - 1 == 3  # one row per passed image, none for the rejected
    jpegs = sorted((out / "jpegs").glob("*.jpg"))
    assert jpegs
    for row in rows[1:]:
        data = (out / "jpegs" / row[0]).read_bytes()
        assert b"http://ns.adobe.com/xap/1.0/" in data and b"dc:title" in data  # XMP embedded
    assert list((out / "qc").glob("*")), "no QC contact sheet in the results folder"
    assert "line 3 QC      : 8 checked, 3 passed, 5 rejected" in res.stdout


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
    and the three lines go through the client's batch, each followed by free."""
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
    assert verbs.count("batch") >= 3 and verbs.count("free") >= 2, verbs
