"""The headless client (rezcty_core.client) against the real ComfyUI server: check, run, batch, pool, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import REPO, ComfyServer, batch_manifest, done_records, sd15_graph, wait_for
from rezcty_core.factory.errors import ClientError
from rezcty_core.factory.workflow import apply_sets

PY = sys.executable


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "rezcty_core.client", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def write_json(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj))
    return path


def scale_graph(image: str = "missing.png") -> dict:
    """LoadImage -> ImageScaleBy x2 -> SaveImage, plus the size shown as text."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}, "_meta": {"title": "Source"}},
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "scale_by": 2.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "client/scaled"}},
        "4": {"class_type": "GetImageSize", "inputs": {"image": ["2", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}, "_meta": {"title": "Width"}},
    }


def make_images(folder: Path, n: int, size: int = 24, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, (size, size + i, 3), dtype=np.uint8)
        p = folder / f"img_{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


manifest = batch_manifest


# ---------------------------------------------------------------------------------------------
# checking and single runs

def test_check_lists_every_problem_before_queueing(comfy, tmp_path):
    graph = sd15_graph("no_such_model.safetensors")
    graph["5"]["inputs"]["sampler_name"] = "warp_drive"
    graph["5"]["inputs"]["steps"] = 0
    graph["4"]["inputs"]["width"] = 999999
    graph["6"]["inputs"]["vae"] = ["1", 7]
    graph["8"] = {"class_type": "RezctyNoSuchNode", "inputs": {}}
    history_before = comfy.get("/history")
    res = cli("check", str(write_json(tmp_path / "bad.json", graph)), "--server", comfy.url)
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr
    assert "missing node type 'RezctyNoSuchNode'" in err
    assert "missing model 'no_such_model.safetensors'" in err and "models/checkpoints/" in err
    assert "bad value 'warp_drive'" in err
    assert "node 5 (KSampler).steps: 0 is out of range (minimum 1)" in err
    assert "999999 is out of range (maximum" in err
    assert "output 7 of node 1 (CheckpointLoaderSimple), which has only 3 outputs" in err
    assert comfy.get("/history") == history_before  # nothing was queued


