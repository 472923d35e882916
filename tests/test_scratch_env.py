"""A ComfyUI user's environment, made from scratch: ComfyUI's requirements and set-up's torch, then
`pip install -r requirements.txt`, then `python -m rezcty_core.embedded prepare` (no --wheels).

To stay within about two minutes it shares set-up's installed packages instead of downloading them: the scratch
venv sees, through one .pth file, a folder of links to exactly the distributions those requirements pull in (torch,
ComfyUI's and ours with their dependencies) and nothing else — no test tool and no onnxruntime, so the QC text
check runs on torch as in a plain environment. Through the server started in that venv: every pack node is in
/object_info, a 60 %-opaque watermark on a clean 4 MP render is rejected with `text`, and without the OCR model the
clean render is rejected with `check_unavailable`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
from fixtures import qc_synth
from fixtures import qc_synth_text as synth_text
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from harness import CONTRACT_NODES, REPO, ComfyServer

sys.path.insert(0, str(REPO / "tools"))
import rezcty as setup  # noqa: E402  (the set-up's own constants: ComfyUI's tree, its skipped requirements, torch)

QC_MODELS = "pp-ocrv4,brisque,blazeface,blazepalm"


def requirement_lines(path: Path, skip: set[str] = frozenset()) -> list[Requirement]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-") and canonicalize_name(Requirement(line).name) not in skip:
            out.append(Requirement(line))
    return out


def user_distributions() -> list:
    """The installed distributions a ComfyUI user's environment has after ComfyUI's requirements, set-up's torch and
    this pack's requirements.txt: the roots and their dependencies (markers and extras as pip evaluates them)."""
    roots = [*requirement_lines(setup.COMFY_DIR / "requirements.txt", setup.COMFY_REQ_SKIP),
             *(Requirement(p) for p in setup.torch_pins()), *requirement_lines(REPO / "requirements.txt")]
    seen: dict = {}
    seen_extras: dict = {}
    todo = [(r, frozenset(r.extras)) for r in roots if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req, extras = todo.pop()  # its marker held for the parent (and the parent's extras) already
        key = canonicalize_name(req.name)
        if key in seen and extras <= seen_extras.get(key, frozenset()):
            continue
        seen_extras[key] = seen_extras.get(key, frozenset()) | extras
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            raise AssertionError(f"{req.name}: required but not installed by set-up") from None
        seen[key] = dist
        for dep in map(Requirement, dist.requires or []):
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((dep, frozenset(dep.extras)))
    return list(seen.values())


def link_view(dists: list, view: Path) -> None:
    """`view/` holds a link to each top-level file or folder these distributions installed (and their metadata)."""
    view.mkdir(parents=True)
    for dist in dists:
        root = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src, dst = root / top, view / top
            if src.exists() and not dst.exists() and not top.endswith(".pth") and top != "__pycache__":
                dst.symlink_to(src)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The scratch venv (its python), its embedded folder, and the server started in it."""
    root = tmp_path_factory.mktemp("scratch")
    t0 = time.time()
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dists = user_distributions()
    link_view(dists, root / "view")
    (site / "user-packages.pth").write_text(str(root / "view") + "\n")
    # `pip install -r requirements.txt` in that venv, from no index: nothing may be missing, nothing is fetched
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--dry-run",
                          "--quiet", "--disable-pip-version-check", "--report", str(root / "pip.json"),
                          "-r", str(REPO / "requirements.txt")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    would = json.loads((root / "pip.json").read_text())["install"]
    assert would == [], f"pip would still install {[i['metadata']['name'] for i in would]}"
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('onnxruntime') is None, "
                            "u.find_spec('pytest') is None, u.find_spec('torch') is not None)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert probe == ["True", "True", "True"], "the scratch env is a user's: torch, no onnxruntime, no test tools"
    # prepare (no --wheels): the QC models; set-up's download cache serves the wheels it already holds
    embedded = root / "embedded"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REZCTY_EMBEDDED_DIR")}
    prep = subprocess.run([str(py), "-m", "rezcty_core.embedded", "prepare", "--dest", str(embedded), "--only",
                           QC_MODELS.replace("pp-ocrv4,", ""), "--cache", str(setup.WHEEL_CACHE)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert prep.returncode == 0, prep.stderr
    base = root / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "rezcty").symlink_to(REPO, target_is_directory=True)
    server = ScratchServer(base, py)
    server.start(env={**env, "REZCTY_EMBEDDED_DIR": str(embedded), "HF_HUB_OFFLINE": "1"})
    yield {"python": py, "embedded": embedded, "server": server, "env": env, "setup_s": time.time() - t0}
    server.stop()


class ScratchServer(ComfyServer):
    """The real ComfyUI main.py run by the scratch venv's python (not through ./rezcty and its .venv)."""

    def __init__(self, base_dir: Path, python: Path):
        super().__init__(base_dir)
        self.python = python

    def start(self, timeout: float = 240.0, env: dict | None = None) -> ScratchServer:
        log = open(self.log_path, "ab")
        cmd = [str(self.python), "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--base-directory",
               str(self.base_dir), "--database-url", "sqlite:///:memory:", "--disable-api-nodes",
               "--disable-auto-launch", "--cpu"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=setup.COMFY_DIR, env=env,
                                     start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"ComfyUI exited during start\n{self.log_tail()}"
            if self.ready():
                return self
            time.sleep(0.5)
        raise AssertionError(f"ComfyUI did not answer in {timeout:.0f} s\n{self.log_tail()}")


def judge(server: ComfyServer, name: str, rgb: np.ndarray) -> dict:
    server.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(server.input_dir / name)
    graph = {"l": {"class_type": "LoadImage", "inputs": {"image": name}},
             "judge": {"class_type": "RezctyQCJudge", "inputs": {"images": ["l", 0], "profile": "adobe_stock"}},
             "report": {"class_type": "PreviewAny", "inputs": {"source": ["judge", 2]}}}
    result = server.run(graph)
    (entry,) = json.loads(result.text("report")[0])
    return {**entry, "summary": result.text("judge")[0]}


def test_every_pack_node_loads_in_a_users_environment(scratch):
    server = scratch["server"]
    info = server.object_info()
    pack = sorted(n for n, v in info.items() if "rezcty" in str(v.get("python_module", "")))
    assert set(CONTRACT_NODES) <= set(pack), pack
    assert server.import_failures() == []
    log = server.log_text()  # the models not prepared are named at start-up with the command, never prepared
    assert "embedded models not prepared" in log and "rezcty_core.embedded prepare" in log
    assert not (scratch["embedded"] / "dinov2-small").exists()


def test_a_loader_whose_model_is_not_prepared_names_the_command(scratch):
    server = scratch["server"]
    err = server.run_error({"d": {"class_type": "RezctyDINOv2Loader",
                                  "inputs": {"model": "embedded: dinov2-small", "device": "cpu", "dtype": "fp32"}},
                            "p": {"class_type": "PreviewAny", "inputs": {"source": ["d", 0]}}})
    assert f"prepare --dest {scratch['embedded']} --only dinov2-small" in err, err
    err = server.run_error({"l": {"class_type": "RezctyLLMLoader",
                                  "inputs": {"base_model": "embedded: SmolLM2-135M-Instruct", "adapter": "none",
                                             "quantization": "none", "keep_loaded": False}},
                            "p": {"class_type": "PreviewAny", "inputs": {"source": ["l", 0]}}})
    assert "--only SmolLM2-135M-Instruct" in err, err
    assert not (scratch["embedded"] / "SmolLM2-135M-Instruct").exists()


def test_text_check_fails_closed_without_its_model_then_runs_on_torch(scratch):
    server, embedded = scratch["server"], scratch["embedded"]
    clean = qc_synth.clean_image(4242, 2310, 1732)  # 4.0 MP
    assert not (embedded / "raw" / "rapidocr_onnxruntime").exists()
    entry = judge(server, "scratch_clean.png", clean)
    assert entry["verdict"] == "reject" and entry["reasons"] == ["check_unavailable"], entry["reasons"]
    assert [nr["check"] for nr in entry["checks_not_run"]] == ["text"]
    assert "prepare --dest" in entry["checks_not_run"][0]["reason"] and "checks not run: text" in entry["summary"]
    # prepared now, while the server runs (prepare alone writes there): the check runs, on torch
    prep = subprocess.run([str(scratch["python"]), "-m", "rezcty_core.embedded", "prepare", "--dest", str(embedded),
                           "--only", "pp-ocrv4", "--cache", str(setup.WHEEL_CACHE)],
                          cwd=REPO, env=scratch["env"], capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    marked = synth_text.watermark(clean, "centre", opacity=0.6, height_pct=6, seed=7)
    entry = judge(server, "scratch_marked.png", marked)
    assert entry["verdict"] == "reject" and "text" in entry["reasons"] and "check_unavailable" not in entry["reasons"]
    assert entry["measurements"]["text_runtime"] == "torch" and entry["measurements"]["text_boxes"] >= 1
    assert "checks_not_run" not in entry
    entry = judge(server, "scratch_clean_again.png", clean)
    assert entry["verdict"] == "pass", entry["reasons"]
    assert entry["measurements"]["text_boxes"] == 0
