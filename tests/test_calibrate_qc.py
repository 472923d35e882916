"""training.calibrate_qc: a QC profile fitted to a (simulated) reviewer's verdicts, validated on held-out photos;
too few reviews refused; bad input lines named; the calibrated profile listed by the running server, no restart."""
from __future__ import annotations

import json

import pytest
from fixtures import qc_reviewer

from rezcty_core.qc.calibration import Reviewed, evaluate, fit_thresholds
from rezcty_core.qc.profiles import load_profile
from training import calibrate_qc

SIGMAS = (0.0, 0.6, 0.9, 1.2, 1.5, 1.8)  # Gaussian blur (px) of each photo


@pytest.fixture(scope="module")
def graded():
    """Every native scikit-image / scikit-learn photo (384 px) at each blur, judged by the real QC orchestrator with
    the small-photo profile: [(source, sigma, file name, entry)]."""
    base = qc_reviewer.photo_profile(load_profile("adobe_stock"))
    images = qc_reviewer.graded_photos(SIGMAS, max_side=384)
    entries = qc_reviewer.qc_entries([img for _, _, img in images], base)
    return base, [(src, s, f"{src}_blur{s:.1f}.jpg", e) for (src, s, _), e in zip(images, entries)]


def user_dir_with_base(root) -> str:
    folder = root / "rezcty" / "qc_profiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "photos_small.json").write_text(json.dumps(qc_reviewer.PHOTO_PROFILE))
    return str(root)


def test_calibrated_profile_agrees_with_a_stricter_reviewer_on_held_out_photos(graded, tmp_path, capsys):
    base, rows = graded
    reviewer = qc_reviewer.StricterReviewer(base, limit=1.3)  # the default blur limit is 1.8
    verdicts = dict(zip((r[2] for r in rows), reviewer.judge([r[2] for r in rows], [r[3] for r in rows])))
    sources = sorted({r[0] for r in rows})
    held_sources = set(sources[::3])
    # the fitting side: only what QC passed was submitted, so only that was reviewed
    submitted = [r for r in rows if r[0] not in held_sources and r[3]["verdict"] == "pass"]
    assert len(submitted) >= 30 and sum(not verdicts[r[2]][1] for r in submitted) >= 5
    sidecars = qc_reviewer.write_sidecars(tmp_path / "stock", [r[2] for r in submitted], [r[3] for r in submitted])
    review = qc_reviewer.write_review_csv(tmp_path / "review.csv", [verdicts[r[2]] for r in submitted])
    user = user_dir_with_base(tmp_path / "user")
    code = calibrate_qc.main(["--qc", str(sidecars), "--review", str(review), "--base", "photos_small",
                              "--out", "photos_calibrated", "--comfy-user-dir", user])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "thresholds mostly tighten" in out and "blur_sigma_px" in out
    written = json.loads((tmp_path / "user" / "rezcty" / "qc_profiles" / "photos_calibrated.json").read_text())
    assert written["extends"] == "photos_small" and set(written["checks"]) == {"blur"}
    calibrated = load_profile("photos_calibrated", [tmp_path / "user" / "rezcty" / "qc_profiles"])
    assert 1.0 < calibrated["checks"]["blur"]["max"] < 1.6, calibrated["checks"]["blur"]
    assert calibrated["checks"]["upsampled"]["enabled"] is False  # the rest is the base's, by `extends`
    # held-out photos, every blur (submitted or not): the reviewer's verdict against each profile's
    held = [Reviewed(r[2], r[3]["measurements"], verdicts[r[2]][1], [] if verdicts[r[2]][1] else ["blurry"])
            for r in rows if r[0] in held_sources]
    before, after = evaluate(base, held)["agreement"], evaluate(calibrated, held)["agreement"]
    assert after >= 0.85 and after > before, (before, after)


