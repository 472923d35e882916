"""rezcty core: pure Python logic shared by the ComfyUI nodes and the training scripts.

Nothing in this package imports ComfyUI (`comfy`, `folder_paths`, `server`, `nodes`).
"""
__version__ = "0.1.0"
