"""The eye matters through the real server: a whisperer adapter trained on the embedded SmolLM2-135M and
embedded DINOv2-small answers with the phrase of the image's family (held-out images), so the image
embedding changes the expansion for the same idea and seed.

The adapter is trained once by `training.train_adapter` (bench/bench_eye_matters.py's data and recipe,
single-threaded) and cached under `.comfyui/cache/` keyed by a hash of the code that makes it.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from fixtures.tiny_llm import CACHE, REPO, _code_digest

from harness import link_model

BENCH = REPO / "bench" / "bench_eye_matters.py"
TRIGGERS = "rezcty_style, rezcty_structure"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_eye_matters", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def eye_adapter() -> Path:
    """Two image families (warm blobs -> 'ember ...', cold stripes -> 'glacier ...'), 8 train images each,
    16 steps x 2 accumulation at lr 1e-3, embedded SmolLM2 + embedded DINOv2-small, one torch thread."""
    digest = hashlib.sha256(BENCH.read_bytes() + Path(__file__).read_bytes()
                            + (REPO / "training" / "precompute_dinov2.py").read_bytes()).hexdigest()[:8]
    path = CACHE / f"eye_adapter_smollm2_dinov2s_{_code_digest('whisperer-eye', digest)}"
    if (path / "rezcty_adapter.json").is_file():
        return path
    bench = _bench()
    bench.THREADS = 1
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="eye_adapter_", dir=CACHE))
    try:
        items = bench.make_images(work / "images", 2, 8, 0, "train")
        data = bench.write_jsonl(work / "train.jsonl", items, bench.precompute(work / "images", work / "emb"))
        args = argparse.Namespace(base_model="embedded", grad_accum=2, lr=1e-3, projector_lr=1e-3, seed=0)
        bench.train(data, None, work / "adapter", 16, args)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(work / "adapter", tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def test_image_embedding_changes_the_result_with_a_trained_adapter(comfy):
    bench = _bench()
    adapter = link_model(comfy, "rezcty_adapters", eye_adapter(), "whisperer_eye_smollm2_dinov2s")
    # held-out images: a seed the training images never used
    held = bench.make_images(comfy.input_dir, 2, 1, 1234, "eye_held")

    def expand(image: Path) -> str:
        graph = {
            "1": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": "embedded: SmolLM2-135M-Instruct",
                                                              "adapter": adapter, "quantization": "none",
                                                              "keep_loaded": True}},
            "10": {"class_type": "LoadImage", "inputs": {"image": image.name}},
            "11": {"class_type": "RezctyDINOv2Loader", "inputs": {"model": "embedded: dinov2-small",
                                                                  "device": "cpu", "dtype": "fp32"}},
            "12": {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["11", 0], "image": ["10", 0],
                                                                 "pooling": "cls", "use_cache": False}},
            # temperature 0: greedy decoding, so the result depends on the image only, not on sampling luck
            "2": {"class_type": "RezctyWhispererExpand", "inputs": {
                "llm": ["1", 0], "prompt": "a knight", "trigger_words": TRIGGERS, "seed": 3, "temperature": 0.0,
                "top_p": 0.95, "top_k": 50, "max_new_tokens": 16, "image_embedding": ["12", 0]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        }
        [text] = comfy.run(graph).text("3")
        assert text.endswith(f", {TRIGGERS}") and text.count("rezcty_style") == 1
        return text

    (warm, _), (cold, _) = held
    ember, glacier = expand(warm), expand(cold)
    assert ember != glacier
    assert bench.FAMILIES[0][1] in ember and "glacier" not in ember, ember
    assert bench.FAMILIES[1][1] in glacier and "ember" not in glacier, glacier
