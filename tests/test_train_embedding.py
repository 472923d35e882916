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
from tiny_dataset import make_dataset, make_set  # noqa: E402

SMALL = ["--resolution", "128", "--min-bucket-reso", "64", "--max-bucket-reso", "128"]


def plain_sets(root: Path, size: int = 64) -> list[Path]:
    """The brief's rezcty_genius data as a user keeps it: two plain folders (no kohya `N_name`), one per LoRA."""
    make_set(root / "style", "rezcty_style", [(size, size), (2 * size, size), (size, size)], seed=1)
    make_set(root / "structure", "rezcty_structure", [(size, size), (size, 2 * size)], seed=2)
    return [root / "style", root / "structure"]


def embedding_command(data: list[Path], out: Path, *extra: str) -> list[str]:
    sets = [a for d in data for a in ("--data", str(d))]
    return [sys.executable, "-m", "training.train_embedding", *sets, "--base", str(tiny_sd15_checkpoint()),
            "--out", str(out), "--token", "rezcty_genius", "--num-vectors", "2", "--lr", "5e-2", *SMALL,
            "--cache-dir", str(CACHE / "test-latents"), "--save-every", "1", *extra]


@pytest.fixture(scope="module")
def genius(tmp_path_factory) -> dict:
    """One step, then --resume to two steps, over the union of the style and structure sets (two plain folders)."""
    root = tmp_path_factory.mktemp("ti")
    data = plain_sets(root / "sets")
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
    assert args["steps_done"] == 2 and args["num_vectors"] == 2 and len(args["data"]) == 2


def _lint(sets: list[Path], *extra: str) -> None:
    args = train_embedding.parse_args([a for d in sets for a in ("--data", str(d))] + [
        "--base", "unused.safetensors", "--out", "e.safetensors", "--token", "rezcty_genius", *extra])
    triggers = train_embedding.check_token(args)
    own = train_embedding.set_triggers(args)
    train_embedding.lint_sets(args, own, triggers | {t for t in own if t})


def test_each_set_is_linted_with_its_own_trigger(tmp_path, capsys):
    sets = plain_sets(tmp_path)
    assert [train_embedding.set_trigger(d, None) for d in sets] == ["rezcty_style", "rezcty_structure"]
    _lint(sets)  # the captions' common last word
    _lint(sets, "--trigger", "rezcty_style", "--trigger", "rezcty_structure")
    _lint([make_dataset(tmp_path / "kohya")])  # kohya folder names
    assert capsys.readouterr().err == ""


def test_another_sets_trigger_is_still_refused(tmp_path, capsys):
    sets = plain_sets(tmp_path)
    bad = sets[0] / "img01.txt"
    bad.write_text("a blue square beside a wall, rezcty_structure, rezcty_style\n", encoding="utf-8")
    with pytest.raises(train_embedding.TrainingError, match=r"1 caption file\(s\) in .*style break the caption rules"):
        _lint(sets)
    err = capsys.readouterr().err
    assert f"{bad}: other_trigger" in err and "img00" not in err, err
    # a custom trigger of one set is refused in the other set too
    (sets[0] / "img01.txt").write_text("a blue square beside a wall, my_style\n", encoding="utf-8")
    for p in sets[0].glob("*.txt"):
        p.write_text(p.read_text().replace("rezcty_style", "my_style"), encoding="utf-8")
    (sets[1] / "img00.txt").write_text("a red circle on a plain background, my_style, rezcty_structure\n", encoding="utf-8")
    with pytest.raises(train_embedding.TrainingError, match="structure break the caption rules"):
        _lint(sets)
    assert f"{sets[1] / 'img00.txt'}: other_trigger" in capsys.readouterr().err
    with pytest.raises(train_embedding.TrainingError, match="one --trigger per --data"):
        _lint(sets, "--trigger", "my_style")


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

    graph = sd15_graph(tiny_sd15, seed=9, prefix="ti_bridge")
    graph["2"] = {"class_type": "RezctyEmbeddingBridge", "inputs": {
        "clip": ["1", 1], "text": "a red cube, rezcty_genius", "embedding": name, "weight": 1.0}}
    result = comfy.run(graph)
    shown = "\n".join(result.text("2"))
    assert "rezcty_genius" in shown and "2 vectors" in shown, shown
    assert np.abs(_pixels(comfy, result) - base).max() > 0
