"""Session fixtures: one real ComfyUI server for the whole run, and the tiny SD 1.5 checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import ComfyServer, link_model, missing_contract_nodes, tiny_sd15_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> ComfyServer:
    """The real ComfyUI server with this pack loaded, on a free port and a fresh base directory."""
    server = ComfyServer(tmp_path_factory.mktemp("comfy-base"))
    server.start()
    try:
        failures = server.import_failures()
        if failures:
            pytest.fail("custom node import failed:\n" + "\n".join(failures) + "\n" + server.log_tail(), pytrace=False)
        info = server.object_info()
        missing = missing_contract_nodes(info)  # a deleted or broken node fails every test, never a skip
        if missing:
            pytest.fail(f"nodes of docs/CONTRACT.md missing from /object_info: {missing}\n{server.log_tail()}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_sd15(comfy: ComfyServer) -> str:
    """Name of the tiny random SD 1.5 checkpoint inside the server's models/checkpoints/."""
    return link_model(comfy, "checkpoints", tiny_sd15_checkpoint(), "tiny_sd15.safetensors")
