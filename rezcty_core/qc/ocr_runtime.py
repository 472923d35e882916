"""The QC text check's PP-OCR ONNX models on either runtime: onnxruntime when any flavour of it is installed, else
torch through onnx2torch (the requirements never list onnxruntime: docs/qc.md, README "Installing").

`OnnxModel(path, threads)` / `TorchModel(path)` load one model file; `.run(x, threads)` returns its first output as
numpy, `.characters` the recogniser's character list (from the model's own metadata; `<blank>` first, space last).
Both keep to `threads` intra-op threads (1 beside the technical checks: on 2 shared cores a second thread spins
against them; measured on torch at load 6: 0.6-0.85 s per 4 MP on one thread, 1.3-7.5 s on two).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

REC_HEIGHT = 48  # the recogniser's line height (px)
_THREADS_LOCK = threading.Lock()


def character_list(text: str) -> list[str]:
    return ["<blank>", *text.splitlines(), " "]


RUNTIMES = ("auto", "onnxruntime", "torch")


def runtime_available(name: str) -> bool:
    import importlib.util

    if name == "onnxruntime":
        return importlib.util.find_spec("onnxruntime") is not None
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx", "onnx2torch"))


def pick_runtime(asked: str = "auto") -> str:
    """`auto`: onnxruntime when any flavour of it is installed (onnxruntime, -gpu, -directml ... all install the
    `onnxruntime` module), else torch through onnx2torch (the requirements never list onnxruntime: a second copy
    beside an installed onnxruntime-gpu breaks both)."""
    if asked not in RUNTIMES:
        raise ValueError(f"text.runtime '{asked}': expected one of {', '.join(RUNTIMES)}")
    if asked != "auto":
        return asked
    return "onnxruntime" if runtime_available("onnxruntime") else "torch"


class OnnxModel:
    """One PP-OCR model in onnxruntime (CPU), `threads` intra-op threads."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = max(1, int(threads))
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.characters = character_list(self.sess.get_modelmeta().custom_metadata_map.get("character", ""))

    def run(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        return self.sess.run(None, {self.input: x})[0]  # the session was made with its threads


class TorchModel:
    """The same ONNX graph converted to a torch module by onnx2torch (CPU, float32; torch's own threads).

    PP-OCR's graphs keep their weights in Constant nodes (onnx2torch wants initializers) and lose the rank of a few
    tensors behind dynamic reshapes (onnx2torch sizes BatchNorm by rank): both are restored before converting, the
    graph itself unchanged. Same boxes as onnxruntime (tests/test_qc_text_core.py)."""

    def __init__(self, path: Path) -> None:
        import warnings

        import onnx
        import torch
        from onnx2torch import convert

        model = onnx.load(str(path))
        meta = {p.key: p.value for p in model.metadata_props}
        self.characters = character_list(meta.get("character", ""))
        _prepare_for_onnx2torch(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # channels-last: oneDNN's convolutions without a layout change around each one (measured 3x faster)
            self.module = convert(model).eval().to(memory_format=torch.channels_last)
        self.torch = torch

    def run(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        import warnings

        torch = self.torch
        with _THREADS_LOCK, torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before = torch.get_num_threads()
            if threads:  # torch's thread count is process-wide: set for this call only (ComfyUI runs one node at a time)
                torch.set_num_threads(max(1, int(threads)))
            try:
                inp = torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)
                return self.module(inp).contiguous().numpy()
            finally:
                torch.set_num_threads(before)


def _prepare_for_onnx2torch(model: Any) -> None:
    """In place: Constant nodes -> initializers; shapes inferred; the rank of a Conv output feeding a BatchNorm
    filled in where inference lost it (a fixed 48 px line height for the recogniser helps it along)."""
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[1].dim_value == 3 and not dims[2].dim_value and dims[3].dim_param:
        if "character" in {p.key for p in model.metadata_props}:  # the recogniser: lines are 48 px high
            dims[2].Clear()
            dims[2].dim_value = REC_HEIGHT
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0]))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    inferred = shape_inference.infer_shapes(model)
    graph.ClearField("value_info")
    graph.value_info.extend(inferred.graph.value_info)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input]
             if v.type.tensor_type.HasField("shape")}
    producer = {out: n for n in graph.node for out in n.output}
    for node in graph.node:
        if node.op_type != "BatchNormalization" or ranks.get(node.input[0]):
            continue
        conv = producer.get(node.input[0])
        kernel = [a for a in conv.attribute if a.name == "kernel_shape"] if conv is not None else []
        if conv is None or conv.op_type != "Conv" or not kernel:
            raise ValueError(f"{node.name}: input rank unknown and not a Conv output")
        for v in [v for v in graph.value_info if v.name == node.input[0]]:
            graph.value_info.remove(v)
        graph.value_info.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT,
                                                              [None] * (len(kernel[0].ints) + 2)))
