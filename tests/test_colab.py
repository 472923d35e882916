"""colab/rezcty_colab.ipynb executed top to bottom under nbclient, on the CPU, with the embedded models and the
tiny SD 1.5 fixture; a temp folder stands in for Google Drive (ON_COLAB is False here).

Session 1 runs every cell; the line cells run again and queue nothing new; session 2 (a new server and local
disk, the same Drive) re-submits a passed image under another name and QC flags it as a duplicate of session 1's.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from harness import REPO, free_port, tiny_sd15_checkpoint
from rezcty_core.stock.adobe_csv import read_rows

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
sys.path.insert(0, str(REPO / "tools"))
import lora_files  # noqa: E402
from demo_samples import write_samples  # noqa: E402

NOTEBOOK = REPO / "colab" / "rezcty_colab.ipynb"
TIMINGS: dict[str, float] = {}


def overrides(drive: Path, work: Path, port: int, extra_images: Path) -> str:
    """What the test changes, papermill-style: a cell right after the one tagged `parameters`."""
    values = {
        "DRIVE": str(drive), "WORK": str(work), "PACK_DIR": str(REPO), "COMFY_DIR": str(REPO / ".comfyui" / "ComfyUI"),
        "PORT": port, "IDEAS": ["a lighthouse on a cliff"],
        "CHECKPOINT": "tiny_sd15.safetensors", "WIDTH": 64, "HEIGHT": 64, "STEPS": 1, "MAX_NEW_TOKENS": 16, "EXTRA_IMAGES": str(extra_images), "RUN_WORKSHOP": False,
        "LINE2_SET": {"RezctyStockSize.base_scale": 0.125, "LatentUpscaleBy.scale_by": 1.0},
    }
    return "\n".join(f"{k} = {v!r}" for k, v in values.items())


def execute(drive: Path, work: Path, port: int, extra_images: Path, label: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(overrides(drive, work, port, extra_images)))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    TIMINGS[label] = time.time() - t0
    print(f"notebook {label}: {TIMINGS[label]:.1f} s; per cell:", cell_seconds(nb), flush=True)
    return nb


def cell_seconds(nb) -> list[tuple[str, float]]:
    from datetime import datetime

    out = []
    for cell in nb.cells:
        times = cell.metadata.get("execution", {})
        if "shell.execute_reply" in times and "iopub.execute_input" in times:
            start, end = (datetime.fromisoformat(times[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            out.append((cell.source.splitlines()[0][:40], round((end - start).total_seconds(), 1)))
    return out


def stop_server(work: Path) -> None:
    pid_file = work / "comfyui.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink()


def cell_output(nb, marker: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "code" and marker in cell.source:
            return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    raise AssertionError(f"no cell with {marker!r}")


def queued_records(drive: Path) -> int:
    return sum(1 for m in (drive / "runs").rglob("manifest.jsonl")
               for line in m.read_text(encoding="utf-8").splitlines() if '"queued"' in line)


def sidecars(drive: Path) -> dict[str, dict]:
    """Sidecar JSON by path inside output/stock/ (`NAME.json`, `rejected/NAME.json`: the same name may be in both)."""
    root = drive / "output" / "stock"
    return {p.relative_to(root).as_posix(): json.loads(p.read_text(encoding="utf-8")) for p in root.rglob("*.json")}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("colab")
    drive = root / "drive"
    (drive / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(tiny_sd15_checkpoint(), drive / "models" / "checkpoints" / "tiny_sd15.safetensors")
    (drive / "models" / "embeddings").mkdir()
    lora_files.write_a1111_safetensors(drive / "models" / "embeddings" / "rezcty_genius.safetensors")
    samples = root / "samples"
    write_samples(samples)
    incoming = drive / "incoming"
    incoming.mkdir()
    for name in ("clean_1", "clean_2", "defect_blurry", "defect_small"):
        for ext in (".png", ".txt"):
            shutil.copy2(samples / f"{name}{ext}", incoming / f"{name}{ext}")

    work1, work2 = root / "work1", root / "work2"
    out: dict = {"drive": drive}
    try:
        port = free_port()
        out["first"] = execute(drive, work1, port, incoming, "session 1, first run")
        out["upload_1"] = sorted(p.name for p in (drive / "upload").iterdir())
        out["queued_1"] = queued_records(drive)
        out["again"] = execute(drive, work1, port, incoming, "session 1, second run")
        out["queued_2"] = queued_records(drive)
        out["upload_2"] = sorted(p.name for p in (drive / "upload").iterdir())
        out["extra_rows_1"] = json.loads((drive / "runs" / "run1" / "line3_1" / "results.json").read_text(encoding="utf-8"))
        stop_server(work1)

        resubmit = drive / "incoming_day2"
        resubmit.mkdir()
        shutil.copy2(incoming / "clean_1.png", resubmit / "resubmitted.png")
        shutil.copy2(incoming / "clean_1.txt", resubmit / "resubmitted.txt")
        out["second_session"] = execute(drive, work2, free_port(), resubmit, "session 2 (new server, same Drive)")
    finally:
        stop_server(work1)
        stop_server(work2)
    print("notebook timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})
    return out


def test_upload_folder_holds_only_passed_images_and_their_rows(sessions):
    drive = sessions["drive"]
    upload = drive / "upload"
    jpgs = sorted(p.name for p in upload.glob("*.jpg"))
    rows = read_rows(upload / "adobe_stock.csv")
    assert jpgs and sorted(r["Filename"] for r in rows) == jpgs
    assert all(r["Title"] and r["Keywords"] and r["Category"] for r in rows)
    meta = sidecars(drive)
    for name in jpgs:
        side = meta[Path(name).with_suffix(".json").name]
        assert side["qc_verdict"] == "pass" and side["subfolder"] == "stock", side
        assert (upload / name).read_bytes() == (drive / "output" / "stock" / name).read_bytes()  # never rejected/NAME
    rejected = [k for k, m in meta.items() if m["qc_verdict"] == "reject"]
    assert rejected and all(k.startswith("rejected/") for k in rejected)
    assert set(p.name for p in upload.iterdir()) == {*jpgs, "adobe_stock.csv"}
    # the last cell counts verdicts and reasons and shows the contact sheet inline
    text = cell_output(sessions["first"], "build_upload_set")
    assert f"{len(jpgs)} passed image(s)" in text and "verdicts: " in text and "low_resolution" in text, text
    shown = [o for c in sessions["first"].cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert shown, "no contact sheet shown inline"


def test_line3_says_measurements_only_without_a_judge_adapter(sessions):
    text = cell_output(sessions["first"], "use_llm = JUDGE_ADAPTER")
    assert "QC by the measurements only, metadata from the offline writer" in text, text


def test_second_run_queues_nothing_new(sessions):
    assert sessions["queued_1"] > 0
    assert sessions["queued_2"] == sessions["queued_1"]
    assert sessions["upload_2"] == sessions["upload_1"]


def test_second_session_flags_a_resubmitted_image_as_duplicate(sessions):
    rows = json.loads((sessions["drive"] / "runs" / "run1" / "line3_1" / "results.json").read_text(encoding="utf-8"))
    row = next(r for r in rows if r["label"] == "resubmitted.png")
    entries = [e for text in row["texts"]["7"] for e in json.loads(text)]
    assert entries and entries[0]["verdict"] == "reject" and "duplicate" in entries[0]["reasons"], entries
    original = next(r for r in sessions["extra_rows_1"] if r["label"] == "clean_1.png")
    assert json.loads(original["texts"]["7"][0])[0]["verdict"] == "pass"
    assert "duplicate" in cell_output(sessions["second_session"], "build_upload_set")
