"""rezcty_core.common.imageio: odd images load as RGB uint8, broken ones give a one-line error naming the file."""
from __future__ import annotations

import numpy as np
import pytest
from image_samples import photo, photo_path, write_bad_images, write_odd_images
from PIL import Image, ImageFile

from rezcty_core.common.imageio import ImageLoadError, iter_image_files, load_image_rgb


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return write_odd_images(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return write_bad_images(tmp_path_factory.mktemp("bad"))


def test_plain_jpeg_matches_pillow():
    arr = load_image_rgb(photo_path("china.jpg"))
    assert arr.dtype == np.uint8 and arr.shape == (427, 640, 3)
    assert np.array_equal(arr, np.asarray(photo("china.jpg")))


@pytest.mark.parametrize("name", ["cmyk.jpg", "grey16.png", "rgba.png", "grey.png", "palette.png", "photo.webp"])
def test_odd_images_load_as_rgb(odd, name):
    arr = load_image_rgb(odd[name])
    assert arr.dtype == np.uint8 and arr.shape == (64, 96, 3)
    reference = np.asarray(photo("flower.jpg", (96, 64)), dtype=np.float64)
    if name == "rgba.png":
        assert (arr[:, :48] == 255).all(), "transparent pixels are composited on white"
        assert np.abs(arr[:, 48:] - reference[:, 48:]).mean() < 1.0
    elif name in ("grey16.png", "grey.png"):
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
        grey = np.asarray(photo("flower.jpg", (96, 64)).convert("L"), dtype=np.float64)
        # 16-bit is scaled, not clipped: it must not come out white
        assert np.abs(arr[..., 0] - grey).max() <= 1.0
    else:
        assert np.abs(arr - reference).mean() < 12.0, f"{name} decoded far from the original"


def test_exif_orientation_is_applied(odd):
    arr = load_image_rgb(odd["exif_rotated.jpg"])
    assert arr.shape == (96, 64, 3)
    upright = np.asarray(photo("flower.jpg", (96, 64)).transpose(Image.ROTATE_270), dtype=np.float64)
    assert np.abs(arr - upright).mean() < 12.0


@pytest.mark.parametrize("name, words", [
    ("empty.png", "0 bytes"), ("truncated.jpg", "truncated"), ("not_an_image.png", "not an image"),
    ("bomb.png", "decompression bomb"),
])
def test_bad_images_give_one_line_error_naming_the_file(bad, name, words):
    with pytest.raises(ImageLoadError) as info:
        load_image_rgb(bad[name])
    message = str(info.value)
    assert "\n" not in message
    assert str(bad[name]) in message and words in message


def test_truncated_is_refused_even_when_comfyui_tolerates_truncation(bad):
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what ComfyUI's node_helpers.pillow leaves behind
    try:
        with pytest.raises(ImageLoadError, match="truncated"):
            load_image_rgb(bad["truncated.jpg"])
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def test_max_pixels_limit_and_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        load_image_rgb(photo_path("china.jpg"), max_pixels=100_000)
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image_rgb(tmp_path / "nope.png")


def test_iter_image_files_recursive_sorted(tmp_path):
    for rel in ["b/2.png", "a/1.JPG", "c.webp", "notes.txt", ".hidden/x.png", "a/deeper/3.jpeg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == ["a/1.JPG", "a/deeper/3.jpeg", "b/2.png", "c.webp"]
