"""The eye: DINOv2 loading, embedding and the on-disk feature cache, plus the ONNX conversion of the embedded model.

Entry points: `dinov2.load_dinov2()`, `dinov2.embed_images()`; `embedding.ImageEmbedding` (the record and its
cache files); `dinov2_onnx.prepare_embedded()` (the embedded dinov2-small).
"""
