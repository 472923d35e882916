"""`./rezcty test` runs tests/ whether or not a path is given: with flags only (`./rezcty test -x -q`) pytest would
otherwise collect the repo root's `__init__.py` (the pack, which needs ComfyUI) and stop on `No module named 'comfy_api'`."""
from __future__ import annotations

import subprocess
import sys

from harness import REPO

sys.path.insert(0, str(REPO / "tools"))
import rezcty  # noqa: E402

ONE = "test_the_numeric_id_check_catches_what_it_names"  # a static test of tests/test_lines.py: quick to run


def rezcty_test(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "rezcty"), "test", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_flags_only_run_the_tests_folder():
    res = rezcty_test("-x", "-q", "-k", ONE)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "1 passed" in out, out[-3000:]
    assert "comfy_api" not in out and " tests\n" in out  # the command it ran ends with the tests folder


def test_a_path_runs_only_that_path():
    res = rezcty_test("-x", "-q", "tests/test_lines.py", "-k", ONE)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "1 passed" in out, out[-3000:]
    assert "tests/test_lines.py -k " + ONE + "\n" in out, out[-3000:]


def test_which_arguments_name_a_path():
    assert rezcty.pytest_args([]) == ["tests"]
    assert rezcty.pytest_args(["-x", "-q", "-k", "lines", "--durations", "80"])[-1] == "tests"
    assert rezcty.pytest_args(["-x", "tests/test_lines.py"]) == ["-x", "tests/test_lines.py"]
    assert rezcty.pytest_args(["tests/test_lines.py::test_x", "-q"]) == ["tests/test_lines.py::test_x", "-q"]
