"""The pack loads in the real ComfyUI, and the tiny SD 1.5 checkpoint renders through the API."""
from __future__ import annotations

import ast
import subprocess
import sys

from PIL import Image

from harness import REPO, sd15_graph

COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server", "nodes",
                 "execution", "node_helpers", "latent_preview"}


def test_server_lists_pack_and_no_import_failure(comfy):
    assert comfy.import_failures() == []
    info = comfy.object_info()
    ours = [k for k, v in info.items() if str(v.get("category", "")).startswith("rezcty")]
    for name in ours:
        assert name.startswith("Rezcty"), name
    # the pack module itself was loaded (the link in custom_nodes/)
    assert "rezcty" in comfy.log_text()


def test_tiny_sd15_renders_through_api(comfy, tiny_sd15):
    result = comfy.run(sd15_graph(tiny_sd15, seed=3))
    images = result.ui("7")["images"]
    assert len(images) == 1
    path = comfy.output_file(images[0])
    with Image.open(path) as im:
        assert im.size == (64, 64)


def test_core_never_imports_comfyui():
    offenders = []
    for path in (REPO / "rezcty_core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in COMFY_MODULES:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {n}")
    assert offenders == []


def test_nodes_reach_comfyui_only_through_the_host_module():
    """One file to read when ComfyUI changes: nodes/host.py; every other node module imports it, not ComfyUI."""
    offenders = []
    for path in [REPO / "__init__.py", *sorted((REPO / "nodes").glob("*.py"))]:
        if path.name == "host.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in COMFY_MODULES]
    assert offenders == [], "import ComfyUI through nodes/host.py:\n" + "\n".join(offenders)


def _comfy_names(tree: ast.AST) -> set[str]:
    """Local names bound to a ComfyUI module or something inside one (`import comfy.x as mm`, `mm = comfy.x`)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in COMFY_MODULES}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in COMFY_MODULES:
            names |= {a.asname or a.name for a in node.names}
    changed = True
    while changed:  # aliases of aliases: `mm = comfy.model_management`, `f = mm.free_memory`
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _root_name(node.value) in names:
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id not in names:
                        names.add(t.id)
                        changed = True
    return names


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_nothing_in_comfyui_is_monkeypatched():
    """The pack uses ComfyUI's public surface and never reassigns it: no attribute of a ComfyUI module (e.g.
    `comfy.model_management.unload_all_models`) or of anything reached through one is assigned, deleted or
    setattr'd anywhere in nodes/ or the entry point."""
    offenders = []
    for path in [REPO / "__init__.py", *sorted((REPO / "nodes").rglob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        comfy = _comfy_names(tree)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("setattr", "delattr") and node.args:
                targets = [ast.Attribute(value=node.args[0], attr="?")]
            for t in targets:
                for leaf in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(leaf, (ast.Attribute, ast.Subscript)) and _root_name(leaf) in comfy:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} assigns {ast.unparse(leaf)}")
    assert offenders == [], "ComfyUI monkeypatched:\n" + "\n".join(offenders)


# rezcty_core's packages, lowest first: a package imports only from packages of a lower rank (or itself)
LAYERS = {"common": 0, "sd": 1, "eye": 2, "llm": 2, "qc": 3, "stock": 3, "factory": 4}


def test_core_packages_import_one_way():
    core = REPO / "rezcty_core"
    assert {p.name for p in core.iterdir() if (p / "__init__.py").exists()} == set(LAYERS)
    offenders = []
    for path in core.rglob("*.py"):
        rel = path.relative_to(core).parts
        if len(rel) < 2:
            continue  # the entry points at the top (client.py, embedded.py) may use any package
        own = rel[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} uses a relative import")
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "rezcty_core" and len(parts) > 1 and parts[1] in LAYERS and parts[1] != own \
                        and LAYERS[parts[1]] >= LAYERS[own]:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} ({own}) imports {name}")
    assert offenders == []


def _core_import_graph() -> dict[str, dict[str, int]]:
    """rezcty_core module -> {imported rezcty_core module: first line}, from every Import/ImportFrom node
    (those inside functions too: a lazy import only hides a cycle, it does not remove it)."""
    files = {}
    for path in (REPO / "rezcty_core").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in files:  # `from pkg.mod import func` -> pkg.mod
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: refused by test_core_packages_import_one_way, resolved here all the same
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found and found != module:
                    edges.setdefault(found, node.lineno)
    return graph


def test_core_has_no_import_cycles():
    graph = _core_import_graph()
    done: set[str] = set()
    cycles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            ring = path[path.index(module):] + [module]
            cycles.append(" -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(ring, ring[1:])) + f" -> {module}")
            return
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == [], "import cycles in rezcty_core:\n" + "\n".join(cycles)


def test_core_package_inits_are_one_docstring():
    for init in (REPO / "rezcty_core").glob("*/__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init


def test_core_imports_without_comfyui_on_path():
    code = "import importlib, pkgutil, rezcty_core\n" \
           "[importlib.import_module(m.name) for m in pkgutil.walk_packages(rezcty_core.__path__, 'rezcty_core.')]\n" \
           "import sys; assert 'comfy' not in sys.modules and 'folder_paths' not in sys.modules"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_cli_help_lists_contract_commands():
    res = subprocess.run([str(REPO / "rezcty"), "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for cmd in ("demo", "test", "comfy", "bench"):
        assert cmd in res.stdout


def test_ci_runs_exactly_the_readme_test_command():
    lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    assert lines[-1] == "./rezcty test"
    assert "./rezcty test" in (REPO / "README.md").read_text()


def test_no_core_module_outgrows_450_lines():
    """One concept per module: a core module past 450 lines holds several and is split by concern."""
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in sorted((REPO / "rezcty_core").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450]
    assert long == [], "split by concern:\n" + "\n".join(long)
