"""The Stable Diffusion 1.5 side: CLIP tokens, checkpoint facts, LoRA files, textual inversion, buckets, captions.

Entry points: `clip_tokens.count_clip_tokens()`, `sd15` (checkpoint/UNet/CLIP facts for training),
`lora_meta` / `lora_export` (kohya-compatible LoRA files), `ti_embedding`, `buckets.BucketManager`,
`captions.lint_caption()` (the Two-Teachers rules).
"""
