"""colab/rezcty_colab.ipynb executed top to bottom under nbclient, on the CPU, with the embedded models and the
tiny SD 1.5 fixture; a temp folder stands in for Google Drive (ON_COLAB is False here).

Session 1 runs every cell, the workshop included (RUN_WORKSHOP, tiny sets in kohya layout, 1-2 steps, tiny ranks:
precompute_dinov2 -> build_dataset -> train_adapter (LoRA on fp32: the CPU choice) -> train_lora style + structure ->
train_embedding, each checked through the server); then every cell runs again: the line cells queue nothing new and
the workshop cells skip what is trained. Session 2 (a new server and local disk, the same Drive) re-submits a passed
image under another name and QC flags it as a duplicate of session 1's.

The sessions need nothing from the test session (their own servers, Drive and work folders): they run in a process
of their own (`harness.prefetch`; with REZCTY_TEST_PREFETCH=1 started with the session, beside the other tests).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from harness import REPO, free_port, prefetch, prefetched, tiny_sd15_checkpoint
from rezcty_core.stock import agency_csv
from rezcty_core.stock.agencies import load_agency

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
sys.path.insert(0, str(REPO / "tools"))
import lora_files  # noqa: E402
from demo_samples import write_samples  # noqa: E402
from tiny_dataset import make_set  # noqa: E402

NOTEBOOK = REPO / "colab" / "rezcty_colab.ipynb"
TIMINGS: dict[str, float] = {}


# the workshop at test size: 1-2 steps, tiny ranks, 64 px buckets, no held-out generation
WORKSHOP_TINY = {
    "ADAPTER_STEPS": 2, "ADAPTER_GRAD_ACCUM": 1, "ADAPTER_EVAL": 0, "LORA_R": 4, "LORA_ALPHA": 8,
    "STYLE_RANK": 4, "STRUCTURE_RANK": 2, "LORA_STEPS": 1, "EMBEDDING_STEPS": 1,
    "TRAIN_RESOLUTION": 64, "BUCKET_RESO": (64, 128), "SAMPLE_SIZE": 64, "SAMPLE_STEPS": 1,
}


def overrides(drive: Path, work: Path, port: int, extra_images: Path, workshop: bool) -> str:
    """What the test changes, papermill-style: a cell right after the one tagged `parameters`."""
    values = {
        "DRIVE": str(drive), "WORK": str(work), "PACK_DIR": str(REPO), "COMFY_DIR": str(REPO / ".comfyui" / "ComfyUI"),
        "PORT": port, "IDEAS": ["a lighthouse on a cliff"],
        "CHECKPOINT": "tiny_sd15.safetensors", "WIDTH": 64, "HEIGHT": 64, "STEPS": 1, "DETAIL_STEPS": 1, "MAX_NEW_TOKENS": 16, "EXTRA_IMAGES": str(extra_images),
        # the embedded anime Real-ESRGAN (6 blocks, not 23): the x4 model is most of a line-2 render on the CPU
        "LINE2_SET": {"RezctyStockSize.base_scale": 0.125, "LatentUpscaleBy.scale_by": 1.0,
                      "UpscaleModelLoader.model_name": "RealESRGAN_x4plus_anime.safetensors"},
        "RUN_WORKSHOP": workshop, **WORKSHOP_TINY,
    }
    return "\n".join(f"{k} = {v!r}" for k, v in values.items())


def execute(drive: Path, work: Path, port: int, extra_images: Path, label: str, workshop: bool = False) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(overrides(drive, work, port, extra_images, workshop)))
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


def trained_files(drive: Path) -> dict[str, bytes]:
    """What the workshop wrote on Drive: models, checkpoints, the dataset, embeddings manifests, the checks."""
    roots = [drive / "models" / "loras", drive / "models" / "embeddings", drive / "models" / "rezcty_adapters",
             drive / "workshop" / "checks", drive / "workshop" / "adapter_data"]
    return {p.relative_to(drive).as_posix(): p.read_bytes() for r in roots if r.is_dir()
            for p in sorted(r.rglob("*")) if p.is_file()}


def run_sessions(root: Path) -> dict:
    """The three notebook runs (session 1 twice, then session 2 on the same Drive) and what the tests check."""
    drive = root / "drive"
    (drive / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(tiny_sd15_checkpoint(), drive / "models" / "checkpoints" / "tiny_sd15.safetensors")
    (drive / "models" / "embeddings").mkdir()
    lora_files.write_a1111_safetensors(drive / "models" / "embeddings" / "rezcty_genius.safetensors")
    incoming = drive / "incoming"  # only the samples the checks use are painted (4 MP each)
    write_samples(incoming, only=["clean_1.png", "clean_2.png", "defect_blurry.png", "defect_small.png"])

    # the workshop's two caption sets, kohya N_trigger folders as the notebook's markdown asks
    make_set(drive / "workshop" / "10_rezcty_style", "rezcty_style", [(64, 64), (128, 64), (64, 64)], seed=1)
    make_set(drive / "workshop" / "10_rezcty_structure", "rezcty_structure", [(64, 64), (64, 128)], seed=2)

    work1, work2 = root / "work1", root / "work2"
    out: dict = {"drive": drive}
    try:
        port = free_port()
        out["first"] = execute(drive, work1, port, incoming, "session 1, first run", workshop=True)
        out["upload_1"] = sorted(p.name for p in (drive / "upload").iterdir())
        out["queued_1"] = queued_records(drive)
        out["trained_1"] = trained_files(drive)
        out["again"] = execute(drive, work1, port, incoming, "session 1, second run", workshop=True)
        out["trained_2"] = trained_files(drive)
        out["queued_2"] = queued_records(drive)
        out["upload_2"] = sorted(p.name for p in (drive / "upload").iterdir())
        out["extra_qc_1"] = json.loads((drive / "runs" / "run1" / "line3_1" / "qc_report.json").read_text(encoding="utf-8"))
        stop_server(work1)

        resubmit = drive / "incoming_day2"
        resubmit.mkdir()
        shutil.copy2(incoming / "clean_1.png", resubmit / "resubmitted.png")
        shutil.copy2(incoming / "clean_1.txt", resubmit / "resubmitted.txt")
        out["second_session"] = execute(drive, work2, free_port(), resubmit, "session 2 (new server, same Drive)")
    finally:
        stop_server(work1)
        stop_server(work2)
    print("notebook timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()}, flush=True)
    return out


@prefetch("sessions")
def start_sessions(folder: Path) -> subprocess.Popen:
    """`run_sessions` in its own process (this file run as a script), its result pickled into the folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, __file__, str(folder)], cwd=REPO, env=env, start_new_session=True,
                            stdout=open(folder / "sessions.log", "w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    code, folder = prefetched("sessions", tmp_path_factory, timeout=1700)
    log = (folder / "sessions.log").read_text(errors="replace")
    print(log[-6000:])
    assert code == 0 and (folder / "sessions.pkl").is_file(), f"the notebook sessions failed (exit {code}):\n{log[-6000:]}"
    with open(folder / "sessions.pkl", "rb") as f:
        return pickle.load(f)


def test_upload_folder_holds_only_passed_images_and_their_rows(sessions):
    drive = sessions["drive"]
    upload = drive / "upload"
    jpgs = sorted(p.name for p in upload.glob("*.jpg"))
    rows = agency_csv.read_series(load_agency("adobe_stock"), upload / "adobe_stock.csv")
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
    """Line 3's collected result (qc_report.json, one verdict per image, read by the line's declared QC report node)."""
    report = json.loads((sessions["drive"] / "runs" / "run1" / "line3_1" / "qc_report.json").read_text(encoding="utf-8"))
    [entry] = [e for e in report if e["image"] == "resubmitted.png"]
    assert entry["verdict"] == "reject" and "duplicate" in entry["reasons"], report
    [original] = [e for e in sessions["extra_qc_1"] if e["image"] == "clean_1.png"]
    assert original["verdict"] == "pass", sessions["extra_qc_1"]
    assert "duplicate" in cell_output(sessions["second_session"], "build_upload_set")


def test_workshop_trains_each_model_and_checks_it_through_the_server(sessions):
    from rezcty_core.llm.adapter import read_adapter_config
    from rezcty_core.sd.lora_export import read_metadata

    drive, nb = sessions["drive"], sessions["first"]
    ws = drive / "workshop"
    for name in ("10_rezcty_style", "10_rezcty_structure"):   # one embedding file per image, a manifest per set
        lines = [json.loads(x) for x in (ws / "embeddings" / name / "manifest.jsonl").read_text().splitlines()]
        assert len(lines) == len(list((ws / name).glob("*.png"))) and all("embedding" in x for x in lines), lines
    rows = [json.loads(x) for x in (ws / "adapter_data" / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["image_embedding_path"] and r["output_text"] for r in rows), rows
    # the adapter: without a GPU the cell picks LoRA on the fp32 model over NF4 (QLoRA on the CPU: test_qlora_cpu.py)
    text = cell_output(nb, 'train("build_dataset", "whisperer"')
    assert "no GPU: 4bit-nf4 would run through bitsandbytes' CPU kernels" in text, text
    assert "adapter: embedded: SmolLM2-135M-Instruct on the CPU, quantization none, LoRA r4/alpha 8" in text, text
    config = read_adapter_config(drive / "models" / "rezcty_adapters" / "rezcty_whisperer")
    assert config.training["steps"] == 2 and config.training["quantization"] == "none", config.training
    assert config.lora["r"] == 4 and config.lora["alpha"] == 8 and config.projector, config
    expanded = json.loads((ws / "checks" / "adapter" / "outputs.json").read_text())["outputs"]
    assert any(t.strip() for node in expanded.values() for t in node.get("text", [])), expanded
    # the two LoRAs and rezcty_genius, each with the steps and rank asked, each rendered through the server
    for name, trigger, rank in (("rezcty_style", "rezcty_style", "4"), ("rezcty_structure", "rezcty_structure", "2")):
        meta = read_metadata(drive / "models" / "loras" / f"{name}.safetensors")
        assert meta["rezcty_trigger"] == trigger and meta["ss_network_dim"] == rank, meta
        assert json.loads(meta["rezcty_args"])["steps_done"] == 1
    meta = read_metadata(drive / "models" / "embeddings" / "rezcty_genius.safetensors")
    assert meta["rezcty_role"] == "embedding" and json.loads(meta["rezcty_args"])["steps_done"] == 1, meta
    for check in ("loras", "genius"):
        assert len(list((ws / "checks" / check).glob("*.png"))) == 1, sorted((ws / "checks" / check).iterdir())


def test_rerunning_the_workshop_skips_what_is_trained_and_duplicates_nothing(sessions):
    assert sessions["trained_2"].keys() == sessions["trained_1"].keys()
    changed = [k for k in sessions["trained_1"] if sessions["trained_1"][k] != sessions["trained_2"][k]]
    assert not changed, changed
    again = sessions["again"]
    text = "".join(cell_output(again, marker) for marker in ('train("build_dataset", "whisperer"', 'train_sd("train_lora"',
                                                             'train_sd("train_embedding"'))
    for name in ("rezcty_whisperer", "rezcty_style.safetensors", "rezcty_structure.safetensors", "rezcty_genius.safetensors"):
        assert f"{name}: already trained" in text, text
    for check in ("adapter", "loras", "genius"):
        assert f"check {check}: already done" in text, text
    lines = [json.loads(x) for m in (sessions["drive"] / "workshop" / "embeddings").glob("*/manifest.jsonl")
             for x in m.read_text().splitlines()]
    assert len(lines) == 5 and all(x["status"] == "cached" for x in lines), lines


def test_colab_only_calls_are_guarded_by_on_colab():
    """drive.mount, serve_kernel_port_as_window and the Hugging Face downloads each sit under an `if` on ON_COLAB
    (the downloads also need DOWNLOAD_MODELS), so the notebook runs anywhere with a temp folder for Drive."""
    import ast

    guarded = {"mount", "serve_kernel_port_as_window", "hf_hub_download", "snapshot_download"}
    found: dict[str, str] = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            name = getattr(getattr(node, "func", None), "attr", None) or getattr(getattr(node, "func", None), "id", None)
            if isinstance(node, ast.Call) and name in guarded:
                tests, up = [], node
                while up in parents:
                    child, up = up, parents[up]
                    if isinstance(up, ast.If) and child in up.body:
                        tests.append(ast.unparse(up.test))
                found[name] = " / ".join(tests)
    assert found.keys() == guarded, found
    assert all("ON_COLAB" in t for t in found.values()), found
    assert all("DOWNLOAD_MODELS" in found[n] for n in ("hf_hub_download", "snapshot_download")), found


if __name__ == "__main__":  # the prefetched sessions (start_sessions): python tests/test_colab.py FOLDER
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped session still stops its servers (finally)
    target = Path(sys.argv[1])
    result = run_sessions(target)
    with open(target / "sessions.pkl.part", "wb") as f:
        pickle.dump(result, f)
    os.replace(target / "sessions.pkl.part", target / "sessions.pkl")
