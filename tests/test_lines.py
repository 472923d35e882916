"""The factory lines declared once (rezcty_core/factory/lines.py): no node number outside the workflow JSON, and a
workflow renumbered as a re-save from the web page does still binds its settings and collects its results."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from harness import REPO, link_model
from rezcty_core.factory import blueprint, lines
from rezcty_core.factory.cli import main as client_main
from rezcty_core.factory.errors import ClientError

NODE_INPUT = re.compile(r"^\d+\.[A-Za-z_]\w*(=.*)?$")  # "6.steps", "1.base_model=..."
NODE_ARG_CALLS = {"get", "write_prompts_json", "find_node", "set_input", "text", "ui", "node", "texts_of"}


def _digits(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isdigit()


def numeric_node_refs(source: str) -> list[tuple[int, str]]:
    """(line, code) of every numeric node id in Python source: "6.steps", graph["3"], texts.get("7"),
    write_prompts_json(rows, "3", ...), a link ["3", 0]."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and NODE_INPUT.match(node.value):
            hits.append(node)
        elif isinstance(node, ast.Subscript) and _digits(node.slice):
            hits.append(node)
        elif isinstance(node, ast.Call) and any(_digits(a) for a in node.args):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in NODE_ARG_CALLS:
                hits.append(node)
        elif isinstance(node, ast.List) and len(node.elts) == 2 and _digits(node.elts[0]) \
                and isinstance(node.elts[1], ast.Constant) and isinstance(node.elts[1].value, int):
            hits.append(node)
    return sorted((n.lineno, ast.get_source_segment(source, n) or "") for n in hits)


def code_sources() -> dict[str, str]:
    """The code that runs the lines: tools/, the Colab notebook's code cells, rezcty_core/factory/."""
    out = {p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8")
           for folder in ("tools", "rezcty_core/factory") for p in sorted((REPO / folder).glob("*.py"))}
    nb = json.loads((REPO / "colab" / "rezcty_colab.ipynb").read_text(encoding="utf-8"))
    for n, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            out[f"colab/rezcty_colab.ipynb cell {n}"] = "\n".join(
                "pass" if line.lstrip().startswith(("!", "%")) else line for line in src.splitlines())
    return out


def test_the_numeric_id_check_catches_what_it_names():
    old = ('set_input(graph, "1.base_model", llm)\nx = graph["3"]["inputs"]\nr = texts.get("7", [])\n'
           'p = write_prompts_json(rows, "3", path)\nflags = ["--set", "13.steps=4"]\nlink = ["3", 0]\n')
    assert [line for line, _ in numeric_node_refs(old)] == [1, 2, 3, 4, 5, 6]
    ok = 'set_input(graph, "KSampler.steps", 4)\npreset = "1:1"\nv = values["seed"]\nn = int("3")\n'
    assert numeric_node_refs(ok) == []


def test_no_numeric_node_id_outside_the_workflow_json():
    found = {name: refs for name, src in code_sources().items() if (refs := numeric_node_refs(src))}
    assert not found, "node numbers (bind by title or class, factory/lines.py): " + json.dumps(found)


def renumber(graph: dict) -> tuple[dict, dict]:
    """What a re-save from the web page may do: the same nodes under other ids (here the ids reversed, so every
    old number now names another node). Returns (graph, old id -> new id)."""
    ids = sorted(graph, key=int)
    new = dict(zip(ids, reversed(ids)))
    out = {}
    for old_id, node in graph.items():
        node = json.loads(json.dumps(node))
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in new:
                node["inputs"][name] = [new[str(value[0])], value[1]]
        out[new[old_id]] = node
    return out, new


@pytest.mark.parametrize("line_name,variant", [(n, v) for n, line in lines.LINES.items() for v in line.workflows])
def test_every_line_binds_every_setting_the_same_after_renumbering(line_name, variant):
    line = lines.get(line_name)
    graph = line.load(variant)
    moved, new = renumber(graph)
    assert moved != graph
    for name in line.settings:
        where = line.targets(graph, name)
        assert [f"{new[t.split('.')[0]]}.{t.split('.', 1)[1]}" for t in where] == line.targets(moved, name), name
        if not line.settings[name].optional:
            assert where, f"{line_name}/{variant}: required setting {name} binds nowhere"
    old_item = line.item_bind(graph)
    assert line.item_bind(moved) == f"{new[old_item.split('.')[0]]}.{old_item.split('.', 1)[1]}"
    for node in line.nodes:
        assert any(n["class_type"] == node for n in graph.values()), (line_name, variant, node)
    if line.texts:
        assert line.node(moved, line.texts) == new[line.node(graph, line.texts)]
    if line is lines.LINE2:  # line 2's blueprint (what it collects) reads the same render back
        assert blueprint.resolved(moved, "p") == blueprint.resolved(graph, "p")
        mapped = {k: [f"{new[t.split('.')[0]]}.{t.split('.', 1)[1]}" if "." in t else new[t] for t in v]
                  for k, v in blueprint.targets(graph).items()}
        assert {k: sorted(v) for k, v in mapped.items()} == {k: sorted(v) for k, v in blueprint.targets(moved).items()}
        assert mapped["seeds"][0] == blueprint.targets(moved)["seeds"][0]  # the first pass's, found from the links


