"""The real ComfyUI web page, served by the real server, in headless Chromium (Debian's package).

Each UI workflow in workflows/ui/ is loaded into the page: no node type may be missing, our
nodes render with their widgets, and the page's own graph-to-prompt conversion must give exactly
the API-format twin in workflows/api/ — so the two formats cannot drift apart. A screenshot of
each workflow is kept under the pytest tmp dir (the path is printed).
"""
from __future__ import annotations

import json
import shutil
import tempfile

import pytest

from harness import REPO, ensure_debian_binary

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI = REPO / "workflows" / "ui"
API = REPO / "workflows" / "api"
MISSING_TEXT = ("missing node", "isn't installed", "not installed")


def ensure_chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root (fresh CI machine)."""
    return ensure_debian_binary(CHROMIUM, ["chromium", "chromium-driver"])


@pytest.fixture(scope="module")
def page(comfy):
    executable = ensure_chromium()
    from playwright.sync_api import sync_playwright

    # no first-run template dialog over the canvas
    comfy.post("/settings/Comfy.TutorialCompleted", True)
    profile = tempfile.mkdtemp(prefix="rezcty-chromium-")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=FLAGS, viewport={"width": 2200, "height": 1300})
        try:
            pg = context.new_page()
            pg.goto(comfy.url)
            pg.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=180_000)
            pg.wait_for_function("Object.keys(LiteGraph.registered_node_types).length > 100", timeout=180_000)
            yield pg
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


LOAD = "async (wf) => { await window.app.loadGraphData(wf, true, true, 'rezcty-test'); }"
STATE = """() => ({
  unregistered: window.app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type),
  ours: window.app.graph._nodes.filter(n => n.type.startsWith('Rezcty')).map(n => ({
      type: n.type, widgets: (n.widgets || []).map(w => w.name), w: n.size[0], h: n.size[1]})),
  text: document.body.innerText.toLowerCase(),
})"""
PROMPT = "async () => (await window.app.graphToPrompt()).output"


def load(page, workflow: dict) -> dict:
    page.evaluate("() => window.app.graph.clear()")
    page.evaluate(LOAD, workflow)
    page.wait_for_timeout(800)
    return page.evaluate(STATE)


def missing_dialog(state: dict) -> bool:
    return any(t in state["text"] for t in MISSING_TEXT)


def test_missing_node_detection_works(page):
    """Negative control: a workflow with an unknown node type is caught by the checks below."""
    wf = json.loads((UI / "line1_prompts.json").read_text())
    wf["nodes"][1]["type"] = "RezctyNoSuchNode"
    state = load(page, wf)
    assert "RezctyNoSuchNode" in state["unregistered"]
    assert missing_dialog(state), "the page showed no missing-node warning for an unknown node"
    page.keyboard.press("Escape")


@pytest.mark.parametrize("name", sorted(p.stem for p in UI.glob("*.json")))
def test_ui_workflow_loads_renders_and_matches_its_api_twin(page, name, tmp_path):
    wf = json.loads((UI / f"{name}.json").read_text())
    state = load(page, wf)
    shot = tmp_path / f"{name}.png"
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert state["unregistered"] == [], f"missing node types: {state['unregistered']}"
    assert not missing_dialog(state), "the page warned about missing nodes"
    for node in state["ours"]:
        assert node["widgets"] and node["w"] > 0 and node["h"] > 0, node
    prompt = page.evaluate(PROMPT)
    api = json.loads((API / f"{name}.json").read_text())
    strip = lambda g: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in g.items()}  # noqa: E731
    assert strip(prompt) == strip(api)
