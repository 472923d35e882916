"""The embedded Real-ESRGAN upscalers: ncnn conversion, core UpscaleModelLoader in a fresh base directory, real weights."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from harness import REPO, ComfyError
from rezcty_core.common.paths import embedded_dir
from rezcty_core.factory.validate import validate_graph
from rezcty_core.sd import upscaler

NAMES = ["RealESRGAN_x4plus.safetensors", "RealESRGAN_x4plus_anime.safetensors"]
RAW = embedded_dir() / "raw" / upscaler.RAW_DIR


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def photo(size: int = 128) -> np.ndarray:
    """scikit-image's astronaut (a real photograph), area-reduced to `size` px."""
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.BOX))


def upscale_graph(image: str, model: str, prefix: str) -> dict:
    return {
        "load": {"class_type": "LoadImage", "inputs": {"image": image}},
        "model": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model}},
        "up": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["model", 0], "image": ["load", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["up", 0], "filename_prefix": prefix}},
    }


def upscaler_options(comfy) -> list[str]:
    spec = comfy.object_info("UpscaleModelLoader")["UpscaleModelLoader"]["input"]["required"]["model_name"]
    return list(spec[1]["options"] if spec[0] == "COMBO" else spec[0])


# --- the converter (no server) ---------------------------------------------------------------------

def test_converted_files_are_spandrel_esrgan():
    """spandrel (ComfyUI's loader) detects both files as ESRGAN x4 with Real-ESRGAN's depths and sizes."""
    import spandrel

    expected = {"RealESRGAN_x4plus.safetensors": (23, 16_697_987), "RealESRGAN_x4plus_anime.safetensors": (6, 4_467_779)}
    for name, (blocks, params) in expected.items():
        desc = spandrel.ModelLoader().load_from_file(str(upscaler.embedded_upscaler_dir() / name))
        assert desc.architecture.id == "ESRGAN" and desc.scale == 4
        assert desc.input_channels == 3 and desc.output_channels == 3
        assert sum(p.numel() for p in desc.model.parameters()) == params
        keys = desc.model.state_dict()
        assert len({k.split('.')[3] for k in keys if k.startswith('model.1.sub.') and '.RDB' in k}) == blocks


def test_every_byte_of_the_bin_maps(tmp_path):
    """The .bin is consumed exactly: one byte more, one byte less or a bad tag is refused, naming the file."""
    param, bin_ = RAW / "realesrgan-x4plus-anime.param", RAW / "realesrgan-x4plus-anime.bin"
    state = upscaler.ncnn_to_state_dict(param, bin_)
    assert len(state) == 2 * (1 + 6 * 15 + 5)
    data = bin_.read_bytes()
    for label, blob in {"extra": data + b"\0\0\0\0", "short": data[:-4], "tag": b"\x01\x02\x03\x04" + data[4:]}.items():
        bad = tmp_path / f"{label}.bin"
        bad.write_bytes(blob)
        with pytest.raises(upscaler.NcnnFormatError) as err:
            upscaler.ncnn_to_state_dict(param, bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_prepare_is_idempotent_and_imports_no_torch():
    """A set-up re-run with the files in place converts nothing and imports neither torch nor safetensors."""
    folder = upscaler.embedded_upscaler_dir()
    before = {n: (folder / n).stat().st_mtime_ns for n in NAMES}
    code = ("import sys; from pathlib import Path; from rezcty_core.sd.upscaler import prepare_embedded; "
            f"prepare_embedded(Path({str(embedded_dir())!r})); "
            "assert 'torch' not in sys.modules and 'safetensors' not in sys.modules, 'heavy import'")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    assert {n: (folder / n).stat().st_mtime_ns for n in NAMES} == before


# --- through the real server -----------------------------------------------------------------------

def test_core_loader_lists_embedded_upscalers_in_fresh_base(comfy):
    """The session server runs on a fresh, empty base directory: the names come from the embedded folder."""
    assert not any((comfy.models_dir / "upscale_models").glob("RealESRGAN*"))
    options = upscaler_options(comfy)
    for name in NAMES:
        assert name in options


@pytest.mark.parametrize("model", ["RealESRGAN_x4plus.safetensors"])
def test_x4_of_a_real_photo_reduces_back_to_the_input(comfy, model):
    """LoadImage -> UpscaleModelLoader -> ImageUpscaleWithModel -> SaveImage: x4, and back by 4 >= 30 dB.

    Random or mis-ordered weights give ~6 dB; plain Lanczos x4 gives much higher (it is a smooth
    interpolation), so the blur check in bench/bench_upscale.py is what shows the model adds detail.
    """
    src = photo(128)
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(src).save(comfy.input_dir / "upscale_astronaut.png")
    result = comfy.run(upscale_graph("upscale_astronaut.png", model, "upscale/astronaut"))
    out = np.asarray(Image.open(comfy.output_file(result.ui("save")["images"][0])).convert("RGB"))
    assert out.shape == (512, 512, 3)
    back = np.asarray(Image.fromarray(out).resize((128, 128), Image.BILINEAR))
    value = psnr(back, src)
    assert value >= 30.0, f"x4 reduced back by 4: {value:.2f} dB"


def test_a_corrupt_upscaler_is_cores_error_and_the_embedded_one_still_loads(comfy, tmp_path):
    """The pack only adds a search path: core's loader, unpatched, reports the user's bad files as its own errors at
    that node, and the embedded upscaler loads after them in the same server."""
    folder = comfy.models_dir / "upscale_models"
    real = upscaler.embedded_upscaler_dir() / NAMES[1]
    cases = {
        "garbage.safetensors": b"this is not a model\n" * 50,
        "truncated.safetensors": real.read_bytes()[: 1 << 20],
    }
    from safetensors.numpy import save_file

    save_file({"foo.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "other.safetensors"))
    cases["not_an_upscaler.safetensors"] = (tmp_path / "other.safetensors").read_bytes()
    for name, blob in cases.items():
        (folder / name).write_bytes(blob)
    try:
        for name in cases:
            graph = upscale_graph("upscale_astronaut.png", name, "upscale/corrupt")
            graph["load"]["inputs"]["image"] = _tiny_input(comfy)
            with pytest.raises(ComfyError) as failed:
                comfy.run(graph)
            # the prompt fails at the loader, where the web page shows the error beside the file's name
            assert failed.value.payload.get("node_type") == "UpscaleModelLoader", str(failed.value)
            payload = failed.value.payload  # core's own words (spandrel's UnsupportedModelError has an empty message)
            assert (payload.get("exception_type", "") + payload.get("exception_message", "")).strip(), payload
        graph = upscale_graph("upscale_astronaut.png", NAMES[1], "upscale/after_corrupt")
        graph["load"]["inputs"]["image"] = _tiny_input(comfy)
        result = comfy.run(graph)
        assert Image.open(comfy.output_file(result.ui("save")["images"][0])).size == (64, 64)
    finally:
        for name in cases:
            (folder / name).unlink()


def _tiny_input(comfy) -> str:
    path = comfy.input_dir / "upscale_tiny.png"
    if not path.exists():
        comfy.input_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(16)).save(path)
    return path.name


def test_preflight_names_a_missing_upscaler_and_where_to_put_it(comfy):
    graph = upscale_graph(_tiny_input(comfy), "RealESRGAN_x4plus_renamed.pth", "upscale/missing")
    problems = validate_graph(graph, comfy.object_info())
    assert len(problems) == 1, problems
    line = problems[0]
    assert "RealESRGAN_x4plus_renamed.pth" in line and "models/upscale_models/" in line
    assert "RealESRGAN_x4plus.safetensors" in line  # what is there instead
