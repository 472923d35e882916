"""QC text/watermark check, core: DB post-processing, the real PP-OCRv4 models, profile switches, bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from fixtures import qc_synth
from fixtures import qc_synth_text as synth_text

from rezcty_core.qc import contact_sheet
from rezcty_core.qc import text as qc_text
from rezcty_core.qc.batch import judge_batch
from rezcty_core.qc.measure import measure, measure_with_profile
from rezcty_core.qc.profiles import load_profile
from rezcty_core.qc.verdict import REASON_CODES, failed_checks, unique_codes


@pytest.fixture(scope="module")
def profile():
    return load_profile("adobe_stock")


@pytest.fixture(scope="module")
def render():
    return qc_synth.clean_image(11, 800, 600)


def test_db_boxes_score_size_and_unclip():
    prob = np.zeros((200, 300), np.float32)
    prob[90:110, 50:250] = 0.9  # a 200x20 text line
    prob[20:21, 20:22] = 0.95  # a speck: below min_size
    prob[150:170, 40:120] = 0.4  # above thresh (0.3) but its mean under box_thresh
    boxes = qc_text.db_boxes(prob, qc_text.DEFAULTS)
    assert len(boxes) == 1
    b = boxes[0]
    assert b["score"] == pytest.approx(0.9, abs=0.02)
    assert b["length"] > 200 and b["width"] > 20  # unclipped: grown on every side
    d = (b["width"] - 21) / 2
    assert 200 * 20 * 1.6 / (2 * 220) * 0.8 < d < 200 * 20 * 1.6 / (2 * 220) * 1.3
    assert abs(np.sin(b["angle"])) < 0.01 and b["cx"] == pytest.approx(150, abs=1.5)
    assert qc_text.db_boxes(np.zeros((64, 64), np.float32), qc_text.DEFAULTS) == []


def test_oriented_box_follows_rotated_text():
    yy, xx = np.mgrid[0:200, 0:200]
    u = (xx - 100) * np.cos(0.5) + (yy - 100) * np.sin(0.5)
    v = -(xx - 100) * np.sin(0.5) + (yy - 100) * np.cos(0.5)
    prob = ((np.abs(u) < 60) & (np.abs(v) < 8)).astype(np.float32) * 0.95
    (b,) = qc_text.db_boxes(prob, qc_text.DEFAULTS)
    assert b["angle"] == pytest.approx(0.5, abs=0.05)
    assert b["length"] > 120 and 16 < b["width"] < 60


def test_clean_render_has_no_text(render, profile):
    m = measure_with_profile(render, profile)
    assert m["text_boxes"] == 0 and m["text_area_pct"] == 0.0
    assert "text" not in unique_codes(failed_checks(m, profile))


@pytest.mark.parametrize("kind", synth_text.KINDS)
def test_watermark_is_found_read_and_rejected(render, profile, kind):
    img = synth_text.watermark(render, kind, opacity=0.5, height_pct=6, seed=3)
    m = measure_with_profile(img, profile)
    failed = failed_checks(m, profile)
    assert "text" in unique_codes(failed), {k: v for k, v in m.items() if k.startswith("text")}
    assert m["text_boxes"] >= 1 and m["text_area_pct"] > 0.3 and m["text_score_max"] >= 0.6
    assert m["text_rec_conf_max"] >= 0.7
    words = " ".join(m["text_words"]).upper()
    assert any(part in words for part in ("SAMPLE", "PREVIEW", "STOCK", "DEMO", "COPYRIGHT", "NOT", "PIX", "PHOTO",
                                           "IMAGERY", "VISUALS", "LAB"))
    regions = m["text_box_list"]
    assert regions and all(len(r["points"]) == 4 for r in regions)
    xs = [x for r in regions if r["counts"] for x, _ in r["points"]]
    assert -0.05 * img.shape[1] <= min(xs) and max(xs) <= img.shape[1] * 1.05  # boxes on the image's own scale


def test_profile_can_allow_intended_text(render, profile):
    img = synth_text.watermark(render, "centre", opacity=1.0, height_pct=8, seed=1)
    allow = copy.deepcopy(profile)
    allow["text"]["enabled"] = False
    m = measure_with_profile(img, allow)
    assert "text_boxes" not in m and "disabled" in m["text_check"]
    assert "text" not in unique_codes(failed_checks(m, allow))


def test_missing_or_corrupt_model_fails_closed_unless_the_profile_skips_it(tmp_path, render, profile):
    corrupt = tmp_path / "det.onnx"
    corrupt.write_bytes(b"\x08\x01this is not an onnx model" * 10)
    blurred = qc_synth.inject(qc_synth.clean_image(12, 800, 600), "blur", 5.0)  # not a duplicate
    for model, words in ((tmp_path / "absent.onnx", "not found"), (corrupt, "could not be loaded")):
        prof = copy.deepcopy(profile)
        prof["checks"]["resolution_min"]["enabled"] = False
        prof["text"]["det_model"] = str(model)
        entries = judge_batch([render, blurred], prof)
        for e in entries:
            (miss,) = e["checks_not_run"]
            assert miss["check"] == "text" and words in miss["reason"] and str(model) in miss["reason"]
            assert "text_boxes" not in e["measurements"]
            (gap,) = [f for f in e["failed_checks"] if f["code"] == "check_unavailable"]
            assert gap["check"] == "text" and gap["not_run"] == "text"
        # the clean render was never checked for text: rejected, never passed on
        assert entries[0]["verdict"] == "reject" and entries[0]["reasons"] == ["check_unavailable"]
        assert entries[1]["reasons"] == ["blurry", "check_unavailable"]
        # on purpose: the profile lets the others decide
        prof["checks"]["text"]["on_unavailable"] = "skip"
        qc_text.clear_sessions()
        entries = judge_batch([render, blurred], prof)
        assert [e["checks_not_run"][0]["check"] for e in entries] == ["text", "text"]
        assert entries[0]["verdict"] == "pass" and entries[1]["reasons"] == ["blurry"]


def test_missing_embedded_model_names_the_prepare_command(tmp_path, monkeypatch, render, profile):
    monkeypatch.setenv("REZCTY_EMBEDDED_DIR", str(tmp_path))  # nothing prepared there
    qc_text.clear_sessions()
    prof = copy.deepcopy(profile)
    prof["checks"]["resolution_min"]["enabled"] = False
    (entry,) = judge_batch([render], prof)
    not_run = {nr["check"]: nr["reason"] for nr in entry["checks_not_run"]}
    assert set(not_run) == {"text", "brisque", "people", "hands"}
    assert f"prepare --dest {tmp_path} --only pp-ocrv4" in not_run["text"]
    assert "--only brisque" in not_run["brisque"]
    # text can reject: unavailable; brisque's check is off in adobe_stock (listed only); people/hands only flag
    assert entry["verdict"] == "reject" and entry["reasons"] == ["check_unavailable"]
    assert [f["check"] for f in entry["failed_checks"]] == ["text"]
    prof["checks"]["brisque"]["enabled"] = True
    (entry,) = judge_batch([render], prof)
    assert sorted(f["check"] for f in entry["failed_checks"]) == ["brisque", "text"]
    assert entry["flags"] == []
    qc_text.clear_sessions()


def test_disabled_check_or_no_value_is_not_unavailable():
    prof = {"checks": {"text": {"code": "text", "measure": "text_boxes", "max": 0},
                       "blur": {"code": "blurry", "measure": "blur_sigma_px", "max": 1.8}}}
    gone = {"checks_not_run": [{"check": "text", "reason": "x", "measures": list(qc_text.MEASURES)}]}
    assert failed_checks({}, prof) == []  # no value for this image: not judged
    assert [f["code"] for f in failed_checks(gone, prof)] == ["check_unavailable"]
    prof["checks"]["text"]["enabled"] = False
    assert failed_checks(gone, prof) == []
    prof["checks"]["text"].update(enabled=True, on_unavailable="skip")
    assert failed_checks(gone, prof) == []
    assert "check_unavailable" in REASON_CODES


def test_both_runtimes_give_the_same_boxes_on_renders_photos_and_watermarks():
    """onnxruntime (installed here by requirements-dev) and torch through onnx2torch (a plain environment)."""
    from image_samples import photo

    images = [qc_synth.clean_image(21, 800, 600),  # a clean render: no box on either
              synth_text.watermark(np.asarray(photo("china.jpg")), "tiled", 0.5, 5, seed=5),  # a real photo, watermarked
              synth_text.lettering(np.asarray(photo("flower.jpg")), "GRAND OPENING")]  # lettering on a real photo
    found = []
    for i, img in enumerate(images):
        a = qc_text.detect_text(img, {"runtime": "onnxruntime"})
        b = qc_text.detect_text(img, {"runtime": "torch"})
        assert (a["text_runtime"], b["text_runtime"]) == ("onnxruntime", "torch")
        assert len(a["text_box_list"]) == len(b["text_box_list"]), i
        for ba, bb in zip(a["text_box_list"], b["text_box_list"]):
            assert np.allclose(ba["points"], bb["points"], atol=1.0) and abs(ba["score"] - bb["score"]) <= 0.002, i
            assert ba["counts"] == bb["counts"] and ba.get("text") == bb.get("text"), i
        assert a["text_boxes"] == b["text_boxes"], i
        found.append(b["text_boxes"])
    assert found[0] == 0 and found[1] > 0 and found[2] > 0, found


@pytest.mark.parametrize("shape,fill", [((1, 1, 3), 0), ((5, 700, 3), 128), ((64, 64, 3), 0), ((600, 800, 3), 0)])
def test_degenerate_images_do_not_crash(shape, fill):
    m = qc_text.detect_text(np.full(shape, fill, np.uint8))
    assert m["text_boxes"] == 0 and m["text_box_list"] == []


def test_huge_image_runs_on_a_bounded_copy():
    img = synth_text.watermark(qc_synth.clean_image(5, 1000, 750), "centre", 1.0, 6, seed=2)
    img = np.repeat(np.repeat(img, 12, axis=0), 12, axis=1)  # 9000 x 12000 (108 MP)
    m = qc_text.detect_text(img)
    assert m["text_boxes"] >= 1
    assert max(x for r in m["text_box_list"] for x, _ in r["points"]) > 6000  # scaled back to 12000 px wide


def test_contact_sheet_draws_the_boxes(tmp_path, render, profile):
    img = synth_text.watermark(render, "centre", 1.0, 8, seed=4)
    entries = judge_batch([img], profile)
    assert entries[0]["text_regions"] and "text_box_list" not in entries[0]["measurements"]
    thumb = contact_sheet.thumbnail(img)
    drawn = np.asarray(qc_text.draw_regions(thumb, entries[0]["text_regions"], img.shape[:2])).astype(int)
    red = (drawn[..., 0] > 230) & (drawn[..., 1] < 80) & (drawn[..., 2] < 80)
    assert red.sum() > 50 and not ((np.asarray(thumb)[..., 0] > 230) & (np.asarray(thumb)[..., 1] < 80)).sum() > 50
    html, png = contact_sheet.write_contact_sheet(entries, [img], tmp_path, "sheet")
    assert png.is_file() and "text" in html.read_text()


def test_text_reason_code_is_known_and_documented():
    assert "text" in REASON_CODES


def test_detectors_beside_the_technical_checks_give_the_same_numbers(profile):
    """measure_with_profile runs text + people in a second thread on a large image: same measurements as one
    after the other (numbers, order of the checks that did not run, face and text boxes)."""
    from rezcty_core.qc import people

    img = synth_text.watermark(qc_synth.clean_image(12, 800, 600), "corner", 1.0, 6, seed=4)
    together = measure_with_profile(img, profile)
    alone = measure(img, threads=1)
    qc_text.add_measurements(alone, img, profile)
    people.add_measurements(alone, img, profile)
    assert together == alone
    assert together["text_boxes"] >= 1 and "faces" in together
