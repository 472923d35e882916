"""The docs are self-contained and current: nothing refers outside the repository, docs/CONTRACT.md names every
pack node and input, and docs/CONVENTIONS.md matches the tree (layout, the host table, the test helpers)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

from harness import CONTRACT_NODES, REPO, ComfyServer, RunResult, contract_nodes, missing_contract_nodes

TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".txt", ".toml", ".ini", ".json", ".yaml", ".yml", ".cfg", ".sh", ""}
CONTRACT = REPO / "docs/CONTRACT.md"
CONVENTIONS = (REPO / "docs" / "CONVENTIONS.md").read_text(encoding="utf-8")


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for name in names:
        path = REPO / name
        if path.suffix in TEXT_SUFFIXES and path.is_file() and path.stat().st_size < 2_000_000:
            try:
                out[name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
    return out


def test_no_file_refers_outside_the_repo():
    """A user's clone has nothing beside it: no shared folder one level up, no contract but the one in docs/."""
    outside = "../" + "shared"
    files = tracked_text_files()
    assert len(files) > 100
    bad = [f"{name}: {outside}" for name, text in files.items() if outside in text]
    for name, text in files.items():
        folder = (REPO / name).parent
        for m in re.finditer(r"(\]\()?((?:\.{1,2}/|[\w-]+/)*CONTRACT\.md)", text):
            link, ref = m.group(1), m.group(2)
            base = folder if link or "/" not in ref and name.startswith("docs/") else REPO
            if (base / ref).resolve() != CONTRACT:
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{name}:{line}: {ref} (not docs/CONTRACT.md)")
    assert not bad, "\n".join(bad)


def _node_ids_in_pack() -> set[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "nodes").glob("*.py"))
    return set(re.findall(r"node_id\s*=\s*['\"](Rezcty\w+)['\"]", text))


def test_contract_names_every_pack_node_and_every_input():
    assert set(CONTRACT_NODES) == _node_ids_in_pack(), "docs/CONTRACT.md's Nodes table and nodes/*.py differ"
    sys.path.insert(0, str(REPO / "workflows"))
    import build  # the node schemas the shipped workflows are generated from (test_workflows: == the server's)

    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(Rezcty\w+)` \|.*$", CONTRACT.read_text(), flags=re.M)}
    missing = [f"{cls}.{name}" for cls, schema in build.SCHEMAS.items() if cls.startswith("Rezcty")
               for name in (i[0] if isinstance(i, tuple) else i for i in schema.inputs) if f"`{name}`" not in rows[cls]]
    assert not missing, f"inputs users rely on but docs/CONTRACT.md does not name: {missing}"
    text = CONTRACT.read_text()
    for words in (("Reason codes", "`duplicate`", "`low_resolution`"), ("./rezcty demo", "./rezcty test"),
                  ("client line", "`--with", "`line1`", "`line2`", "`line3`")):
        assert all(w in text for w in words), words


