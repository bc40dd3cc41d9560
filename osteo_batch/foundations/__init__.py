"""Foundations shipped with the package: pretrained backbones in timm format, with a manifest.

Only one ships: ``phantom_dinov2_tiny``, a DINOv2-architecture ViT pretrained
by ``scripts/pretrain_foundation.py`` (self-supervised, on phantom
radiographs). It is for the demo and the tests, **not for patients**; its
manifest says so, and every model fine-tuned from it inherits that warning.
A site passes its own DINOv2 checkpoint the same way: ``--weights FOLDER``.
"""

from __future__ import annotations

from pathlib import Path

#: The phantom foundation's folder (model.safetensors, config.json, manifest.json).
PHANTOM = Path(__file__).resolve().parent / "phantom_dinov2_tiny"
