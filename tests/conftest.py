"""Session fixtures: one real ComfyUI server for the whole run, and the tiny SD 1.5 checkpoint."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before torch loads here or in any server, script or kernel the tests start (they inherit it): OpenMP threads that
# wait sleep instead of spinning. Same time on idle cores; with 2 other busy processes on the 2 cores, test_line2_stock
# + test_lora took 55-61 s instead of 136 s (spinning threads of one process steal the core the other one needs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
from harness import REPO, ComfyServer, link_model, missing_contract_nodes, tiny_sd15_checkpoint  # noqa: E402


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only what will run
def pytest_collection_modifyitems(session, config, items) -> None:
    """Slow self-contained fixtures (`harness.prefetch`: the demo, the Colab sessions) start now in their own
    processes, and the modules that use them run last, so they run beside everything else (2 cores, most tests
    keep one busy)."""
    if config.option.collectonly or not harness.prefetch_enabled():
        return
    names = {n for item in items for n in getattr(item, "fixturenames", ()) if n in harness.PREFETCH}
    if not names:
        return
    late = {item.module.__name__ for item in items
            if set(getattr(item, "fixturenames", ())) & names and getattr(item, "module", None)}
    items[:] = [i for i in items if getattr(i, "module", None) is None or i.module.__name__ not in late] + \
               [i for i in items if getattr(i, "module", None) is not None and i.module.__name__ in late]
    for name in sorted(names):
        harness.start_prefetch(name, config._tmp_path_factory)


def pytest_sessionfinish(session, exitstatus) -> None:
    harness.stop_prefetches()


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> ComfyServer:
    """The real ComfyUI server with this pack loaded, on a free port and a fresh base directory."""
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes").mkdir()
    # a test-only probe node beside the pack: it reads torch's global RNG inside the server (tests/fixtures)
    (base / "custom_nodes" / "rezcty_test_rng_probe").symlink_to(REPO / "tests" / "fixtures" / "rng_probe")
    server = ComfyServer(base)
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
