"""Robust image loading: any odd file either becomes an RGB uint8 array or a clear one-line error.

    load_image_rgb(path) -> np.ndarray (H, W, 3) uint8

Handles CMYK, 16-bit, RGBA / LA / transparent palette (composited on white), grayscale,
palette, EXIF orientation and animated files (first frame). Refuses, with an `ImageLoadError`
that names the file: 0-byte, truncated, not-an-image and decompression-bomb files.
Pixels are not colour-managed (ICC profiles are ignored), exactly like ComfyUI's LoadImage,
so a file and the same file loaded in ComfyUI give the same pixels.
"""
from __future__ import annotations

import os
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Above Adobe Stock's 100 MP upload limit, far below what would exhaust memory.
DEFAULT_MAX_PIXELS = 120_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
WHITE = (255, 255, 255)

# ComfyUI (node_helpers.pillow) flips this global on to tolerate truncated files; we must not.
_TRUNCATION_LOCK = threading.Lock()


class ImageLoadError(ValueError):
    """A file that is not a usable image; the message is one line naming the file and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str = "re-export the image or remove it"):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem} ({hint})")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_image_files(root: str | os.PathLike, recursive: bool = True) -> Iterator[Path]:
    """Image files (by extension) under `root`, in a stable sorted order; hidden entries skipped."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    pattern = "**/*" if recursive else "*"
    paths = [p for p in root.glob(pattern)
             if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    yield from sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def to_rgb_uint8(im: Image.Image, background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """An already-opened, EXIF-corrected PIL image -> (H, W, 3) uint8, whatever its mode."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: scale 0..65535 down to 0..255 instead of clipping to white
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        grey = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        grey = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        canvas.alpha_composite(rgba)
        return np.asarray(canvas.convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def load_image_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
                   background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 array; raise `ImageLoadError` (one line) when unusable."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found", "check the path") from None
    except OSError as e:
        raise ImageLoadError(path, f"cannot read file: {e.strerror or e}", "check permissions") from None
    if path.is_dir():
        raise ImageLoadError(path, "is a folder, expected an image file", "pass a file")
    if size == 0:
        raise ImageLoadError(path, "empty file (0 bytes), expected an image")
    with _TRUNCATION_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            return _decode(path, max_pixels, background)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _decode(path: Path, max_pixels: int, background: tuple[int, int, int]) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageLoadError(
                        path, f"{width}x{height} = {width * height / 1e6:.0f} MP exceeds the limit of "
                        f"{max_pixels / 1e6:.0f} MP (possible decompression bomb)", "downscale it first")
                if width == 0 or height == 0:
                    raise ImageLoadError(path, f"image has a zero size ({width}x{height})")
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb_uint8(im, background)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, f"decompression bomb refused by Pillow: {e}", "downscale it first") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, f"not an image (unrecognised format, {path.stat().st_size} bytes)",
                             "expected JPEG, PNG, WebP, BMP or TIFF") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        problem = "truncated or corrupt image data" if "truncat" in message.lower() or isinstance(e, EOFError) \
            else f"corrupt image data ({message})"
        raise ImageLoadError(path, problem) from None
