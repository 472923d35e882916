"""Real photos and the odd / broken image files every image-reading path must survive.

The photos are the two JPEGs scikit-learn ships (`sklearn/datasets/images/`), read as files,
so tests run offline without importing scikit-learn.
"""
from __future__ import annotations

import importlib.util
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo_path(name: str = "china.jpg") -> Path:
    """A real photograph shipped inside the scikit-learn wheel (china.jpg or flower.jpg)."""
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.origin, "scikit-learn is a runtime dependency"
    return Path(spec.origin).parent / "datasets" / "images" / name


def photo(name: str = "china.jpg", size: tuple[int, int] | None = None) -> Image.Image:
    with Image.open(photo_path(name)) as im:
        im = im.convert("RGB")
        return im.resize(size, Image.BICUBIC) if size else im.copy()


def photo_crops(count: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[Image.Image]:
    """`count` distinct real-photo images: random crops of the two photos, resized to `size`."""
    rng = np.random.default_rng(seed)
    sources = [photo("china.jpg"), photo("flower.jpg")]
    out = []
    for i in range(count):
        src = sources[i % 2]
        w, h = src.size
        cw, ch = int(rng.integers(w // 3, w)), int(rng.integers(h // 3, h))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append(src.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC))
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (10 gigapixels by default)."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
    return b"\x89PNG\r\n\x1a\n" + header + idat + _png_chunk(b"IEND", b"")


def write_odd_images(folder: Path) -> dict[str, Path]:
    """Unusual but valid files: name -> path. Each must load as RGB uint8."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo("flower.jpg", (96, 64))
    files: dict[str, Path] = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        files[name] = folder / name
        im.save(files[name], **kw)

    save("cmyk.jpg", base.convert("CMYK"), quality=95)
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    save("grey16.png", Image.fromarray(grey16))
    rgba = base.convert("RGBA")
    alpha = np.zeros((64, 96), dtype=np.uint8)
    alpha[:, 48:] = 255  # left half fully transparent: must come out white
    rgba.putalpha(Image.fromarray(alpha))
    save("rgba.png", rgba)
    save("grey.png", base.convert("L"))
    save("palette.png", base.convert("P", palette=Image.ADAPTIVE, colors=32))
    save("photo.webp", base, quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save("exif_rotated.jpg", base, exif=exif.tobytes(), quality=95)
    return files


def write_bad_images(folder: Path) -> dict[str, Path]:
    """Files that must be refused with a clear error: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / name for name in ("empty.png", "truncated.jpg", "not_an_image.png", "bomb.png")}
    files["empty.png"].write_bytes(b"")
    buf = io.BytesIO()
    photo("china.jpg", (256, 192)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    files["truncated.jpg"].write_bytes(data[: len(data) // 2])
    files["not_an_image.png"].write_text("this is a caption, not a picture\n")
    files["bomb.png"].write_bytes(bomb_png_bytes())
    return files


def skimage_photo(name: str) -> np.ndarray:
    """A real photo from scikit-image's bundled data folder (installed with the dev requirements), as RGB."""
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.origin, "scikit-image comes with the dev requirements (brisque needs it)"
    with Image.open(Path(spec.origin).parent / "data" / name) as im:
        return np.asarray(im.convert("RGB"))
