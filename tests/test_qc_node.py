"""Projector-LLM QC Judge through the real ComfyUI server: contract, verdicts, duplicates, empty batches."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import qc_synth
from PIL import Image

SMALL_PROFILE = "qc_test_small"  # adobe_stock with a 0.2 MP minimum, written as a user profile


@pytest.fixture(scope="module")
def small_profile(comfy):
    """A user profile in <user dir>/rezcty/qc_profiles/, the documented place (listed without a restart)."""
    folder = comfy.base_dir / "user" / "rezcty" / "qc_profiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{SMALL_PROFILE}.json").write_text(json.dumps(
        {"extends": "adobe_stock", "checks": {"resolution_min": {"min": 0.2}}}))
    return SMALL_PROFILE


def save_input(comfy, name: str, rgb: np.ndarray) -> str:
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(comfy.input_dir / name)
    return name


def judge_graph(files: list[str], profile: str = "adobe_stock", prefix: str = "qc") -> dict:
    """LoadImage x N -> ImageBatch chain -> RezctyQCJudge -> PreviewAny(report) + SaveImage(passed/rejected)."""
    graph: dict = {}
    for i, name in enumerate(files):
        graph[f"l{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    last = ["l0", 0]
    for i in range(1, len(files)):
        graph[f"b{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": last, "image2": [f"l{i}", 0]}}
        last = [f"b{i}", 0]
    graph["judge"] = {"class_type": "RezctyQCJudge", "inputs": {"images": last, "profile": profile}}
    graph["report"] = {"class_type": "PreviewAny", "inputs": {"source": ["judge", 2]}}
    graph["pass"] = {"class_type": "SaveImage", "inputs": {"images": ["judge", 0], "filename_prefix": f"{prefix}_pass"}}
    graph["rej"] = {"class_type": "SaveImage", "inputs": {"images": ["judge", 1], "filename_prefix": f"{prefix}_rej"}}
    return graph


def run_judge(comfy, files, profile="adobe_stock", prefix="qc"):
    result = comfy.run(judge_graph(files, profile, prefix))
    report = json.loads(result.text("report")[0])
    return result, report


def test_schema_matches_contract(comfy, small_profile):
    info = comfy.object_info("RezctyQCJudge")["RezctyQCJudge"]
    assert info["display_name"] == "Projector-LLM QC Judge" and info["category"].startswith("rezcty")
    req, opt = info["input"]["required"], info["input"]["optional"]
    assert list(req) == ["images", "profile"] and req["images"][0] == "IMAGE"
    profiles = req["profile"][1]["options"] if req["profile"][0] == "COMBO" else req["profile"][0]
    assert "adobe_stock" in profiles and small_profile in profiles
    assert opt["llm"][0] == "REZCTY_LLM" and opt["image_embedding"][0] == "REZCTY_EMBEDDING"
    assert info["output"] == ["IMAGE", "IMAGE", "STRING"]


def test_clean_4mp_image_passes_and_empty_rejected_output_is_skipped(comfy):
    name = save_input(comfy, "qc_clean_4mp.png", qc_synth.clean_image(201, 2048, 2048))
    result, report = run_judge(comfy, [name], prefix="qc4mp")
    assert len(report) == 1
    entry = report[0]
    assert set(entry) >= {"index", "verdict", "score", "reasons", "measurements"}
    assert entry["verdict"] == "pass", entry["reasons"]
    assert entry["reasons"] == [] and entry["measurements"]["megapixels"] == pytest.approx(4.194, abs=1e-3)
    assert len(result.ui("pass")["images"]) == 1 and "images" not in result.ui("rej")  # nothing rejected: SaveImage skipped
    sheet = result.ui("judge")["images"][0]
    assert comfy.output_file(sheet).is_file() and comfy.output_file(sheet).with_suffix(".html").is_file()


def test_each_single_defect_is_rejected_with_its_code(comfy, small_profile):
    files, expected = [], []
    for k, (defect, (code, strengths, _b, _m)) in enumerate(qc_synth.DEFECTS.items()):
        if not strengths or defect == "downscale":
            continue
        clean = qc_synth.clean_image(210 + k, 640, 480)
        files.append(save_input(comfy, f"qc_defect_{defect}.png", qc_synth.inject(clean, defect, strengths[-1], seed=k)))
        expected.append(code)
    # low_resolution: a batch has one size, so it has its own test below
    result, report = run_judge(comfy, files, small_profile, prefix="qcdef")
    assert [e["index"] for e in report] == list(range(len(files)))
    for entry, code, name in zip(report, expected, files):
        assert entry["verdict"] == "reject" and code in entry["reasons"], (name, entry["reasons"])
    assert "images" not in result.ui("pass")  # nothing passed: SaveImage was skipped, not crashed
    assert len(result.ui("rej")["images"]) == len(files)


def test_low_resolution_reports_upscale_factor(comfy):
    name = save_input(comfy, "qc_512.png", qc_synth.clean_image(240, 512, 512))
    _, report = run_judge(comfy, [name], prefix="qc512")
    assert "low_resolution" in report[0]["reasons"]
    assert report[0]["measurements"]["upscale_needed"] == pytest.approx(3.906, abs=1e-3)


def test_duplicates_in_batch_and_in_history(comfy, small_profile):
    a, b = qc_synth.clean_image(250, 640, 480), qc_synth.clean_image(251, 640, 480)
    files = [save_input(comfy, "qc_dup_a.png", a), save_input(comfy, "qc_dup_a_copy.png", a),
             save_input(comfy, "qc_dup_b.png", b)]
    _, report = run_judge(comfy, files, small_profile, prefix="qcdup")
    assert [e["verdict"] for e in report] == ["pass", "reject", "pass"]
    assert report[1]["reasons"] == ["duplicate"]
    assert report[1]["measurements"]["duplicate_of"] == {"of": "batch #0", "phash_distance": 0, "cosine": None}
    history = comfy.output_dir / "rezcty_qc" / "history.jsonl"
    assert history.is_file() and len(history.read_text().splitlines()) >= 2
    # a later run: the same picture under another name is a duplicate of the remembered one
    _, later = run_judge(comfy, [save_input(comfy, "qc_dup_b_again.png", b)], small_profile, prefix="qcdup2")
    assert later[0]["reasons"] == ["duplicate"] and later[0]["measurements"]["duplicate_of"]["of"].startswith("history")


@pytest.mark.parametrize("name,rgb,expected", [
    ("qc_black_1x1.png", np.zeros((1, 1, 3), np.uint8), {"low_resolution", "underexposed", "low_contrast"}),
    ("qc_white.png", np.full((96, 64, 3), 255, np.uint8), {"overexposed", "low_contrast"}),
    ("qc_single_colour.png", np.full((64, 96, 3), (20, 120, 200), np.uint8), {"low_contrast"}),
])
def test_degenerate_images_batch_of_one(comfy, name, rgb, expected):
    result, report = run_judge(comfy, [save_input(comfy, name, rgb)], prefix="qcodd")
    assert len(report) == 1 and report[0]["verdict"] == "reject"
    assert expected <= set(report[0]["reasons"])
    assert "images" not in result.ui("pass") and len(result.ui("rej")["images"]) == 1


def test_unknown_profile_is_refused_by_validation(comfy):
    name = save_input(comfy, "qc_any.png", np.full((8, 8, 3), 100, np.uint8))
    err = comfy.run_error(judge_graph([name], profile="no_such_profile"))
    assert "no_such_profile" in err


def with_dinov2_embeddings(graph: dict) -> dict:
    """The judge graph with DINOv2 (embedded dinov2-small, CLS) embedding the judged images into `image_embedding`."""
    graph["dino"] = {"class_type": "RezctyDINOv2Loader",
                     "inputs": {"model": "embedded: dinov2-small", "device": "cpu", "dtype": "fp32"}}
    graph["emb"] = {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["dino", 0], "pooling": "cls",
                                                                  "use_cache": False,
                                                                  "image": graph["judge"]["inputs"]["images"]}}
    graph["judge"]["inputs"]["image_embedding"] = ["emb", 0]
    return graph


def test_dinov2_embeddings_feed_the_duplicate_check(comfy, small_profile):
    a, b = qc_synth.clean_image(260, 640, 480), qc_synth.clean_image(261, 640, 480)
    files = [save_input(comfy, "qc_emb_a.png", a), save_input(comfy, "qc_emb_a_copy.png", a),
             save_input(comfy, "qc_emb_b.png", b)]
    graph = judge_graph(files, small_profile, prefix="qcemb")
    with_dinov2_embeddings(graph)
    report = json.loads(comfy.run(graph).text("report")[0])
    assert [e["verdict"] for e in report] == ["pass", "reject", "pass"]
    dup = report[1]["measurements"]["duplicate_of"]
    assert dup["of"] == "batch #0" and dup["cosine"] >= 0.999
    history = [json.loads(line) for line in (comfy.output_dir / "rezcty_qc" / "history.jsonl").read_text().splitlines()]
    assert any(h["embedding"] is not None and len(h["embedding"]) == 384 for h in history)


def _square(rgb: np.ndarray, box: tuple[float, float, float, float] = (0, 0, 1, 1), turn: float = 0.0) -> np.ndarray:
    """A 448x448 (0.2 MP) framing of a photo: the crop box (fractions), turned by `turn` degrees first."""
    from PIL import ImageOps

    im = Image.fromarray(rgb).rotate(turn, Image.BICUBIC) if turn else Image.fromarray(rgb)
    w, h = im.size
    im = im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    return np.asarray(ImageOps.fit(im, (448, 448), Image.LANCZOS))


def test_similar_budget_keeps_two_per_cluster_of_near_variations(comfy, small_profile):
    """Three framings of one photo (DINOv2 cosine 0.93-0.96: similar, not duplicates) and two of another: the
    cluster of three keeps its two best-scored and refuses the third as `similar`; the pair stays; the contact sheet
    groups both clusters. Without image embeddings there is no budget, and the report says so."""
    from image_samples import skimage_photo

    rocket, astronaut = skimage_photo("rocket.jpg"), skimage_photo("astronaut.png")
    frames = [_square(rocket), _square(rocket, (0.15, 0.15, 1, 1)), _square(astronaut),
              _square(rocket, (0.06, 0.06, 0.94, 0.94), turn=4), _square(astronaut, (0, 0, 0.85, 0.85))]
    files = [save_input(comfy, f"qc_similar_{i}.png", rgb) for i, rgb in enumerate(frames)]
    folder = comfy.base_dir / "user" / "rezcty" / "qc_profiles"  # no history: these photos stay out of other tests
    (folder / "qc_test_similar.json").write_text(json.dumps({"extends": SMALL_PROFILE, "duplicate": {"history": False}}))
    graph = judge_graph(files, "qc_test_similar", prefix="qcsim")
    with_dinov2_embeddings(graph)
    result = comfy.run(graph)
    report = json.loads(result.text("report")[0])
    rockets, astronauts = [report[i] for i in (0, 1, 3)], [report[i] for i in (2, 4)]
    assert len({e["similar_cluster"] for e in rockets}) == 1 and len({e["similar_cluster"] for e in astronauts}) == 1
    assert rockets[0]["similar_cluster"] != astronauts[0]["similar_cluster"]
    kept = [e for e in rockets if e["verdict"] == "pass"]
    refused = [e for e in rockets if e["verdict"] == "reject"]
    assert len(kept) == 2 and len(refused) == 1 and refused[0]["reasons"] == ["similar"], [e["reasons"] for e in rockets]
    assert refused[0]["score"] <= min(e["score"] for e in kept)  # the best-scored stay
    similar_to = refused[0]["measurements"]["similar_to"]
    assert similar_to["keep"] == 2 and 0.92 <= similar_to["cosine"] < 0.97 and len(similar_to["of"]) == 2
    assert all(e["verdict"] == "pass" for e in astronauts)
    page = comfy.output_file(result.ui("judge")["images"][0]).with_suffix(".html").read_text(encoding="utf-8")
    assert page.count('class="cluster"') == 2 and "3 images, 2 kept (at most 2 per group)" in page
    # the same frames without embeddings: no budget, and each entry says why
    plain = json.loads(comfy.run(judge_graph(files[:2], "qc_test_similar", prefix="qcsim2")).text("report")[0])
    assert all("no image embeddings" in e["similar_budget"] for e in plain)
