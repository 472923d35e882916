"""training.precompute_dinov2: a real folder with odd and broken images, resume, strict mode, errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from image_samples import photo_crops, write_bad_images, write_odd_images

from harness import REPO
from rezcty_core.eye import embedding

# runs main() and proves that a fully cached pass imported neither torch nor transformers
NO_TORCH = ("import sys; from training.precompute_dinov2 import main; rc = main(sys.argv[1:]);"
            "print('HEAVY' if {'torch', 'transformers'} & set(sys.modules) else 'LIGHT'); raise SystemExit(rc)")


def precompute(*args: str, check_imports: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", NO_TORCH] if check_imports else [sys.executable, "-m", "training.precompute_dinov2"]
    return subprocess.run([*cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    odd = write_odd_images(root / "odd")
    bad = write_bad_images(root / "nested" / "bad")
    for i, im in enumerate(photo_crops(2, size=(120, 90), seed=3)):
        im.save(root / f"photo_{i}.jpg", quality=92)
    (root / "photo_0.txt").write_text("a caption, not an image\n")
    return root, odd, bad


@pytest.fixture(scope="module")
def first_run(folder, tmp_path_factory):
    root, _, _ = folder
    out = tmp_path_factory.mktemp("feats")
    res = precompute("--images", str(root), "--out", str(out), "--batch-size", "4", "--pooling", "cls+mean")
    return out, res


def manifest(out) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_every_file_gets_one_manifest_line_and_bad_ones_an_error(folder, first_run):
    root, odd, bad = folder
    out, res = first_run
    assert res.returncode == 0, res.stderr
    lines = manifest(out)
    assert len(lines) == len(odd) + len(bad) + 2  # the .txt is not an image file
    by_image = {line["image"]: line for line in lines}
    for path in bad.values():
        error = by_image[str(path)]["error"]
        assert str(path) in error and "\n" not in error
        assert f"skipped {path}" in res.stderr
    for path in odd.values():
        line = by_image[str(path)]
        assert line["status"] == "computed", line
        emb = embedding.load_embedding(out / line["embedding"])
        assert emb.vector.shape == (768,) and emb.meta["pooling"] == "cls+mean" and emb.meta["dim"] == 768
        assert emb.key == line["key"]
    # 8-bit and 16-bit greyscale of the same picture decode to the same pixels: one key, one file
    assert by_image[str(odd["grey.png"])]["key"] == by_image[str(odd["grey16.png"])]["key"]
    summary = re.search(r"13 images: (\d+) computed, (\d+) cached, 4 error\(s\)", res.stderr)
    assert summary and int(summary[1]) + int(summary[2]) == 9, res.stderr
    assert "DINOv2 embed" in res.stderr  # the tqdm bar


def test_rerun_is_all_cached_and_loads_no_model(folder, first_run):
    root, _, _ = folder
    out, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    res = precompute("--images", str(root), "--out", str(out), "--pooling", "cls+mean", check_imports=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("LIGHT"), "a fully cached re-run must not import torch/transformers"
    assert "0 computed, 9 cached, 4 error(s)" in res.stderr and "model not loaded" in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")} == before
    assert all(line.get("status") in ("cached", None) for line in manifest(out))


def test_changed_file_is_not_trusted_from_the_old_manifest_and_strict_exits_1(folder, first_run):
    root, _, _ = folder
    out, _ = first_run
    before = {x["image"]: x for x in manifest(out)}
    changed, twin = root / "photo_1.jpg", root / "photo_0.jpg"
    changed.write_bytes(twin.read_bytes())  # same name, now another picture (whose features are cached)
    res = precompute("--images", str(root), "--out", str(out), "--pooling", "cls+mean", "--strict", check_imports=True)
    assert res.returncode == 1 and "0 computed, 9 cached, 4 error(s)" in res.stderr, res.stderr
    assert res.stdout.strip().endswith("LIGHT")
    line = next(x for x in manifest(out) if x["image"] == str(changed))
    assert line["key"] == before[str(twin)]["key"] != before[str(changed)]["key"]


def test_clear_errors_for_bad_arguments(tmp_path):
    res = precompute("--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "missing: not a folder" in res.stderr
    (tmp_path / "empty").mkdir()
    res = precompute("--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert res.returncode == 1 and "no image files" in res.stderr
    photo_crops(1)[0].save(tmp_path / "empty" / "x.png")
    res = precompute("--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--model", str(tmp_path))
    assert res.returncode == 2 and "no config.json" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = precompute("--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--resolution", "225")
    assert res.returncode == 2 and "multiple of the patch size" in res.stderr


def test_help_lists_contract_flags():
    res = precompute("--help")
    assert res.returncode == 0
    for flag in ("--images", "--out", "--model", "--pooling", "--batch-size", "--cache", "--strict"):
        assert flag in res.stdout
