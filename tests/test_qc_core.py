"""QC core without the server: BRISQUE vs the package, measurements, defects, edge cases, dedup, profiles."""
from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from fixtures import qc_synth
from image_samples import photo
from PIL import Image

from rezcty_core.qc import brisque, contact_sheet, dedup
from rezcty_core.qc.batch import judge_batch
from rezcty_core.qc.compression import measure_jpeg
from rezcty_core.qc.measure import measure, measure_with_profile
from rezcty_core.qc.pixels import LUMA
from rezcty_core.qc.profiles import ProfileError, list_profiles, load_profile
from rezcty_core.qc.verdict import combine_verdicts, failed_checks, unique_codes


@pytest.fixture(scope="module")
def profile():
    return load_profile("adobe_stock")


@pytest.fixture(scope="module")
def small_profile(profile):
    """adobe_stock with the 4 MP minimum off, so 1024x768 renders are judged on everything else."""
    p = copy.deepcopy(profile)
    p["checks"]["resolution_min"]["enabled"] = False
    return p


def reasons(rgb, prof):
    return unique_codes(failed_checks(measure_with_profile(rgb, prof), prof))


# -- BRISQUE -----------------------------------------------------------------------------------

def test_brisque_matches_the_package_features_and_score():
    # the reference and what it imports are in requirements-dev.txt: one missing is a failure, never a skip
    warnings.filterwarnings("ignore")
    import cv2
    import skimage.color
    from brisque import BRISQUE

    rgb = np.asarray(photo("flower.jpg", (320, 240)))
    ref = BRISQUE(url=False)
    grey = skimage.color.rgb2gray(rgb)
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    assert np.abs(brisque.half_size(grey) - half).max() < 1e-9
    feats = np.concatenate([ref.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (grey, half)])
    feats = np.array([float(np.ravel(f)[0]) for f in feats])  # the package's own values, flattened for numpy >= 2.4
    ours = brisque.brisque_features(rgb)
    assert np.abs(ours - feats).max() < 1e-4
    assert abs(brisque.brisque_score(rgb) - ref.calculate_image_quality_score(feats)) < 1e-3


def test_brisque_orders_distortion_and_survives_flat_and_tiny_images():
    rgb = np.asarray(photo("china.jpg", (320, 240)))
    clean = brisque.brisque_score(rgb)
    noisy = brisque.brisque_score(qc_synth.inject(rgb, "noise", 25.0))
    assert clean < 40 < noisy
    for arr in (np.zeros((1, 1, 3), np.uint8), np.full((9, 9, 3), 255, np.uint8), np.zeros((2, 3, 3), np.uint8)):
        assert np.isfinite(brisque.brisque_score(arr))


def test_svm_parser_refuses_other_kernels(tmp_path):
    bad = tmp_path / "svm.txt"
    bad.write_text("svm_type c_svc\nkernel_type linear\nrho 0\ngamma 0.1\nSV\n1 1:0.5\n")
    with pytest.raises(ValueError, match="expected an RBF"):
        brisque.parse_svm_model(bad)


# -- measurements and defects --------------------------------------------------------------------

@pytest.mark.parametrize("seed", [100, 103])
def test_clean_render_passes_and_each_defect_gives_its_code(seed, small_profile):
    clean = qc_synth.clean_image(seed, 640, 480)
    assert reasons(clean, small_profile) == []
    for defect, (code, strengths, _borderline, _mild) in qc_synth.DEFECTS.items():
        if not strengths or defect == "downscale":
            continue
        got = reasons(qc_synth.inject(clean, defect, strengths[-1], seed=seed), small_profile)
        assert code in got, f"{defect} at {strengths[-1]}: {got}"


def test_noise_does_not_read_as_focus(small_profile):
    """A blurred image stays blurry with mild noise on top, and noise alone is not 'blur'."""
    clean = qc_synth.clean_image(104, 640, 480)
    blurred = qc_synth.inject(clean, "blur", 4.0)
    m = measure_with_profile(qc_synth.inject(blurred, "noise", 2.0, seed=1), small_profile)
    assert m["blur_sigma_px"] > 1.35
    assert "blurry" not in reasons(qc_synth.inject(clean, "noise", 10.0), small_profile)


def test_resolution_and_upscale_factor(profile):
    m = measure(np.zeros((512, 512, 3), np.uint8) + 128)
    assert m["upscale_needed"] == pytest.approx(3.906, abs=1e-3)  # sqrt(4e6 / 512^2)
    assert "low_resolution" in unique_codes(failed_checks(m, profile))


