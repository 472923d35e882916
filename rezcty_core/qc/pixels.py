"""What the QC measurements share about the pixels: the uint8 RGB input check, the luma weights and the
sampling stride of the pure statistics."""
from __future__ import annotations

import math

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
STAT_SAMPLES = 250_000  # pixel statistics (exposure, colour) read a strided sample of about this size


def as_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    return arr[..., :3]


def sample_step(n_pixels: int, target: int = 1_000_000) -> int:
    """Row/column stride that keeps pure statistics (histograms, means) near `target` samples."""
    return max(1, int(math.sqrt(n_pixels / target)))
