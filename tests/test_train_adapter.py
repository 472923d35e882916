"""training.train_adapter end to end: dataset checks, output folder, metrics, resume, the embedded models."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from fixtures.tiny_llm import EYE_DIM, tiny_llm_dir, write_dataset, write_embedding
from safetensors.torch import load_file

from harness import REPO
from rezcty_core.llm import model as core
from rezcty_core.llm.adapter import read_adapter_config
from rezcty_core.llm.embedded import SMOLLM2_NAME
from training import train_adapter

FAST = ["--grad-accum", "2", "--lora-r", "4", "--lora-alpha", "8", "--eval-generate", "1",
        "--eval-max-new-tokens", "4", "--no-gradient-checkpointing"]


def train(data, out, *extra: str, base=None) -> int:
    return train_adapter.main(["--data", str(data), "--base-model", str(base or tiny_llm_dir()), "--out", str(out),
                               *FAST, *extra])


def metrics(out) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_help_names_the_contract_flags():
    res = subprocess.run([sys.executable, "-m", "training.train_adapter", "--help"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0
    for flag in ("--data", "--base-model", "--out", "--specialist", "--max-steps", "--resume", "--strict"):
        assert flag in res.stdout


def test_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=6)
    write_embedding(tmp_path / "data" / "embeddings" / "other.safetensors", torch.randn(768), model="dinov2-base",
                    model_hash="otherhash")
    with open(data, "a") as fh:
        fh.write('{"input_text": "a cat", "output_text": \n')                                          # line 7
        fh.write('{"input_text": "a dog"}\n')                                                         # line 8
        fh.write('{"input_text": "a cow", "output_text": "x", "image_embedding_path": "embeddings/gone.safetensors"}\n')
        fh.write('{"input_text": "a fox", "output_text": "y", "image_embedding_path": "embeddings/other.safetensors"}\n')
    out = tmp_path / "adapter"
    assert train(data, out, "--max-steps", "2") == 0
    err = capsys.readouterr().err
    assert f"{data}:7: not valid JSON" in err
    assert f"{data}:8: missing 'output_text'" in err
    assert f"{data}:9: embedding file embeddings/gone.safetensors not found" in err
    assert f"{data}:10: embedding from model hash otherhash dim 768" in err and "refused" in err
    assert f"{data}:3:" not in err  # good lines are not named
    # the adapter folder: LoRA + projector apart + config naming specialist, base and eye
    cfg = read_adapter_config(out)
    assert cfg.specialist == "whisperer" and cfg.base_model["hash"] and cfg.base_model["hidden_size"] == 64
    assert cfg.eye["dim"] == EYE_DIM and cfg.eye["model"] == "tiny-random-eye" and cfg.eye["pooling"] == "cls"
    assert cfg.projector["type"] == "mlp2x_gelu" and cfg.lora["r"] == 4 and cfg.template["name"] == "whisperer"
    assert {"projector.safetensors", "adapter_model.safetensors", "adapter_config.json", "eval.json"} <= {p.name for p in out.iterdir()}
    rows = metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and all(r["loss"] > 0 for r in rows if "loss" in r)
    assert rows[-1]["split"] == "eval" and {"eval_loss", "bleu", "rouge_l"} <= set(rows[-1])
    assert core.load_llm(tiny_llm_dir(), out).can_see


def test_strict_fails_on_the_first_bad_line(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=4)
    with open(data, "a") as fh:
        fh.write("not json\n")
    assert train(data, tmp_path / "out", "--strict") != 0
    assert f"{data}:5: not valid JSON" in capsys.readouterr().err
    assert train(tmp_path / "missing.jsonl", tmp_path / "out") != 0
    assert "missing.jsonl: dataset file not found" in capsys.readouterr().err


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=6)
    full = tmp_path / "full"
    assert train(data, full, "--max-steps", "4", "--save-every", "2", "--stage1-steps", "1") == 0
    # the same run "killed" after its step-2 checkpoint: later checkpoints and outputs never written
    cut = tmp_path / "cut"
    shutil.copytree(full / "checkpoints" / "step-0000002", cut / "checkpoints" / "step-0000002")
    (cut / "metrics.jsonl").write_text("".join(ln + "\n" for ln in (full / "metrics.jsonl").read_text().splitlines()[:3]))
    capsys.readouterr()
    assert train(data, cut, "--max-steps", "4", "--save-every", "2", "--stage1-steps", "1", "--resume") == 0
    assert "resuming from step-0000002 (step 2 of 4)" in capsys.readouterr().err
    steps = [r["step"] for r in metrics(cut) if r.get("split", "train") == "train"]
    assert steps == [1, 2, 3, 4]
    assert [r["stage"] for r in metrics(full) if "stage" in r] == [1, 2, 2, 2]
    for name in ("adapter_model.safetensors", "projector.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(cut / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_judge_text_only_adapter_and_bad_judge_json(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=4, images=False, specialist="judge")
    with open(data, "a") as fh:
        fh.write(json.dumps({"input_text": "judge", "output_text": "{not json"}) + "\n")
        fh.write(json.dumps({"input_text": "judge", "output_text": {"title": "no verdict"}}) + "\n")
    out = tmp_path / "judge"
    assert train(data, out, "--specialist", "judge", "--max-steps", "1") == 0
    err = capsys.readouterr().err
    assert f"{data}:5: judge output_text is not valid JSON" in err
    assert f"{data}:6: judge output_text must be a JSON object with at least 'verdict'" in err
    cfg = read_adapter_config(out)
    assert cfg.specialist == "judge" and cfg.projector is None and cfg.eye is None
    assert not (out / "projector.safetensors").exists()


def test_end_to_end_with_the_embedded_models(tmp_path):
    """Real DINOv2-small embeddings from precompute_dinov2 -> SmolLM2 adapter -> loads and sees."""
    from PIL import Image

    from rezcty_core.eye.embedding import load_embedding
    from training import precompute_dinov2

    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (210, 40, 20), (20, 40, 210)]):
        Image.new("RGB", (64, 48), colour).save(images / f"img{i}.png")
    assert precompute_dinov2.main(["--images", str(images), "--out", str(tmp_path / "emb")]) == 0
    manifest = [json.loads(ln) for ln in (tmp_path / "emb" / "manifest.jsonl").read_text().splitlines()]
    lines = [{"image_embedding_path": str((tmp_path / "emb" / m["embedding"]).relative_to(tmp_path)),
              "input_text": "a knight", "output_text": f"a knight, {'red' if i % 2 == 0 else 'blue'} glow, rezcty_style"}
             for i, m in enumerate(manifest)]
    data = tmp_path / "dataset.jsonl"
    data.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    out = tmp_path / "smol_whisperer"
    assert train(data, out, "--max-steps", "2", "--eval-fraction", "0", base="embedded") == 0
    cfg = read_adapter_config(out)
    assert cfg.base_model["name"] == SMOLLM2_NAME and cfg.eye["model"] == "dinov2-small" and cfg.eye["dim"] == 384
    model = core.load_llm("embedded", out)
    text = model.generate(model_messages := [{"role": "user", "content": "<image>\na knight"}],
                          image=load_embedding(tmp_path / "emb" / manifest[0]["embedding"]), max_new_tokens=8, seed=1)
    assert isinstance(text, str) and model_messages
    core.unload_all()


@pytest.mark.parametrize("bleu_case", [("a red cube", "a red cube", 1.0), ("blue sky", "a red cube", 0.0)])
def test_bleu_and_rouge_sanity(bleu_case):
    from rezcty_core.llm.text_metrics import rouge_l, sentence_bleu

    hyp, ref, expected = bleu_case
    assert sentence_bleu(hyp, ref) == pytest.approx(expected, abs=1e-6)
    assert rouge_l(hyp, ref) == pytest.approx(expected, abs=1e-6)