def test_a_missing_contract_node_fails_the_session(comfy):
    """conftest's `comfy` fixture fails the whole session on a contract node missing from /object_info."""
    info = comfy.object_info()
    assert missing_contract_nodes(info) == []
    gone = CONTRACT_NODES[len(CONTRACT_NODES) // 2]
    assert missing_contract_nodes({k: v for k, v in info.items() if k != gone}) == [gone]
    conftest = (REPO / "tests" / "conftest.py").read_text()
    assert "missing_contract_nodes(" in conftest and "pytest.fail(" in conftest
    assert contract_nodes() == CONTRACT_NODES


def _layout_rows() -> dict[str, str]:
    rows = {}
    for line in CONVENTIONS.split("## Layout", 1)[1].split("\n## ", 1)[0].splitlines():
        m = re.match(r"\| (`[^|]+`(?: / `[^|]+`)*) \| (.*) \|$", line)
        if m:
            for path in re.findall(r"`([^`]+)`", m.group(1)):
                rows[path] = m.group(2)
    return rows


def test_conventions_layout_matches_the_tree():
    rows = _layout_rows()
    absent = [p for p in rows if not (REPO / p).exists()]
    assert not absent, f"docs/CONVENTIONS.md's layout names what the tree lacks: {absent}"
    unnamed = []
    for init in sorted((REPO / "rezcty_core").glob("*/__init__.py")):
        pkg = init.parent.relative_to(REPO).as_posix() + "/"
        named = set(re.findall(r"`([\w.]+)", rows.get(pkg, "")))
        unnamed += [f"{pkg}{p.stem}" for p in sorted(init.parent.glob("*.py"))
                    if p.stem != "__init__" and p.stem not in named]
    assert not unnamed, f"modules docs/CONVENTIONS.md's layout does not name (add them to their package's row): {unnamed}"
    top = {p.split("/")[0] for p in rows}
    dirs = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__pycache__"}
    assert dirs <= top, f"top-level folders not in the layout: {sorted(dirs - top)}"


def test_conventions_host_table_names_the_host_functions():
    section = CONVENTIONS.split("## The host", 1)[1].split("\n## ", 1)[0]
    tree = ast.parse((REPO / "nodes" / "host.py").read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.ImportFrom, ast.Import))
                for t in (n.targets if isinstance(n, ast.Assign) else [])} | {
        (a.asname or a.name) for n in tree.body if isinstance(n, (ast.ImportFrom, ast.Import)) for a in n.names}
    names = []
    for row in section.splitlines():
        if row.startswith("| `") and row.count("|") >= 4:
            for ref in re.findall(r"`([\w.()]+)`", row.rstrip(" |").rsplit("|", 1)[1]):
                ref = ref.removeprefix("host.")
                base, _, optional = ref.partition("(")
                names += [base] + ([base + optional.rstrip(")")] if optional else [])
    assert names, "no host functions found in the table"
    unknown = [n for n in names if n not in defined]
    assert not unknown, f"docs/CONVENTIONS.md's host table names what nodes/host.py lacks: {unknown}"


def test_conventions_test_helpers_exist():
    section = CONVENTIONS.split("## Running things", 1)[1].split("\n## ", 1)[0]
    server = set(dir(ComfyServer)) | {"models_dir", "input_dir", "output_dir", "url", "base_dir"}
    used = set(re.findall(r"comfy\.(\w+)", section))
    assert used and used <= server, f"docs/CONVENTIONS.md names ComfyServer helpers that do not exist: {used - server}"
    result = set(dir(RunResult)) | set(RunResult.__dataclass_fields__)
    assert set(re.findall(r"`\.(\w+)(?:\(\w*\))?`", section)) <= result
    import harness

    assert all(hasattr(harness, name) for name in re.findall(r"harness\.(\w+)", section))


def test_no_test_skips_but_for_a_missing_gpu():
    """A skip on CI hides what it names; only "no GPU here" may skip (a missing tool or package fails)."""
    allowed = re.compile(r"cuda|gpu|mps", re.I)
    found: dict[str, str] = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            target = node.func if isinstance(node, ast.Call) else node
            if isinstance(target, ast.Attribute) and isinstance(target.value, (ast.Name, ast.Attribute)) \
                    and re.fullmatch(r"pytest\.(skip|importorskip|xfail|mark\.(skip|skipif|xfail))", ast.unparse(target)):
                code, where = ast.unparse(node), f"{path.relative_to(REPO)}:{node.lineno}"
                if not allowed.search(code) and len(code) > len(found.get(where, "")):
                    found[where] = code[:100]  # the call with its reason, over the bare attribute
    assert not found, "skips that can hide a failure on CI:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(found.items()))


def test_the_brisque_parity_reference_is_in_requirements_dev():
    """What test_qc_core's BRISQUE parity test imports (and the reference package itself) is installed by
    requirements-dev.txt (or the runtime requirements), so the test can never skip or fail for a missing package."""
    source = (REPO / "tests" / "test_qc_core.py").read_text(encoding="utf-8")
    func = next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.FunctionDef) and n.name == "test_brisque_matches_the_package_features_and_score")
    modules = {(a.name if isinstance(n, ast.Import) else n.module).split(".")[0]
               for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    listed = {re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()
              for req in ("requirements-dev.txt", "requirements.txt")
              for line in (REPO / req).read_text().splitlines() if line.strip() and not line.startswith("#")}
    dist = {"cv2": "opencv-python-headless", "skimage": "scikit-image", "libsvm": "libsvm-official"}
    brisque_needs = {"skimage", "scipy", "libsvm", "requests", "cv2", "numpy"}  # what brisque 0.2.0 imports
    missing = [m for m in sorted(modules | brisque_needs) if dist.get(m, m).lower() not in listed]
    assert modules >= {"brisque", "cv2", "skimage"} and not missing, missing
