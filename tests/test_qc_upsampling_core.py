"""Plain-upscale detection without the server: Lanczos/bicubic enlargements vs native photos and renders."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from fixtures import qc_synth
from fixtures.qc_synth import enlarge
from fixtures.qc_synth import jpeg_roundtrip as jpeg
from image_samples import photo, skimage_photo
from PIL import Image

from rezcty_core.qc import upsampling
from rezcty_core.qc.measure import measure
from rezcty_core.qc.profiles import load_profile
from rezcty_core.qc.verdict import failed_checks, unique_codes


@pytest.fixture(scope="module")
def small_profile():
    p = copy.deepcopy(load_profile("adobe_stock"))
    p["checks"]["resolution_min"]["enabled"] = False
    return p


def codes(rgb, prof, full=False):
    """Reason codes from the profile; the upscale measurement alone unless `full` (every technical check)."""
    m = measure(rgb) if full else upsampling.measure_upsampling(rgb)
    return unique_codes(failed_checks(m, prof))


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "rocket.jpg"])
def test_lanczos_x4_is_upsampled_and_the_native_photo_is_not(name, small_profile):
    native = skimage_photo(name)
    limit = small_profile["checks"]["upsampled"]["min"]
    m = upsampling.measure_upsampling(native)
    assert m["upsample_detail_db"] >= limit + 3 and m["upsample_factor"] is None, m  # 3 dB clear of the limit
    assert "upsampled" not in codes(native, small_profile, full=name == "astronaut.png")
    big = enlarge(native, 4)
    m = upsampling.measure_upsampling(big)
    assert m["upsample_detail_db"] < limit and m["upsample_factor"] == 4, m
    assert "upsampled" in codes(big, small_profile, full=name == "astronaut.png")


def test_lanczos_x2_and_bicubic_x4_are_upsampled_sharp_renders_are_not(small_profile):
    native = skimage_photo("chelsea.png")
    m2 = upsampling.measure_upsampling(enlarge(native, 2, None))
    assert m2["upsample_factor"] == 2 and "upsampled" in codes(enlarge(native, 2, None), small_profile), m2
    assert "upsampled" in codes(enlarge(native, 4, 256, Image.BICUBIC), small_profile)
    for seed in range(3):
        render = qc_synth.clean_image(seed)
        assert "upsampled" not in codes(render, small_profile), (seed, upsampling.measure_upsampling(render))
    for name in ("china.jpg", "flower.jpg"):
        assert "upsampled" not in codes(np.asarray(photo(name)), small_profile), name


def test_jpeg_of_a_native_photo_is_not_an_upscale(small_profile):
    assert "upsampled" not in codes(jpeg(skimage_photo("astronaut.png"), 75), small_profile)


@pytest.mark.parametrize("shape,value", [((1, 1, 3), 0), ((63, 500, 3), 128), ((300, 300, 3), 0),
                                         ((256, 256, 3), 255)])
def test_degenerate_images_are_not_measured(shape, value):
    m = upsampling.measure_upsampling(np.full(shape, value, np.uint8))
    assert m["upsample_detail_db"] is None and m["upsample_factor"] is None


def test_band_limited_renders_pass_and_their_enlargements_and_a_smooth_photo_x4_do_not(small_profile):
    """The cases the first measure (shortfall against the bands below) got wrong: renders 29 and 30, whose
    textures are band-limited by construction, read as upscales; retina x4 at full size (nothing near its own
    Nyquist to lose) and smooth renders x4 passed. Detail over the rounding floor tells them apart."""
    for seed in (29, 30):
        render = qc_synth.clean_image(seed)
        assert "upsampled" not in codes(render, small_profile), (seed, upsampling.measure_upsampling(render))
        big = enlarge(render, 4)
        assert "upsampled" in codes(big, small_profile), (seed, upsampling.measure_upsampling(big))
    retina = skimage_photo("retina.jpg")[300:1100, 300:1100]
    m = upsampling.measure_upsampling(enlarge(retina, 4, None))
    assert m["upsample_factor"] == 4, m
    assert "upsampled" not in codes(retina, small_profile), upsampling.measure_upsampling(retina)
