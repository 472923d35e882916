"""train_embedding (rezcty_genius) on the tiny SD 1.5 fixture: trains over both sets, resumes, refuses a LoRA
trigger as token, and the file loads in the real ComfyUI (`embedding:` syntax and the Embedding Bridge)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from harness import CACHE, REPO, link_model, sd15_graph, tiny_sd15_checkpoint
from rezcty_core.sd.lora_export import read_metadata
from training import train_embedding

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from tiny_dataset import make_dataset  # noqa: E402

SMALL = ["--resolution", "128", "--min-bucket-reso", "64", "--max-bucket-reso", "128"]


def embedding_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.train_embedding", "--data", str(data), "--base", str(tiny_sd15_checkpoint()),
            "--out", str(out), "--token", "rezcty_genius", "--num-vectors", "2", "--lr", "5e-2", *SMALL,
            "--cache-dir", str(CACHE / "test-latents"), "--save-every", "1", *extra]


@pytest.fixture(scope="module")
def genius(tmp_path_factory) -> dict:
    """One step, then --resume to two steps, over the union of the style and structure sets."""
    root = tmp_path_factory.mktemp("ti")
    data = make_dataset(root / "sets")
    out = root / "out" / "rezcty_genius.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(embedding_command(data, out, "--max-steps", "1"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stderr[-3000:]
    first_vectors = load_file(str(out))["emb_params"].clone()
    second = subprocess.run(embedding_command(data, out, "--max-steps", "2", "--resume"), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1500)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"path": out, "first": first, "second": second, "first_vectors": first_vectors}


def test_embedding_file_metadata_and_resume(genius):
    assert "[train_embedding] resumed from step 1" in genius["second"].stdout
    sd = load_file(str(genius["path"]))
    assert list(sd) == ["emb_params"] and sd["emb_params"].shape == (2, 768)
    assert not np.allclose(sd["emb_params"].numpy(), genius["first_vectors"].numpy())  # step 2 moved it
    meta = read_metadata(genius["path"])
    assert meta["rezcty_trigger"] == "rezcty_genius" and meta["rezcty_role"] == "embedding"
    assert meta["rezcty_num_vectors"] == "2" and len(meta["rezcty_base_hash"]) == 64
    args = json.loads(meta["rezcty_args"])
    assert args["steps_done"] == 2 and args["num_vectors"] == 2 and len(args["data"]) == 1


def test_token_equal_to_a_lora_trigger_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path)
    for token in ("rezcty_style", "rezcty_structure"):
        code = train_embedding.main(["--data", str(data), "--base", str(tmp_path / "unused.safetensors"),
                                     "--out", str(tmp_path / "e.safetensors"), "--token", token])
        assert code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"train_embedding: --token '{token}' equals a LoRA trigger"), err


def test_token_captions_replace_the_lora_triggers():
    items = [type("I", (), {"caption": c})() for c in ("a hill, rezcty_structure", "a cube, rezcty_style", "a cup")]
    train_embedding.token_captions(items, "rezcty_genius rezcty_genius_1", {"rezcty_style", "rezcty_structure"})
    assert [it.caption for it in items] == ["a hill, rezcty_genius rezcty_genius_1", "a cube, rezcty_genius rezcty_genius_1",
                                            "a cup, rezcty_genius rezcty_genius_1"]


def _pixels(comfy, result) -> np.ndarray:
    with Image.open(comfy.output_file(result.ui("7")["images"][0])) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_embedding_loads_in_comfyui(comfy, tiny_sd15, genius):
    name = link_model(comfy, "embeddings", genius["path"])
    stem = Path(name).stem
    base = _pixels(comfy, comfy.run(sd15_graph(tiny_sd15, text="a red cube", seed=9, prefix="ti_base")))
    log_start = len(comfy.log_text())
    with_emb = _pixels(comfy, comfy.run(sd15_graph(tiny_sd15, text=f"a red cube embedding:{stem}", seed=9,
                                                   prefix="ti_core")))
    new_log = comfy.log_text()[log_start:]
    assert "does not exist" not in new_log and "error loading embedding" not in new_log, new_log[-3000:]
    assert np.abs(with_emb - base).max() > 0, "the embedding did not change the render"

    if "RezctyEmbeddingBridge" not in comfy.object_info():
        pytest.skip("RezctyEmbeddingBridge is not registered yet (issue 8)")
    graph = sd15_graph(tiny_sd15, seed=9, prefix="ti_bridge")
    graph["2"] = {"class_type": "RezctyEmbeddingBridge", "inputs": {
        "clip": ["1", 1], "text": "a red cube, rezcty_genius", "embedding": name, "weight": 1.0}}
    result = comfy.run(graph)
    shown = "\n".join(result.text("2"))
    assert "rezcty_genius" in shown and "2 vectors" in shown, shown
    assert np.abs(_pixels(comfy, result) - base).max() > 0
