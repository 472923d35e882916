"""QC text/watermark check through the real ComfyUI server (RezctyQCJudge): verdicts, profile switch, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import qc_synth
from fixtures import qc_synth_text as synth_text
from PIL import Image

PROFILES = {
    # adobe_stock with a 0.2 MP minimum (renders of 800x600 are judged on the rest)
    "qc_text_small": {"extends": "adobe_stock", "checks": {"resolution_min": {"min": 0.2}}},
    # the same, allowing intended text
    "qc_text_allowed": {"extends": "adobe_stock", "checks": {"resolution_min": {"min": 0.2}},
                        "text": {"enabled": False}},
}


@pytest.fixture(scope="module")
def profiles(comfy, tmp_path_factory):
    folder = comfy.base_dir / "user" / "rezcty" / "qc_profiles"
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = tmp_path_factory.mktemp("qc_text") / "corrupt_det.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx graph at all" * 40)
    extra = {"qc_text_corrupt": {**PROFILES["qc_text_small"], "text": {"det_model": str(corrupt)}},
             "qc_text_missing": {**PROFILES["qc_text_small"], "text": {"det_model": str(corrupt.with_name("no.onnx"))}}}
    for name, body in {**PROFILES, **extra}.items():
        (folder / f"{name}.json").write_text(json.dumps(body))
    return {"corrupt": str(corrupt)}


def save_input(comfy, name: str, rgb: np.ndarray) -> str:
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(comfy.input_dir / name)
    return name


def run_judge(comfy, files: list[str], profile: str, prefix: str):
    graph: dict = {f"l{i}": {"class_type": "LoadImage", "inputs": {"image": n}} for i, n in enumerate(files)}
    last = ["l0", 0]
    for i in range(1, len(files)):
        graph[f"b{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": last, "image2": [f"l{i}", 0]}}
        last = [f"b{i}", 0]
    graph["judge"] = {"class_type": "RezctyQCJudge", "inputs": {"images": last, "profile": profile}}
    graph["report"] = {"class_type": "PreviewAny", "inputs": {"source": ["judge", 2]}}
    graph["rej"] = {"class_type": "SaveImage", "inputs": {"images": ["judge", 1], "filename_prefix": f"{prefix}_rej"}}
    result = comfy.run(graph)
    return result, json.loads(result.text("report")[0])


def test_clean_passes_watermarked_rejected_with_text_and_boxes_on_sheet(comfy, profiles):
    clean = qc_synth.clean_image(701, 800, 600)
    marked = synth_text.watermark(qc_synth.clean_image(702, 800, 600), "centre", opacity=0.5, height_pct=6, seed=1)
    files = [save_input(comfy, "qct_clean.png", clean), save_input(comfy, "qct_marked.png", marked)]
    result, report = run_judge(comfy, files, "qc_text_small", "qct")
    assert report[0]["verdict"] == "pass", report[0]["reasons"]
    assert report[0]["measurements"]["text_boxes"] == 0
    assert report[1]["verdict"] == "reject" and report[1]["reasons"] == ["text"]
    m = report[1]["measurements"]
    assert m["text_boxes"] >= 1 and m["text_area_pct"] > 0.3 and m["text_words"]
    assert report[1]["text_regions"] and any(r["counts"] for r in report[1]["text_regions"])
    # the contact sheet: red outlines where the boxes are, on the rejected tile
    sheet = np.asarray(Image.open(comfy.output_file(result.ui("judge")["images"][0])).convert("RGB")).astype(int)
    tile = sheet[:, sheet.shape[1] // 2:] if sheet.shape[1] > 300 else sheet
    red = (tile[..., 0] > 230) & (tile[..., 1] < 80) & (tile[..., 2] < 80)
    assert red.sum() > 50


def test_profile_with_text_disabled_passes_the_watermark(comfy, profiles):
    marked = synth_text.watermark(qc_synth.clean_image(703, 800, 600), "tiled", opacity=0.5, height_pct=5, seed=2)
    _, report = run_judge(comfy, [save_input(comfy, "qct_allowed.png", marked)], "qc_text_allowed", "qcta")
    assert report[0]["verdict"] == "pass", report[0]["reasons"]
    assert "text_boxes" not in report[0]["measurements"] and "checks_not_run" not in report[0]


@pytest.mark.parametrize("profile,words", [("qc_text_missing", "not found"), ("qc_text_corrupt", "could not be loaded")])
def test_missing_or_corrupt_model_rejects_with_check_unavailable_and_says_so(comfy, profiles, profile, words):
    seed = 710 + 2 * len(words)  # other pictures per case: an image passed in one case is no duplicate in the next
    marked = synth_text.watermark(qc_synth.clean_image(seed, 800, 600), "centre", opacity=1.0, height_pct=8, seed=3)
    blurred = qc_synth.inject(qc_synth.clean_image(seed + 1, 800, 600), "blur", 5.0)
    files = [save_input(comfy, f"qct_{profile}_a.png", marked), save_input(comfy, f"qct_{profile}_b.png", blurred)]
    result, report = run_judge(comfy, files, profile, f"qct{profile}")
    for entry in report:
        (miss,) = entry["checks_not_run"]
        assert miss["check"] == "text" and words in miss["reason"]
    # the gate fails closed: the watermark is never passed on because the check could not look for it
    assert report[0]["verdict"] == "reject" and report[0]["reasons"] == ["check_unavailable"]
    assert report[1]["reasons"] == ["blurry", "check_unavailable"]
    summary = result.text("judge")[0]
    assert "0 passed, 2 rejected" in summary and "checks not run: text (2 of 2 images)" in summary and words in summary
    page = comfy.output_file(result.ui("judge")["images"][0]).with_suffix(".html").read_text()
    assert "Checks that did not run" in page and page.count("not run: text") == 2


@pytest.mark.parametrize("name,rgb", [
    ("qct_1x1.png", np.zeros((1, 1, 3), np.uint8)),
    ("qct_black.png", np.zeros((480, 640, 3), np.uint8)),
    ("qct_huge.png", np.repeat(np.repeat(qc_synth.clean_image(706, 1000, 750), 3, axis=0), 3, axis=1)),  # 6.75 MP (108 MP: core test)
])
def test_tiny_black_and_huge_images_do_not_crash(comfy, profiles, name, rgb):
    _, report = run_judge(comfy, [save_input(comfy, name, rgb)], "qc_text_small", "qctodd")
    assert len(report) == 1 and "qc_error" not in report[0]["reasons"] and "text" not in report[0]["reasons"]
    assert report[0]["measurements"]["text_boxes"] == 0 and "checks_not_run" not in report[0]
