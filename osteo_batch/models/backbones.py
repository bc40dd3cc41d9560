"""The backbone registry: names users pass to ``--backbone``, and how each is built.

Why a registry: a site swaps DINOv2-S for DINOv2-B or a register-token variant
by name, and every entry carries its preprocessing (input size, mean, std) the
way timm's pretrained configs do. Building the network is separate from loading
weights: weights come only from local safetensors files (never pickle, never
the network), so an air-gapped hospital runs exactly what it was given.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    timm_arch: str
    img_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    lora_targets: tuple[str, ...] = ("qkv",)
    note: str = ""


REGISTRY: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("dinov2_small", "vit_small_patch14_dinov2", 518, note="DINOv2 ViT-S/14, native 518 px"),
        BackboneSpec("dinov2_base", "vit_base_patch14_dinov2", 518, note="DINOv2 ViT-B/14, native 518 px"),
        BackboneSpec("dinov2_small_reg4", "vit_small_patch14_reg4_dinov2", 518, note="DINOv2 ViT-S/14 with 4 register tokens"),
        BackboneSpec(
            "dinov2_tiny_demo",
            "vit_small_patch14_dinov2",
            168,
            kwargs={"embed_dim": 192, "depth": 4, "num_heads": 3, "global_pool": "avg"},
            lora_targets=("qkv", "proj", "fc1", "fc2"),
            note="DINOv2-architecture ViT cut to 4 blocks x 192 wide for CPU demos; random weights",
        ),
    )
}


class UnknownBackboneError(ValueError):
    pass


def list_backbones() -> list[str]:
    return sorted(REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownBackboneError(f"unknown backbone {name!r}{hint} Known: {', '.join(list_backbones())}") from None


def build(spec_name: str, arch: str, img_size: int, kwargs: dict[str, Any], num_classes: int):
    """The network with random weights (timm makes no network call with pretrained=False)."""
    import timm

    return timm.create_model(arch, pretrained=False, img_size=img_size, num_classes=num_classes, **kwargs)


def resolve_weights(path: str | Path) -> Path:
    """A local safetensors file, or a timm/Hugging Face folder holding ``model.safetensors``."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"backbone weights not found at {p}; give a .safetensors file or a folder holding model.safetensors")
    if p.suffix != ".safetensors":
        raise ValueError(f"backbone weights {p.name}: only .safetensors is loaded (pickle files can run code); convert it first")
    return p


def load_backbone_weights(model, path: str | Path) -> dict[str, Any]:
    """Load pretrained backbone weights into ``model`` (head excluded); returns provenance."""
    import hashlib

    from safetensors.torch import load_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    p = resolve_weights(path)
    state = load_file(str(p))
    state = checkpoint_filter_fn(state, model)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(
            f"backbone weights {p.name} do not fit: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); check --backbone"
        )
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"file": p.name, "sha256": h.hexdigest()}
