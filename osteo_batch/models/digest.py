"""The sha256 of a file, read in chunks: model IDs and foundation manifests both rest on it.

Why one helper: weights files run to gigabytes, so they are hashed a megabyte
at a time, never read whole; the model folder and the foundation manifest
must agree on exactly how.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