@pytest.mark.parametrize("shape,value,expected", [
    ((1, 1, 3), 0, {"low_resolution", "underexposed", "low_contrast"}),
    ((64, 64, 3), 255, {"overexposed", "low_contrast"}),
    ((48, 80, 3), (200, 30, 30), {"low_contrast"}),
    ((2, 3, 3), 0, {"underexposed"}),
])
def test_degenerate_images_do_not_crash(shape, value, expected, profile):
    arr = np.zeros(shape, np.uint8) + np.array(value, np.uint8)
    entries = judge_batch([arr], profile)
    assert entries[0]["verdict"] == "reject"
    assert expected <= set(entries[0]["reasons"])
    json.dumps(entries)  # every measurement is plain JSON


def test_real_photos_pass_everything_but_resolution(profile):
    for name in ("china.jpg", "flower.jpg"):
        assert reasons(np.asarray(photo(name)), profile) == ["low_resolution"], name


# -- duplicates --------------------------------------------------------------------------------

def test_phash_is_stable_under_resize_and_jpeg_and_separates_images():
    a = qc_synth.clean_image(110, 512, 384)
    b = qc_synth.clean_image(111, 512, 384)
    a_small = np.asarray(Image.fromarray(a).resize((256, 192), Image.LANCZOS))
    a_jpeg = qc_synth.inject(a, "jpeg", 80)
    h = dedup.phash(a)
    assert dedup.hamming(h, dedup.phash(a_small)) <= 4
    assert dedup.hamming(h, dedup.phash(a_jpeg)) <= 4
    assert dedup.hamming(h, dedup.phash(b)) > 12


def test_batch_and_history_duplicates(tmp_path, small_profile):
    a, b = qc_synth.clean_image(120, 512, 384), qc_synth.clean_image(121, 512, 384)
    hist = tmp_path / "output" / "rezcty_qc" / "history.jsonl"
    first = judge_batch([a, qc_synth.inject(a, "jpeg", 95), b], small_profile, history_path=hist, run_label="r1")
    assert [e["verdict"] for e in first] == ["pass", "reject", "pass"]
    assert first[1]["reasons"] == ["duplicate"] and first[1]["measurements"]["duplicate_of"]["of"] == "batch #0"
    assert len(hist.read_text().splitlines()) == 2  # only accepted images are remembered
    with open(hist, "a") as f:
        f.write("not json\n")  # a corrupt line is skipped, not fatal
    again = judge_batch([b], small_profile, history_path=hist)
    assert again[0]["reasons"] == ["duplicate"]
    assert again[0]["measurements"]["duplicate_of"]["of"] == "history r1 #2"


def test_embedding_cosine_flags_duplicates_only_from_the_same_eye():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(384).astype(np.float32)
    index = dedup.DuplicateIndex(phash_max_distance=-1, embedding_min_cosine=0.97)
    index.add(dedup.Fingerprint(0, v, "eye-a", "batch #0"))
    near = v + 0.05 * rng.standard_normal(384).astype(np.float32)
    assert index.match(dedup.Fingerprint(2**63, near, "eye-a"))["of"] == "batch #0"
    assert index.match(dedup.Fingerprint(2**63, near, "eye-b")) is None
    tokens = np.stack([near, near])  # (tokens, dim) is mean-pooled
    assert dedup.pooled_vector(tokens).shape == (384,)


# -- profiles, verdicts, contact sheet -----------------------------------------------------------

def test_user_profile_extends_and_clear_errors(tmp_path):
    (tmp_path / "strict.json").write_text(json.dumps({"extends": "adobe_stock",
                                                      "checks": {"noise": {"max": 1.0}}}))
    assert "strict" in list_profiles([tmp_path]) and "adobe_stock" in list_profiles([tmp_path])
    strict = load_profile("strict", [tmp_path])
    assert strict["checks"]["noise"]["max"] == 1.0 and strict["checks"]["noise"]["code"] == "noisy"
    assert strict["checks"]["blur"] == load_profile("adobe_stock")["checks"]["blur"]
    for check in load_profile("adobe_stock")["checks"].values():
        assert check["reason"].strip(), check
    (tmp_path / "broken.json").write_text('{"checks": {\n  "x": }')
    with pytest.raises(ProfileError, match=r"broken\.json:2: not valid JSON"):
        load_profile("broken", [tmp_path])
    (tmp_path / "badcode.json").write_text(json.dumps({"checks": {"x": {"code": "ugly", "measure": "a", "max": 1}}}))
    with pytest.raises(ProfileError, match="check 'x' needs a known 'code'"):
        load_profile("badcode", [tmp_path])
    with pytest.raises(ProfileError, match="QC profile 'nope' not found"):
        load_profile("nope", [tmp_path])