def test_a_setting_that_binds_nowhere_is_refused_by_name():
    graph = lines.LINE2.load()
    with pytest.raises(ClientError, match="line2: no setting 'stepz'"):
        lines.LINE2.bind(graph, {"stepz": 3})
    del graph[lines.LINE2.node(graph, "KSampler (detail pass)")]
    with pytest.raises(ClientError, match=r"setting 'detail_steps': KSampler \(detail pass\).steps is not in the workflow"):
        lines.LINE2.bind(graph, {"detail_steps": 3})
    assert lines.LINE2.bind(graph, {"width": 64}) is graph  # optional: this workflow takes its size from Stock Size
    with pytest.raises(ClientError, match="no line 'line9'"):
        lines.get("line9")


def test_renumbered_lines_run_and_collect_through_the_server(comfy, tmp_path, capsys):
    """Line 1 (the tiny random LLM: binding and collecting is what is tested; two ideas as one prompt) and line 3
    (two small images) through the real server from renumbered copies of the shipped workflows, via
    `python -m rezcty_core.client line`."""
    from fixtures.tiny_llm import tiny_llm_dir

    tiny = link_model(comfy, "LLM", tiny_llm_dir(), "tiny-llama-whisperer")
    line1, new1 = renumber(lines.LINE1.load())
    (tmp_path / "line1.json").write_text(json.dumps(line1))
    ideas = tmp_path / "ideas.txt"
    ideas.write_text("a red barn\na lighthouse on a cliff\n")
    code = client_main(["line", "line1", "--workflow", str(tmp_path / "line1.json"), "--server", comfy.url,
                        "--ideas", str(ideas), "--out", str(tmp_path / "l1"), "--together", "--quiet",
                        "--with", f"llm={tiny}", "--with", "max_new_tokens=12", "--with", "seed=3"])
    assert code == 0, capsys.readouterr()
    prompts = json.loads((tmp_path / "l1" / "prompts.json").read_text())
    assert [p["idea"] for p in prompts] == ["a red barn", "a lighthouse on a cliff"]
    assert all(p["prompt"].endswith("rezcty_style, rezcty_structure") and p["whisperer_llm"] == tiny for p in prompts)
    [row] = json.loads((tmp_path / "l1" / "results.json").read_text())
    preview = new1[lines.LINE1.node(lines.LINE1.load(), "Expanded prompts")]  # another node than before
    assert preview != lines.LINE1.node(lines.LINE1.load(), "Expanded prompts")
    assert row["texts"][preview] == [p["prompt"] for p in prompts]

    images = tmp_path / "images"
    images.mkdir()
    for n, color in enumerate([(200, 40, 40), (40, 40, 200)]):
        Image.new("RGB", (320, 240), color).save(images / f"small_{n}.png")
        (images / f"small_{n}.txt").write_text("a plain coloured card")
    line3, _ = renumber(lines.LINE3.load("fast"))
    (tmp_path / "line3.json").write_text(json.dumps(line3))
    code = client_main(["line", "line3", "--workflow", str(tmp_path / "line3.json"), "--server", comfy.url,
                        "--images", str(images), "--out", str(tmp_path / "l3"), "--quiet",
                        "--with", "filename_prefix=renumbered/rn", "--with", "csv_name=renumbered/rn.csv"])
    assert code == 0, capsys.readouterr()
    report = json.loads((tmp_path / "l3" / "qc_report.json").read_text())
    assert [(r["image"], r["verdict"]) for r in report] == [("small_0.png", "reject"), ("small_1.png", "reject")]
    assert all("low_resolution" in r["reasons"] for r in report), report
    written = sorted(p.relative_to(comfy.output_dir).as_posix() for p in (comfy.output_dir / "renumbered").rglob("*.jpg"))
    assert len(written) == 2 and all(p.startswith("renumbered/rejected/rn") for p in written), written


def test_cli_line_lists_settings_and_run_takes_a_line_name(capsys, tmp_path):
    assert client_main(["line", "line2", "--list"]) == 0
    text = capsys.readouterr().out
    assert "--with detail_steps=...  detail-pass sampler steps [13.steps; now 15]" in text, text
    assert client_main(["line", "line1", "--server", "http://127.0.0.1:9", "--images", str(tmp_path)]) == 2
    assert "line line1: give --ideas (and only that)" in capsys.readouterr().err
    assert client_main(["run", str(REPO / "workflows" / "api" / "line1_prompts.json"), "--server", "http://127.0.0.1:9",
                        "--with", "seed=1"]) == 2
    assert "--with and --variant need a line name" in capsys.readouterr().err
    assert client_main(["check", "line1", "--server", "http://127.0.0.1:9", "--with", "nope=1"]) == 2
    assert "line1: no setting 'nope'" in capsys.readouterr().err


def test_lines_module_documents_each_line():
    doc = lines.__doc__ or ""
    for line in lines.LINES.values():
        assert line.name in doc and all(f in doc for f in line.workflows.values()), line.name
        assert Path(lines.WORKFLOWS / next(iter(line.workflows.values()))).is_file()
