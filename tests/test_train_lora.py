"""train_lora on the tiny SD 1.5 fixture: bucketing, optimisers, a killed run that resumes, and the LoRA it
writes loading in the real ComfyUI (core LoraLoader and the Dual LoRA Loader) with no unmatched key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from harness import CACHE, REPO, link_model, sd15_graph, tiny_sd15_checkpoint
from rezcty_core.sd.buckets import BucketSpec, batches, bucket_for, distortion, fit_to_bucket, group_by_bucket
from rezcty_core.sd.lora_export import read_metadata
from training import train_lora

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from tiny_dataset import make_class_images, make_dataset  # noqa: E402

# 64-px images; buckets 64x64, 128x64 and 64x128 at this target area.
SMALL = ["--resolution", "128", "--min-bucket-reso", "64", "--max-bucket-reso", "128", "--rank", "4"]


# ---- pure parts ----------------------------------------------------------------------------------------

def test_role_defaults_from_the_brief():
    base = ["--data", "d", "--base", "b.safetensors", "--out", "o.safetensors", "--trigger", "t"]
    style = train_lora.parse_args(base)
    assert (style.role, style.rank, style.alpha) == ("style", 64, 32.0)
    structure = train_lora.parse_args(base + ["--role", "structure"])
    assert (structure.rank, structure.alpha) == (16, 8.0)
    assert train_lora.parse_args(base + ["--rank", "128"]).alpha == 64.0  # alpha = rank / 2
    assert style.lr_scheduler == "cosine_with_restarts" and style.optimizer == "auto"


def test_buckets_keep_aspect_never_upscale_crop_under_one_step():
    spec = BucketSpec(512, 256, 1024, 64)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
        w = int(rng.integers(300, 4000))
        h = max(1, int(w / aspect))
        b = bucket_for(w, h, spec)
        if b is None:
            assert min(w, h) < 256 or max(w, h) / min(w, h) > 2.5
            continue
        assert b[0] % 64 == 0 and b[1] % 64 == 0 and b[0] * b[1] <= 512 * 512
        assert 256 <= min(b) and max(b) <= 1024
        d = distortion(w, h, b)
        assert d["upscale"] <= 1.0 + 1e-6, (w, h, b)
        assert d["crop_px"] < 64, (w, h, b, d)
    assert bucket_for(512, 512, spec) == (512, 512)
    assert bucket_for(4000, 3000, spec) == (512, 384)
    assert bucket_for(200, 200, spec) is None  # would need upscaling to reach min_reso


def test_fit_to_bucket_and_batches_never_mix_buckets():
    img = np.zeros((300, 700, 3), np.uint8)
    img[:, :350] = 255
    out = fit_to_bucket(img, (576, 256))
    assert out.shape == (256, 576, 3)
    assert abs(int((out[128, :, 0] > 127).sum()) - 288) <= 12  # left half still half: no stretch
    buckets, skipped = group_by_bucket({"a": (512, 512), "b": (768, 512), "c": (512, 512), "d": (10, 10)})
    assert skipped == ["d"]
    for batch in batches(buckets, 2, np.random.default_rng(1)):
        assert len({k in buckets[(512, 512)] for k in batch}) == 1


@pytest.mark.parametrize("name", ["AdamW", "Prodigy", "Lion"])
def test_optimizers_step(name):
    args = train_lora.parse_args(["--data", "d", "--base", "b", "--out", "o.safetensors", "--trigger", "t",
                                  "--optimizer", name])
    p = torch.nn.Parameter(torch.ones(4))
    opt = train_lora.make_optimizer(args, [{"params": [p], "lr": train_lora.default_lr(args)}], torch.device("cpu"))
    for _ in range(3):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
    assert float(p.detach().abs().max()) < 1.0


def test_adamw8bit_needs_cuda_and_restarts_schedule():
    args = train_lora.parse_args(["--data", "d", "--base", "b", "--out", "o.safetensors", "--trigger", "t",
                                  "--optimizer", "AdamW8bit", "--max-steps", "30", "--lr-restarts", "3"])
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(train_lora.TrainingError, match="CUDA"):
        train_lora.make_optimizer(args, [{"params": [p], "lr": 1e-3}], torch.device("cpu"))
    args.optimizer = "AdamW"
    opt = train_lora.make_optimizer(args, [{"params": [p], "lr": 1e-3}], torch.device("cpu"))
    sched = train_lora.make_scheduler(args, opt)
    lrs = []
    for _ in range(30):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert any(b > a * 5 for a, b in zip(lrs, lrs[1:]))  # the cosine restarted


def test_real_sd15_unet_shapes_infer_and_load():
    """The config read from full-size SD 1.5 ldm shapes builds a diffusers UNet the converted keys fit exactly."""
    code = textwrap.dedent(f"""
        import json, sys, torch
        sys.path.insert(0, {str(REPO / '.comfyui' / 'ComfyUI')!r})
        import comfy.cli_args; comfy.cli_args.args.cpu = True
        import comfy.ops
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
        from diffusers import UNet2DConditionModel
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
        from rezcty_core.sd.sd15 import infer_unet_config
        with torch.device("meta"):
            ldm = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2] * 4,
                            channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                            transformer_depth_output=[1] * 9 + [0] * 3, transformer_depth_middle=1, num_heads=8,
                            context_dim=768, use_spatial_transformer=True, use_linear_in_transformer=False,
                            legacy=False, operations=comfy.ops.disable_weight_init)
        state = {{"model.diffusion_model." + k: v for k, v in ldm.state_dict().items()}}
        cfg = infer_unet_config(state)
        with torch.device("meta"):
            unet = UNet2DConditionModel(**cfg)
        unet.load_state_dict(convert_ldm_unet_checkpoint(state, cfg), strict=True, assign=True)
        print(json.dumps(cfg))
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads(res.stdout.strip().splitlines()[-1])
    assert cfg["block_out_channels"] == [320, 640, 1280, 1280] and cfg["layers_per_block"] == 2
    assert cfg["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert cfg["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3


# ---- end to end on the tiny checkpoint -------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lora-data")
    return {"sets": make_dataset(root / "sets"), "class": make_class_images(root / "class"),
            "cache": CACHE / "test-latents", "out": root / "out" / "rezcty_style_test.safetensors"}


def lora_command(data: dict, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.train_lora", "--data", str(data["sets"] / "2_rezcty_style"),
            "--base", str(tiny_sd15_checkpoint()), "--out", str(data["out"]), "--trigger", "rezcty_style",
            "--role", "style", *SMALL, "--train-text-encoder", "--lr", "2e-2", "--optimizer", "AdamW",
            "--class-data", str(data["class"]), "--cache-dir", str(data["cache"]), "--save-every", "1",
            "--sample-every", "3", "--sample-steps", "1", "--sample-size", "64", *extra]


@pytest.fixture(scope="module")
def trained_lora(data) -> dict:
    """A run killed after its first checkpoint, then resumed with --resume to 3 steps (TE LoRA, class images, sample)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    errlog = data["out"].parent / "killed.stderr"
    errlog.parent.mkdir(parents=True, exist_ok=True)
    with open(errlog, "w") as err:
        proc = subprocess.Popen(lora_command(data, "--max-steps", "50"), cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=err)
        killed_after = None
        for line in proc.stdout:
            if line.startswith("[train_lora] checkpoint step"):
                proc.kill()  # SIGKILL: no clean-up, as when Colab drops the runtime
                killed_after = int(line.split()[3])
                break
        proc.wait(timeout=120)
    assert killed_after is not None, errlog.read_text()[-3000:]
    assert not data["out"].exists()  # it never finished
    res = subprocess.run(lora_command(data, "--max-steps", "3", "--resume"), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"path": data["out"], "stdout": res.stdout, "stderr": res.stderr, "killed_after": killed_after}


def test_killed_run_resumes_from_its_checkpoint(trained_lora):
    line = next(ln for ln in trained_lora["stdout"].splitlines() if "resumed from step" in ln)
    resumed = int(line.split("resumed from step")[1].split()[0])
    assert trained_lora["killed_after"] <= resumed < 3
    assert "caching latents" not in trained_lora["stderr"]  # latents came from the disk cache
    meta = read_metadata(trained_lora["path"])
    assert json.loads(meta["rezcty_args"])["steps_done"] == 3
    assert (trained_lora["path"].parent / "rezcty_style_test.samples" / "step_000003.png").exists()


def test_lora_file_format_and_metadata(trained_lora):
    sd = load_file(str(trained_lora["path"]))
    unet = {k for k in sd if k.startswith("lora_unet_")}
    te = {k for k in sd if k.startswith("lora_te_")}
    assert unet and te and set(sd) == unet | te
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert sd[f"{q}.lora_down.weight"].shape == (4, 320) and sd[f"{q}.lora_up.weight"].shape == (320, 4)
    assert float(sd[f"{q}.alpha"]) == 2.0
    assert float(sd[f"{q}.lora_up.weight"].abs().max()) > 0  # it trained
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in sd
    meta = read_metadata(trained_lora["path"])
    assert meta["rezcty_trigger"] == "rezcty_style" and meta["rezcty_role"] == "style"
    from rezcty_core.sd.sd15 import file_sha256

    assert meta["rezcty_base_hash"] == file_sha256(tiny_sd15_checkpoint())
    args = json.loads(meta["rezcty_args"])
    assert args["rank"] == 4 and args["train_text_encoder"] is True and args["optimizer"] == "AdamW"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"


def _pixels(comfy, result, node="7") -> np.ndarray:
    with Image.open(comfy.output_file(result.ui(node)["images"][0])) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_lora_loads_in_comfyui_with_no_unmatched_key_and_changes_render(comfy, tiny_sd15, trained_lora):
    name = link_model(comfy, "loras", trained_lora["path"])
    base = _pixels(comfy, comfy.run(sd15_graph(tiny_sd15, seed=5, prefix="lora_base")))
    graph = sd15_graph(tiny_sd15, seed=5, prefix="lora_core")
    graph["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": name,
                                                          "strength_model": 1.0, "strength_clip": 1.0}}
    graph["2"]["inputs"]["clip"] = graph["3"]["inputs"]["clip"] = ["10", 1]
    graph["5"]["inputs"]["model"] = ["10", 0]
    log_start = len(comfy.log_text())
    with_lora = _pixels(comfy, comfy.run(graph))
    new_log = comfy.log_text()[log_start:]
    assert "lora key not loaded" not in new_log, new_log[-3000:]
    assert np.abs(with_lora - base).max() > 0, "the LoRA did not change the render"

    graph = sd15_graph(tiny_sd15, seed=5, prefix="lora_dual")
    graph["10"] = {"class_type": "RezctyDualLoraLoader", "inputs": {
        "model": ["1", 0], "clip": ["1", 1], "style_lora": name, "style_strength_model": 1.0,
        "style_strength_clip": 1.0, "structure_lora": "none", "structure_strength_model": 0.55,
        "structure_strength_clip": 0.55}}
    graph["2"]["inputs"]["clip"] = graph["3"]["inputs"]["clip"] = ["10", 1]
    graph["5"]["inputs"]["model"] = ["10", 0]
    graph["11"] = {"class_type": "PreviewAny", "inputs": {"source": ["10", 2]}}
    result = comfy.run(graph)
    shown = "\n".join(result.text("10"))
    assert "rezcty_style" in shown and "unmatched" not in shown.lower(), shown
    assert np.array_equal(_pixels(comfy, result), with_lora)  # same LoRA, same strengths: same render


def test_refuses_to_train_on_bad_captions(tmp_path):
    folder = tmp_path / "3_rezcty_style"
    make_dataset(tmp_path / "src")
    folder.mkdir()
    for p in (tmp_path / "src" / "2_rezcty_style").iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "img00.txt").write_text("a breathtaking cinematic red circle, rezcty_style")
    out = tmp_path / "never.safetensors"
    res = subprocess.run([sys.executable, "-m", "training.train_lora", "--data", str(folder), "--base",
                          str(tiny_sd15_checkpoint()), "--out", str(out), "--trigger", "rezcty_style"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    assert "img00.txt" in res.stderr and "style_word" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("train_lora: 1 caption file(s)")
    assert not out.exists()


def test_bad_base_checkpoint_is_a_one_line_error(tmp_path, capsys):
    make_dataset(tmp_path)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    code = train_lora.main(["--data", str(tmp_path / "2_rezcty_style"), "--base", str(bad), "--out",
                            str(tmp_path / "o.safetensors"), "--trigger", "rezcty_style", *SMALL])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"train_lora: {bad}: cannot read checkpoint"), err