def test_combine_verdicts_policies(profile):
    ok_llm = {"valid": True, "verdict": "reject", "score": 10.0}
    veto = combine_verdicts([], 90.0, ok_llm, profile)
    assert veto == {"verdict": "reject", "score": 50.0, "reasons": ["llm_reject"]}
    rescue = combine_verdicts(["blurry"], 60.0, {"valid": True, "verdict": "pass", "score": 100.0}, profile)
    assert rescue["verdict"] == "reject" and rescue["reasons"] == ["blurry"]
    invalid = combine_verdicts([], 90.0, {"valid": False}, profile)
    assert invalid == {"verdict": "pass", "score": 90.0, "reasons": []}
    advisory = copy.deepcopy(profile)
    advisory["llm"]["policy"] = "advisory"
    assert combine_verdicts([], 90.0, ok_llm, advisory)["verdict"] == "pass"


def test_contact_sheet_html_and_png(tmp_path, small_profile):
    imgs = [qc_synth.clean_image(130, 320, 240), np.zeros((1, 1, 3), np.uint8)]
    entries = judge_batch(imgs, small_profile)
    html_path, png_path = contact_sheet.write_contact_sheet(entries, imgs, tmp_path, "sheet")
    text = html_path.read_text()
    assert text.count("<figure") == 2 and "PASS" in text and "REJECT" in text and "underexposed" in text
    assert "data:image/jpeg;base64," in text
    with Image.open(png_path) as im:
        assert im.width >= 2 * contact_sheet.THUMB and im.mode == "RGB"


# -- JPEG quality from the quantisation left in the pixels ------------------------------------------

@pytest.mark.parametrize("quality", [10, 30, 50, 75])
def test_jpeg_quality_is_read_back_from_the_pixels(quality):
    clean = qc_synth.clean_image(105, 640, 480)
    luma = qc_synth.inject(clean, "jpeg", quality).astype(np.float32) @ LUMA
    assert measure_jpeg(luma)["jpeg_quality"] == pytest.approx(quality, abs=3)
    # a JPEG cropped off its 8x8 grid (3 rows, 5 columns) is found at the shifted grid
    assert measure_jpeg(luma[3:, 5:])["jpeg_quality"] == pytest.approx(quality, abs=3)


def test_jpeg_quality_is_none_without_quantisation(profile):
    for seed in (105, 106, 107):  # includes a grating (seed % 4 == 3), whose coefficients are regular
        clean = qc_synth.clean_image(seed, 640, 480)
        assert measure_jpeg(clean.astype(np.float32) @ LUMA)["jpeg_quality"] is None
        q95 = qc_synth.inject(clean, "jpeg", 95)
        assert measure_jpeg(q95.astype(np.float32) @ LUMA)["jpeg_quality"] is None
    for name in ("china.jpg", "flower.jpg"):  # real camera JPEGs saved near quality 95
        m = measure(np.asarray(photo(name)))
        assert m["jpeg_quality"] is None or m["jpeg_quality"] >= 85, name
    low = qc_synth.inject(qc_synth.clean_image(105, 640, 480), "jpeg", 30)
    assert "jpeg_artifacts" in reasons(low, profile)


def test_threaded_and_serial_measurements_agree():
    img = qc_synth.clean_image(108, 1024, 768)
    assert measure(img, threads=1) == measure(img, threads=2)


def test_colourful_gradient_of_one_brightness_is_not_flat_and_its_blur_is_seen(small_profile):
    """Purple to green at one luma: not low contrast; iso-luminant shapes on it still show blur."""
    h, w = 480, 640
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    purple, green = np.array([170, 90, 200], np.float32), np.array([110, 150, 80], np.float32)
    img = np.repeat(purple + (green - purple) * t, h, axis=0)
    yy, xx = np.mgrid[0:h, 0:w]
    for cx, cy, r, colour in ((180, 200, 70, (60, 140, 230)), (450, 300, 90, (230, 80, 120))):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
    from scipy import ndimage

    img = np.clip(np.round(ndimage.gaussian_filter(img, (0.6, 0.6, 0))), 0, 255).astype(np.uint8)
    m = measure_with_profile(img, small_profile)
    assert m["dynamic_range"] < 45 < m["channel_range"]
    assert reasons(img, small_profile) == []
    assert "low_contrast" in reasons(qc_synth.inject(img, "contrast", 0.2), small_profile)
    blurred = measure_with_profile(qc_synth.inject(img, "blur", 4.0), small_profile)
    assert blurred["blur_sigma_px"] > small_profile["checks"]["blur"]["max"]


