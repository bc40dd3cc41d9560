"""A foundation's manifest: what a pretrained backbone says it is, checked against its file.

Why apart from pretraining: every model trained from a foundation reads its
manifest (the registry loads the weights, training refuses a damaged folder
before decoding an image), while only the pretraining script writes one. A
real DINOv2 checkpoint has no manifest; a manifest is how a foundation says
what it is for, and a model fine-tuned from it inherits that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from osteo_batch.errors import UserError
from osteo_batch.models.digest import sha256_file


class FoundationError(UserError, ValueError):
    """A foundation folder whose manifest is unreadable or disagrees with its weights."""

    code = "foundation_damaged"
    fix = "copy the foundation folder again"


def read_manifest(weights: str | Path) -> dict[str, Any] | None:
    """The ``manifest.json`` beside (or in the folder of) a weights file, or None.

    A manifest whose hash does not match its file is an error, not a missing
    manifest: a swapped file must not inherit another's identity.
    """
    p = Path(weights)
    folder = p if p.is_dir() else p.parent
    f = folder / "manifest.json"
    if not f.is_file():
        return None
    try:
        m = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FoundationError(f"foundation manifest {f.name} in {folder.name}: unreadable ({type(e).__name__}); "
                              "copy the foundation folder again", code="foundation_manifest_unreadable") from None
    if not isinstance(m, dict):
        raise FoundationError(f"foundation manifest {f.name} in {folder.name}: not a JSON object; "
                              "copy the foundation folder again", code="foundation_manifest_unreadable")
    w = folder / "model.safetensors" if p.is_dir() else p
    if m.get("sha256") and m["sha256"] != sha256_file(w):
        raise FoundationError(f"foundation {folder.name}: model.safetensors does not match manifest.json's sha256; "
                              "the file was changed or damaged, copy the foundation folder again")
    return m
