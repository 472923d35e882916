"""The SHA-256 of a file: one function for model hashes, wheel checks, the queue's file store and set-up.

Standard library only: `tools/rezcty.py` uses it before the venv exists.
"""
from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (a 16 GB checkpoint never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