def test_run_uploads_a_local_file_sets_inputs_and_downloads_outputs(comfy, tmp_path):
    src = make_images(tmp_path / "src", 1, size=20)[0]
    wf = write_json(tmp_path / "scale.json", scale_graph())
    out = tmp_path / "out"
    res = cli("run", str(wf), "--server", comfy.url, "--set", f"Source.image={src}", "--set", "2.scale_by=3",
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 1
    with Image.open(pngs[0]) as im:
        assert im.size == (60, 60)
    assert "Width [5]: 60" in res.stdout
    saved = json.loads((out / "outputs.json").read_text())
    assert saved["outputs"]["3"]["images"][0]["filename"] == pngs[0].name
    # the upload landed in the server's input/ under a content-hashed name
    assert list((comfy.input_dir / "rezcty").glob(f"*_{src.name}"))


def test_run_reports_the_failing_node(comfy, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    wf = write_json(tmp_path / "scale.json", scale_graph())
    res = cli("run", str(wf), "--server", comfy.url, "--set", f"1.image={bad}")
    assert res.returncode == 2
    assert "node 1 (LoadImage) failed" in res.stderr


def test_ui_format_and_bad_set_are_clear_errors(comfy, tmp_path):
    res = cli("run", str(REPO / "workflows" / "ui" / "line1_prompts.json"), "--server", comfy.url)
    assert res.returncode == 2 and "UI-format workflow" in res.stderr
    wf = write_json(tmp_path / "scale.json", scale_graph())
    res = cli("run", str(wf), "--server", comfy.url, "--set", "Nope.image=x")
    assert res.returncode == 2 and "no node 'Nope'" in res.stderr


def test_unreachable_server_is_a_clear_error(tmp_path):
    from harness import free_port

    wf = write_json(tmp_path / "scale.json", scale_graph())
    res = cli("run", str(wf), "--server", f"http://127.0.0.1:{free_port()}")
    assert res.returncode == 2 and "is not reachable" in res.stderr


def test_set_parses_values_by_the_input_type():
    graph = scale_graph()
    apply_sets(graph, ["2.scale_by=2.5", "Source.image=123", "3.filename_prefix=a=b"])
    assert graph["2"]["inputs"]["scale_by"] == 2.5
    assert graph["1"]["inputs"]["image"] == "123"  # stays text: the input is text
    assert graph["3"]["inputs"]["filename_prefix"] == "a=b"
    apply_sets(graph, ["3.images=null"])  # null disconnects a linked input
    assert "images" not in graph["3"]["inputs"]
    with pytest.raises(ClientError, match="expected NODE.INPUT=VALUE"):
        apply_sets(graph, ["2.scale_by"])


# ---------------------------------------------------------------------------------------------
# batches

def test_batch_with_one_broken_item_finishes_the_rest_and_resume_does_nothing_twice(comfy, tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 3)
    (folder / "img_01b.png").write_bytes(b"\x89PNG broken")
    (folder / "img_00.txt").write_text("a red square")  # sidecar prompt travels with the image
    wf = write_json(tmp_path / "scale.json", scale_graph())
    out = tmp_path / "batch"
    res = cli("batch", str(wf), "--server", comfy.url, "--images", str(folder), "--out", str(out), "--quiet")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "3 done, 1 failed, 0 pending" in res.stdout
    results = json.loads((out / "results.json").read_text())
    status = {r["label"]: r["status"] for r in results}
    assert status == {"img_00.png": "done", "img_01.png": "done", "img_01b.png": "failed", "img_02.png": "done"}
    assert "LoadImage" in next(r["error"] for r in results if r["label"] == "img_01b.png")
    assert len(list((out / "files").glob("*.png"))) == 3
    first = out / results[0]["files"][0]
    assert first.with_suffix(".txt").read_text().strip() == "a red square"
    # a second run has nothing left to do: no new prompt, no new file
    lines_before = len(manifest(out))
    res = cli("batch", str(wf), "--server", comfy.url, "--images", str(folder), "--out", str(out), "--quiet")
    assert res.returncode == 1 and "3 done, 1 failed" in res.stdout
    new = manifest(out)[lines_before:]
    assert [r.get("event") for r in new] == ["start", "end"]
    assert all(len(v) == 1 for v in done_records(out).values())


def test_batch_refuses_a_workflow_that_does_not_fit_before_queueing(comfy, tmp_path):
    (tmp_path / "ideas.txt").write_text("a cat\na dog\n")
    wf = write_json(tmp_path / "g.json", sd15_graph("absent.safetensors"))
    res = cli("batch", str(wf), "--server", comfy.url, "--ideas", str(tmp_path / "ideas.txt"), "--bind", "2.text",
              "--out", str(tmp_path / "b"), "--quiet")
    assert res.returncode == 2
    assert "missing model 'absent.safetensors'" in res.stderr
    assert not (tmp_path / "b" / "manifest.jsonl").exists()  # refused before any item was queued


def _count_done(out: Path) -> int:
    try:
        return len(done_records(out))
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def second_server(tmp_path_factory, comfy):
    server = ComfyServer(tmp_path_factory.mktemp("comfy-second"))
    server.start()
    yield server
    server.stop()


def _work(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """A batch of n distinct 512 px images, each upscaled x4 and saved: about a second of work per item."""
    wf = scale_graph()
    wf["2"]["inputs"]["scale_by"] = 4.0
    return write_json(tmp_path / "scale4.json", wf), make_images(tmp_path / "images", n, size=512)[0].parent


def test_pool_shares_a_batch_and_survives_a_killed_server_without_duplicates(comfy, second_server, tmp_path):
    wf, images = _work(tmp_path, 8)
    out = tmp_path / "pool"
    proc = subprocess.Popen([PY, "-m", "rezcty_core.client", "batch", str(wf), "--server", comfy.url,
                             "--server", second_server.url, "--images", str(images),
                             "--out", str(out), "--server-timeout", "5", "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # both servers take items; then the second one dies in the middle of the batch
        wait_for(lambda: {r["server"] for recs in (done_records(out) if (out / "manifest.jsonl").exists() else {}).values()
                           for r in recs} >= {comfy.url, second_server.url} or proc.poll() is not None,
                  what="both servers to finish an item")
        second_server.kill()
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    assert "8 done, 0 failed, 0 pending" in stdout
    done = done_records(out)
    assert len(done) == 8 and all(len(v) == 1 for v in done.values())
    servers = {recs[0]["server"] for recs in done.values()}
    assert comfy.url in servers and second_server.url in servers
    assert len(list((out / "files").glob("*.png"))) == 8
    labels = [r["label"] for r in json.loads((out / "results.json").read_text())]
    assert labels == [f"img_{i:02d}.png" for i in range(8)]


def test_batch_interrupted_by_killing_the_server_resumes_to_completion(second_server, tmp_path):
    if second_server.proc is None or second_server.proc.poll() is not None:
        second_server.start()  # the pool test above killed it
    wf, images = _work(tmp_path, 6)
    out = tmp_path / "killed"
    args = [PY, "-m", "rezcty_core.client", "batch", str(wf), "--server", second_server.url, "--images", str(images),
            "--out", str(out), "--server-timeout", "3", "--quiet"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _count_done(out) >= 1 or proc.poll() is not None, what="an item done")
        second_server.kill()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _count_done(out) < 6, "the batch finished before the server was killed; nothing was interrupted"
    assert proc.returncode == 3, stdout + stderr
    assert "pending" in stdout and "run the same command again to resume" in stdout
    # the server comes back (same port, same folders), the same command resumes
    second_server.start()
    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "6 done, 0 failed, 0 pending" in res.stdout
    done = done_records(out)
    assert len(done) == 6 and all(len(v) == 1 for v in done.values())
    assert len(list((out / "files").glob("*.png"))) == 6


def test_killed_client_resumes_by_collecting_what_the_server_already_ran(comfy, tmp_path):
    wf, images = _work(tmp_path, 4)
    out = tmp_path / "client-killed"
    args = [PY, "-m", "rezcty_core.client", "batch", str(wf), "--server", comfy.url, "--images", str(images),
            "--out", str(out), "--quiet"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)

    def queued_not_done() -> list[dict]:
        if not (out / "manifest.jsonl").exists():
            return []
        state: dict[str, dict] = {}
        for rec in manifest(out):
            if rec.get("key"):
                state[rec["key"]] = rec
        return [r for r in state.values() if r["status"] == "queued"]

    try:
        wait_for(lambda: queued_not_done() or proc.poll() is not None, what="an item queued")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    in_flight = queued_not_done()
    assert in_flight, "the client finished before it could be killed"
    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    done = done_records(out)
    assert len(done) == 4 and all(len(v) == 1 for v in done.values())
    # the prompt in flight when the client died was collected, not queued a second time
    for rec in in_flight:
        assert done[rec["key"]][0]["prompt_id"] == rec["prompt_id"]
    assert len(list((out / "files").glob("*.png"))) == 4
