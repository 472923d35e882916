"""Brand names the QC text check read in an image stay out of that image's metadata (no server: the core)."""
from __future__ import annotations

import numpy as np

from rezcty_core.common.blocklists import load_blocklist
from rezcty_core.stock import seen_brands, writer


def entry(words=(), regions=()):
    return {"index": 0, "verdict": "pass", "measurements": {"text_words": list(words)}, "text_regions": list(regions)}


def test_brand_terms_and_brand_heads_are_found_in_what_was_read():
    bl = load_blocklist()
    heads = seen_brands.brand_heads(bl)
    assert {"apple", "amazon", "corona", "canon"} <= heads  # heads of 'apple logo', 'amazon prime', ...
    assert "new" not in heads and "coca" not in heads and "red" not in heads  # 'new balance', 'coca cola', 'red bull'
    found = seen_brands.seen_brands(entry(["APPLE", "Fresh Fruit", "Coca-Cola"],
                                          [{"text": "NIKE store", "rec_conf": 0.93},
                                           {"text": "Corona", "rec_conf": 0.31}]), bl)  # 0.31: not taken as read
    assert found[0] == "apple" and "coca-cola" in found and "nike" in found and "corona" not in found, found
    assert seen_brands.seen_brands(entry(["SAMPLE PREVIEW", "1.0"]), bl) == []
    assert seen_brands.seen_brands(None, bl) == [] and seen_brands.seen_brands({"measurements": {}}, bl) == []
    assert seen_brands.seen_brands({"text_regions": [{"text": "Amazon", "rec_conf": "bad"}, "junk"]}, bl) == []


def test_write_batch_drops_seen_brands_for_that_image_only(tmp_path):
    frames = [np.full((480, 640, 3), 120, np.uint8), np.full((480, 640, 3), 130, np.uint8)]
    report = [entry(["APPLE"]), entry([])]
    report[1]["index"] = 1
    results = writer.write_batch(frames, "a red apple on a wooden kitchen table, fresh fruit", tmp_path,
                                 writer.WriteOptions(qc_report=report))
    seen, plain = results
    assert not seen["error"] and not plain["error"], results
    assert not any("apple" in k.lower() for k in seen["keywords"]) and "apple" not in seen["title"].lower(), seen
    assert any("apple" in w for w in seen["warnings"] if "read in the image" in w), seen["warnings"]
    assert "apple" in [k.lower() for k in plain["keywords"]] and "apple" in plain["title"].lower(), plain