def test_too_few_reviews_is_refused_and_bad_lines_are_named(graded, tmp_path, capsys):
    base, rows = graded
    passed = [r for r in rows if r[3]["verdict"] == "pass"][:17]
    sidecars = qc_reviewer.write_sidecars(tmp_path / "stock", [r[2] for r in passed[:15]], [r[3] for r in passed[:15]])
    (sidecars / "broken.jpg").write_bytes(b"\xff\xd8")
    (sidecars / "broken.json").write_text('{"filename": "broken.jpg",\n "qc": ')
    batch = tmp_path / "line3"  # a line-3 batch folder: results.json rows whose texts hold the QC report
    (batch / "files").mkdir(parents=True)
    results = []
    for n, r in enumerate(passed[15:]):
        image = batch / "files" / r[2]
        image.write_bytes(b"stand-in")
        results.append({"key": f"k{n}", "image": str(image), "files": [], "texts": {"5": [json.dumps([r[3]])]}})
    (batch / "results.json").write_text(json.dumps(results))
    review = qc_reviewer.write_review_csv(tmp_path / "review.csv", [(r[2], True, "") for r in passed])
    with open(review, "a", encoding="utf-8") as f:
        f.write("odd.jpg,maybe,\n")
    code = calibrate_qc.main(["--qc", str(sidecars), "--qc", str(batch), "--review", str(review),
                              "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert "17 reviewed images matched a QC result; calibration needs at least 20: 3 more needed" in err
    assert f"{sidecars / 'broken.json'}:2: not valid JSON" in err
    assert f"{review}:19: Status 'maybe'" in err
    assert not (tmp_path / "p.json").exists()


def test_a_threshold_moves_only_with_five_rejections_naming_it():
    """4 blurry rejections: left alone and said so; 'Quality issues' rejections never count for one check."""
    base = qc_reviewer.photo_profile(load_profile("adobe_stock"))
    items = [Reviewed(f"a{i}.jpg", {"blur_sigma_px": 0.5 + 0.02 * i}, True) for i in range(30)]
    items += [Reviewed(f"b{i}.jpg", {"blur_sigma_px": 1.5 + 0.05 * i}, False, ["blurry"]) for i in range(4)]
    items += [Reviewed(f"g{i}.jpg", {"blur_sigma_px": 1.5 + 0.05 * i}, False, ["poor_quality"]) for i in range(8)]
    _, overrides, rows = fit_thresholds(base, items)
    blur = next(r for r in rows if r["check"] == "blur")
    assert overrides == {} and blur["status"] == "left alone: 4 rejections name 'blurry' (needs 5)"
    items.append(Reviewed("b4.jpg", {"blur_sigma_px": 1.45}, False, ["blurry"]))
    _, overrides, rows = fit_thresholds(base, items)
    assert 1.08 < overrides["blur"]["max"] < 1.45  # between the softest accepted (1.08) and the rejections


def test_calibrated_profile_is_listed_by_the_running_server_without_restart(graded, comfy, tmp_path, capsys):
    """The QC Judge reads its profile folders on every /object_info call: a browser refresh shows a new profile."""
    base, rows = graded
    passed = [r for r in rows if r[3]["verdict"] == "pass"][:24]
    sidecars = qc_reviewer.write_sidecars(tmp_path / "stock", [r[2] for r in passed], [r[3] for r in passed])
    review = qc_reviewer.write_review_csv(tmp_path / "review.csv", [(r[2], True, "") for r in passed])
    user = comfy.base_dir / "user"
    user_dir_with_base(user)

    def listed() -> list[str]:
        spec = comfy.object_info("RezctyQCJudge")["RezctyQCJudge"]["input"]["required"]["profile"]
        return spec[1]["options"] if spec[0] == "COMBO" else spec[0]

    assert "photos_accepted_all" not in listed()
    assert calibrate_qc.main(["--qc", str(sidecars), "--review", str(review), "--base", "photos_small",
                              "--out", "photos_accepted_all", "--comfy-user-dir", str(user)]) == 0
    assert "lists 'photos_accepted_all' after a browser refresh" in capsys.readouterr().out
    assert "photos_accepted_all" in listed()