def test_oversaturation_is_gamut_clipping_not_vivid_colour(small_profile):
    vivid = qc_synth.clean_image(27, 1024, 768)  # magenta and red shapes on green: very colourful, not clipped
    m = measure_with_profile(vivid, small_profile)
    assert m["colourfulness"] > 110 and m["colour_clip_pct"] < 1.0
    assert "oversaturated" not in reasons(vivid, small_profile)
    for seed in (108, 109):
        clean = qc_synth.clean_image(seed, 1024, 768)
        boosted = qc_synth.inject(clean, "saturation", 3.5)
        assert "oversaturated" in reasons(boosted, small_profile)
        assert (measure_with_profile(boosted, small_profile)["colour_clip_pct"]
                > measure_with_profile(clean, small_profile)["colour_clip_pct"] + 1.0)


def test_fine_texture_is_not_noise_but_grain_is(small_profile):
    """Real texture photos (scikit-image's grass and gravel) are not noisy; grain on a render is."""
    from image_samples import skimage_photo

    for name in ("grass.png", "gravel.png"):
        m = measure_with_profile(skimage_photo(name), small_profile)
        assert m["noise_scale_ratio"] > 1.0 and "noisy" not in reasons(skimage_photo(name), small_profile), name
    grainy = measure_with_profile(qc_synth.inject(qc_synth.clean_image(109, 640, 480), "noise", 6.0, seed=2),
                                  small_profile)
    assert grainy["noise_scale_ratio"] < 0.65 and grainy["noise_sigma"] > small_profile["checks"]["noise"]["max"]


def test_clipping_checks_apply_only_in_a_dark_or_bright_frame(small_profile, tmp_path):
    """Low-key (a portrait beside a black backdrop) is not underexposed; the same photo darkened is."""
    from image_samples import skimage_photo

    portrait = skimage_photo("astronaut.png")
    m = measure_with_profile(portrait, small_profile)
    assert m["shadow_clip_pct"] > 5.0 and m["mean_luma"] > 100  # lots of black, bright frame
    assert "underexposed" not in reasons(portrait, small_profile)
    assert "underexposed" in reasons(qc_synth.inject(portrait, "underexpose", 10.0), small_profile)
    (tmp_path / "bad_when.json").write_text(json.dumps(
        {"extends": "adobe_stock", "checks": {"dim": {"code": "underexposed", "measure": "mean_luma", "min": 20,
                                                       "when": {"measure": "shadow_clip_pct"}}}}))
    with pytest.raises(ProfileError, match="'when' needs"):
        load_profile("bad_when", [tmp_path])


def test_motion_blur_is_caught_per_edge_orientation(small_profile):
    """A smear in one direction leaves the other edges sharp: the overall blur passes, the motion check fails."""
    from image_samples import skimage_photo

    shaken = skimage_photo("clock_motion.png")  # a real motion-blurred photo
    m = measure_with_profile(shaken, small_profile)
    assert m["blur_sigma_px"] <= small_profile["checks"]["blur"]["max"] < m["motion_blur_px"]
    assert small_profile["checks"]["motion_blur"]["enabled"] is False  # off by default (docs/qc.md)
    assert "blurry" not in reasons(shaken, small_profile)
    photo_profile = copy.deepcopy(small_profile)
    photo_profile["checks"]["motion_blur"]["enabled"] = True
    assert "blurry" in reasons(shaken, photo_profile)
    for name in ("camera.png", "chelsea.png", "coffee.png"):  # sharp real photos
        m = measure_with_profile(skimage_photo(name), small_profile)
        assert m["motion_blur_px"] < small_profile["checks"]["motion_blur"]["max"], name


# -- layout ------------------------------------------------------------------------------------

def test_qc_modules_import_one_way_and_never_the_fixtures():
    """No import cycle among rezcty_core/qc's modules (imports inside functions count), none of them imports the
    test fixtures (the procedural images live in tests/fixtures), and no module outgrows 450 lines."""
    import ast
    from pathlib import Path

    root = Path(brisque.__file__).parent
    mods = {p.stem for p in root.glob("*.py")} - {"__init__"}
    deps: dict[str, set[str]] = {}
    for m in mods:
        text = (root / f"{m}.py").read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 450, f"rezcty_core/qc/{m}.py has over 450 lines: split it by concern"
        deps[m] = set()
        for node in ast.walk(ast.parse(text)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                assert not name.startswith(("fixtures", "tests")), f"rezcty_core/qc/{m}.py imports {name}"
                parts = name.split(".")
                deps[m] |= {p for p in parts[2:3] if parts[:2] == ["rezcty_core", "qc"] and p in mods}

    def reach(m: str, seen: tuple[str, ...]) -> None:
        for d in deps[m]:
            assert d not in seen, f"import cycle: {' -> '.join((*seen, d))}"
            reach(d, (*seen, d))

    for m in sorted(mods):
        reach(m, (m,))
