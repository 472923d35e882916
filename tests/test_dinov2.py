"""The eye: rezcty_core.eye.dinov2 on the embedded DINOv2-small, and the two nodes through the real server."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from image_samples import photo_crops

from harness import REPO
from rezcty_core.common.imageio import load_image_rgb
from rezcty_core.eye import dinov2 as vision
from rezcty_core.eye import embedding

CACHE_SUBDIR = ("rezcty_cache", "dinov2")


@pytest.fixture(scope="module")
def dino():
    return vision.load_dinov2("embedded")


@pytest.fixture(scope="module")
def frames():
    return [np.asarray(im) for im in photo_crops(3, size=(200, 150), seed=7)]


# -- core ------------------------------------------------------------------------------------

def test_poolings_shapes_and_meta(dino, frames):
    out = {p: vision.embed_images(dino, frames[:2] if p == "cls" else frames[:1], pooling=p) for p in vision.POOLINGS}
    cls, mean, both, patch = (out[p] for p in ("cls", "mean", "cls+mean", "patch"))
    assert isinstance(cls, list) and len(cls) == 2
    assert cls[0].vector.shape == (384,) and both[0].vector.shape == (768,) and patch[0].vector.shape == (256, 384)
    assert torch.allclose(both[0].vector, torch.cat([cls[0].vector, mean[0].vector]))
    assert torch.allclose(patch[0].vector.mean(0), mean[0].vector, atol=1e-5)
    meta = cls[0].meta
    assert meta["model"] == "dinov2-small" and meta["model_hash"] == dino.identity and len(dino.identity) == 64
    assert (meta["dim"], meta["pooling"], meta["resolution"], meta["source"]) == (384, "cls", 224, "image[0]")
    assert both[0].meta["dim"] == 768 and patch[0].meta["grid"] == [16, 16]
    assert len({e.key for e in (cls[0], mean[0], both[0], patch[0])}) == 4, "pooling is part of the key"
    assert not torch.allclose(cls[0].vector, cls[1].vector, atol=1e-2), "different images, different features"


def test_batching_does_not_change_features(dino, frames):
    batched = vision.embed_images(dino, frames[1:], batch_size=2)
    single = [vision.embed_images(dino, [f], batch_size=1)[0] for f in frames[1:]]
    for b, s in zip(batched, single):
        assert (b.vector - s.vector).abs().max() <= 1e-4
    assert embedding.cosine_similarity(batched[0], single[0]) > 0.99999


def test_cache_roundtrip_and_corrupt_file_is_recomputed(dino, frames, tmp_path):
    first = vision.embed_images(dino, frames[:2], cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(f"{e.key}.safetensors" for e in first)
    reloaded = embedding.load_embedding(tmp_path / files[0])
    assert reloaded.meta["key"] == files[0].split(".")[0] and reloaded.vector.dtype == torch.float32
    again = vision.embed_images(dino, frames[:2], cache_dir=tmp_path, sources=["a.png", "b.png"])
    assert torch.equal(again[0].vector, first[0].vector) and again[1].meta["source"] == "b.png"

    bad = tmp_path / f"{first[0].key}.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])  # a crash mid-write on another machine, a sync glitch
    assert embedding.read_embedding_header(bad) is None
    with pytest.raises(ValueError, match="corrupt"):
        embedding.load_embedding(bad)
    healed = vision.embed_images(dino, frames[:2], cache_dir=tmp_path)
    assert torch.allclose(healed[0].vector, first[0].vector, atol=1e-5)
    assert embedding.read_embedding_header(bad) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_resolution_is_a_parameter_and_checked(dino, frames):
    emb = vision.embed_images(dino, frames[:1], pooling="patch", resolution=280)[0]
    assert emb.vector.shape == (400, 384) and emb.meta["resolution"] == 280
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        vision.embed_images(dino, frames[:1], resolution=225)
    with pytest.raises(ValueError, match="pooling must be one of"):
        vision.embed_images(dino, frames[:1], pooling="max")


def test_prepare_embedded_is_instant_and_loads_no_torch_when_done():
    code = ("import sys; from rezcty_core.eye.dinov2_onnx import prepare_embedded; from rezcty_core.common.paths import embedded_dir\n"
            "prepare_embedded(embedded_dir()); assert 'torch' not in sys.modules and 'onnx' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# -- nodes through the real server ------------------------------------------------------------

def embed_graph(images: list[str], pooling: str = "cls", use_cache: bool = True, resolution: int = 0) -> dict:
    graph: dict = {"1": {"class_type": "RezctyDINOv2Loader",
                         "inputs": {"model": "embedded: dinov2-small", "device": "auto", "dtype": "auto"}}}
    for i, name in enumerate(images):
        graph[f"img{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    source = ["img0", 0]
    for i in range(1, len(images)):
        graph[f"batch{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": source, "image2": [f"img{i}", 0]}}
        source = [f"batch{i}", 0]
    graph["2"] = {"class_type": "RezctyDINOv2Embed", "inputs": {
        "dino": ["1", 0], "image": source, "pooling": pooling, "use_cache": use_cache, "resolution": resolution}}
    graph["3"] = {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    return graph


@pytest.fixture(scope="module")
def inputs(comfy):
    names = []
    for i, im in enumerate(photo_crops(2, size=(160, 120), seed=11)):
        name = f"dino_in_{i}.png"
        im.save(comfy.input_dir / name)
        names.append(name)
    return names


def test_nodes_registered_with_contract_inputs(comfy):
    loader = comfy.object_info("RezctyDINOv2Loader")["RezctyDINOv2Loader"]
    req = loader["input"]["required"]
    assert "embedded: dinov2-small" in json.dumps(req["model"])
    assert set(req) == {"model", "device", "dtype"} and loader["output"] == ["REZCTY_DINO"]
    embed = comfy.object_info("RezctyDINOv2Embed")["RezctyDINOv2Embed"]
    req = embed["input"]["required"]
    assert list(req) == ["dino", "image", "pooling", "use_cache"]
    assert all(p in json.dumps(req["pooling"]) for p in vision.POOLINGS)
    assert embed["output"] == ["REZCTY_EMBEDDING"] and embed["category"].startswith("rezcty")


def test_node_embeds_each_image_and_matches_the_file_on_disk(comfy, inputs, dino):
    result = comfy.run(embed_graph(inputs))
    text = result.text("3")[0]
    lines = text.splitlines()
    assert lines[0].startswith("2 DINOv2 embedding(s): model dinov2-small") and "dim 384, pooling cls" in lines[0]
    assert lines[1].startswith("[0] dinov2-small") and lines[2].startswith("[1] dinov2-small"), text
    assert "2 DINOv2 embedding(s)" in result.text("2")[0]  # summary shown on the Embed node itself

    # the same pictures read from disk by the training path: same key, same features (<= 1e-5)
    cache_dir = comfy.output_dir.joinpath(*CACHE_SUBDIR)
    for name in inputs:
        disk = vision.embed_images(dino, [load_image_rgb(comfy.input_dir / name)])[0]
        node_file = cache_dir / f"{disk.key}.safetensors"
        assert node_file.exists(), f"node wrote {sorted(p.name for p in cache_dir.iterdir())}, expected {disk.key}"
        from_node = embedding.load_embedding(node_file)
        assert (from_node.vector - disk.vector).abs().max() <= 1e-5
        assert from_node.meta["source"].startswith("IMAGE[")


def test_node_patch_pooling_without_cache(comfy, inputs):
    cache_dir = comfy.output_dir.joinpath(*CACHE_SUBDIR)
    before = set(cache_dir.iterdir()) if cache_dir.exists() else set()
    text = comfy.run(embed_graph(inputs[:1], pooling="patch", use_cache=False, resolution=280)).text("3")[0]
    assert "1 DINOv2 embedding(s)" in text and "pooling patch" in text and "tensor=400x384" in text, text
    assert (set(cache_dir.iterdir()) if cache_dir.exists() else set()) == before, "use_cache=False writes nothing"


def test_node_bad_resolution_is_a_clear_error(comfy, inputs):
    err = comfy.run_error(embed_graph(inputs[:1], resolution=14 * 20 + 1))
    assert "multiple of the patch size 14" in err and "\n" not in err.strip()


def test_script_reuses_the_node_cache(comfy, inputs, tmp_path):
    cache_dir = comfy.output_dir.joinpath(*CACHE_SUBDIR)
    comfy.run(embed_graph(inputs))  # (cached by ComfyUI or recomputed: either way the files exist)
    # only this test's images: the shared server's input/ also holds other tests' uploads
    images = tmp_path / "images"
    images.mkdir()
    for name in inputs:
        shutil.copy2(comfy.input_dir / name, images / name)
    code = ("import sys; from training.precompute_dinov2 import main; rc = main(sys.argv[1:]);"
            "assert 'torch' not in sys.modules, 'torch imported'; raise SystemExit(rc)")
    res = subprocess.run([sys.executable, "-c", code, "--images", str(images), "--out", str(tmp_path),
                          "--cache", str(cache_dir)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    ours = [x for x in lines if x["image"].rsplit("/", 1)[-1] in inputs]
    assert len(ours) == 2 and all(x["status"] == "cached" for x in ours), lines
    assert all((tmp_path / x["embedding"]).resolve().parent == cache_dir.resolve() for x in ours)
