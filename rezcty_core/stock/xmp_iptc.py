"""Stock JPEGs with embedded XMP and IPTC (pyexiv2: bundled libexiv2, no system binary).

exiv2 does not enforce IPTC's byte limits, so they are checked here: ObjectName <= 64 bytes,
Headline <= 256, Caption-Abstract <= 2000, each keyword <= 64; values are cut at a word (or,
failing that, a UTF-8 character) boundary. The IPTC record carries the UTF-8 marker (ESC % G).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

IPTC_LIMITS = {"ObjectName": 64, "Headline": 256, "Caption": 2000, "Keywords": 64}
UTF8_MARKER = "\x1b%G"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
REZCTY_NS = "http://ns.rezcty.dev/xmp/1.0/"
JPEG_QUALITY = 95
MAX_FILE_BYTES = 45 * 1024 * 1024
CREATOR_TOOL = "rezcty Metadata Writer (ComfyUI)"

_NS_REGISTERED = False


def fit_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, at a word boundary when one is near."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    cut = data[:limit].decode("utf-8", errors="ignore")
    if " " in cut and len(cut.rsplit(" ", 1)[0]) >= limit // 2:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;-")


def srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


_ICC: bytes | None = None


def save_jpeg(pixels: np.ndarray, path: Path, quality: int = JPEG_QUALITY) -> None:
    """Write an HxWx3 uint8 array as a baseline sRGB JPEG (ICC profile embedded, 4:4:4 at quality >= 95)."""
    global _ICC
    from PIL import Image

    if _ICC is None:
        _ICC = srgb_icc()
    if quality < 95:
        raise ValueError(f"JPEG quality {quality} is below the stock minimum of 95")
    image = Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB")
    image.save(path, "JPEG", quality=int(quality), subsampling=0, optimize=False, icc_profile=_ICC)


def _register_ns() -> None:
    global _NS_REGISTERED
    if not _NS_REGISTERED:
        import pyexiv2

        try:
            pyexiv2.registerNs(REZCTY_NS, "rezcty")
        except Exception as e:  # already registered by another instance in this process
            if "exist" not in str(e).lower():
                raise
        _NS_REGISTERED = True


def iptc_fields(title: str, description: str, keywords: list[str]) -> dict[str, Any]:
    """IPTC IIM values with the byte limits applied and the UTF-8 marker set."""
    kept, seen = [], set()
    for k in keywords:
        short = fit_bytes(k, IPTC_LIMITS["Keywords"])
        if short and short.lower() not in seen:
            seen.add(short.lower())
            kept.append(short)
    return {
        "Iptc.Envelope.CharacterSet": UTF8_MARKER,
        "Iptc.Application2.ObjectName": fit_bytes(title, IPTC_LIMITS["ObjectName"]),
        "Iptc.Application2.Headline": fit_bytes(title, IPTC_LIMITS["Headline"]),
        "Iptc.Application2.Caption": fit_bytes(description, IPTC_LIMITS["Caption"]),
        "Iptc.Application2.Keywords": kept,
    }


def xmp_fields(title: str, description: str, keywords: list[str], repro: dict | None = None) -> dict[str, Any]:
    """XMP values: Dublin Core, Photoshop headline, IPTC Extension source type, rezcty reproducibility."""
    fields: dict[str, Any] = {
        "Xmp.dc.title": {'lang="x-default"': title},
        "Xmp.dc.description": {'lang="x-default"': description},
        "Xmp.dc.subject": list(keywords),
        "Xmp.photoshop.Headline": title,
        "Xmp.iptcExt.DigitalSourceType": DIGITAL_SOURCE_TYPE,
        "Xmp.xmp.CreatorTool": CREATOR_TOOL,
    }
    repro = repro or {}
    if repro.get("prompt") is not None:
        fields["Xmp.rezcty.Prompt"] = str(repro["prompt"])
    if repro.get("seeds"):
        fields["Xmp.rezcty.Seed"] = ", ".join(str(s) for s in repro["seeds"])
    if repro.get("models"):
        fields["Xmp.rezcty.Models"] = json.dumps(repro["models"], sort_keys=True, ensure_ascii=False)
    if repro:
        fields["Xmp.rezcty.Generation"] = json.dumps(repro, sort_keys=True, ensure_ascii=False, default=str)
    return fields


def embed_metadata(path: Path, title: str, description: str, keywords: list[str], repro: dict | None = None) -> None:
    """Write XMP + IPTC (+ EXIF colour space sRGB and description) into an existing JPEG."""
    import pyexiv2

    _register_ns()
    with pyexiv2.Image(str(path)) as image:
        image.modify_xmp(xmp_fields(title, description, keywords, repro))
        image.modify_iptc(iptc_fields(title, description, keywords))
        image.modify_exif({"Exif.Photo.ColorSpace": "1", "Exif.Image.ImageDescription": description,
                           "Exif.Image.Software": CREATOR_TOOL})


def read_metadata(path: Path) -> dict[str, Any]:
    """XMP and IPTC as pyexiv2 reads them back (a convenience for checks; tests also use exiftool)."""
    import pyexiv2

    _register_ns()
    with pyexiv2.Image(str(path)) as image:
        return {"xmp": image.read_xmp(), "iptc": image.read_iptc()}


def write_stock_jpeg(pixels: np.ndarray, path: Path, title: str, description: str, keywords: list[str],
                     repro: dict | None = None) -> int:
    """Save + embed; returns the file size. ValueError when the file breaks Adobe's 45 MB limit."""
    save_jpeg(pixels, path)
    embed_metadata(path, title, description, keywords, repro)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name} is {size / 2**20:.1f} MB, over Adobe's 45 MB limit; reduce the resolution")
    return size
