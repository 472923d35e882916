"""Installing into an existing ComfyUI: `pip install -r requirements.txt` into an environment that already has
torch and transformers 5 changes neither; no blanket upper bounds; the oldest supported ComfyUI is declared."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version

import tomllib
from packaging.requirements import Requirement

from harness import REPO

PROTECTED = {"torch", "torchvision", "torchaudio", "transformers"}


def requirement_lines() -> list[tuple[str, str]]:
    """(requirement, comment) per line of requirements.txt."""
    out = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        spec, _, comment = line.partition("#")
        if spec.strip():
            out.append((spec.strip(), comment.strip()))
    return out


def test_requirements_carry_no_upper_bound_without_a_reason_and_admit_transformers_5():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {Requirement(spec).name.lower(): Requirement(spec) for spec, _ in requirement_lines()}
    upper = ("<", "<=", "==", "~=", "===")
    explained = set()
    for spec, comment in requirement_lines():
        if any(sp.operator in upper for sp in Requirement(spec).specifier):
            assert comment, f"requirements.txt: '{spec}' bounds the version from above without a reason beside it"
            explained.add(Requirement(spec).name.lower())
    for dep in deps:  # pyproject.toml has no comments: its bounds are those explained in requirements.txt
        if any(sp.operator in upper for sp in Requirement(dep).specifier):
            assert Requirement(dep).name.lower() in explained, f"pyproject.toml: '{dep}' has an unexplained upper bound"
    assert not PROTECTED - {"transformers"} & set(reqs), "torch comes from the user's ComfyUI, never from the pack"
    for name in ("transformers", "peft", "diffusers", "accelerate"):
        assert all(s.operator in (">=", ">", "!=") for s in reqs[name].specifier), reqs[name]
    for v in ("5.0.0", "5.24.0", version("transformers")):
        assert reqs["transformers"].specifier.contains(v), v


def test_installing_the_requirements_into_an_env_with_torch_and_transformers_5_changes_neither(tmp_path):
    assert version("transformers").startswith("5."), "set-up installs transformers 5.x"
    report = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
                          "--report", str(report), "-r", str(REPO / "requirements.txt")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    would = {item["metadata"]["name"].lower(): item["metadata"]["version"]
             for item in json.loads(report.read_text())["install"]}
    assert not PROTECTED & set(would), f"pip would change {sorted(PROTECTED & set(would))}: {would}"


def test_the_oldest_supported_comfyui_is_declared():
    comfy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
    floor = comfy["requires-comfyui"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", floor), floor
    readme = (REPO / "README.md").read_text()
    assert f"ComfyUI {floor[2:]}" in readme and "V3" in readme
