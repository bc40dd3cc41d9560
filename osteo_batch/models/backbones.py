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

from osteo_batch.errors import UserError

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
    family: str = "timm"  # "timm" (weights: one safetensors file) or "hf" (a Hugging Face folder)
    #: trained in full beside the LoRA adapters (the head always; random-weight demos add the patch embedding)
    lora_modules_to_save: tuple[str, ...] = ("head",)
    hf_defaults: dict[str, Any] = field(default_factory=dict)  # HF config for random initialisation


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HF_BASE = {"model_type": "dinov2", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "patch_size": 14}


REGISTRY: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("dinov2_small", "vit_small_patch14_dinov2", 518, note="DINOv2 ViT-S/14, native 518 px"),
        BackboneSpec("dinov2_base", "vit_base_patch14_dinov2", 518, note="DINOv2 ViT-B/14, native 518 px"),
        BackboneSpec("dinov2_small_reg4", "vit_small_patch14_reg4_dinov2", 518, note="DINOv2 ViT-S/14 with 4 register tokens"),
        BackboneSpec("clip_vit_base", "vit_base_patch16_clip_224", 224, mean=CLIP_MEAN, std=CLIP_STD,
                     note="CLIP ViT-B/16 image tower (a second generalist), timm format"),
        BackboneSpec("rad_dino", "", 518, family="hf", hf_defaults={**_HF_BASE, "image_size": 518},
                     note="RAD-DINO-style Dinov2 chest X-ray encoder, Hugging Face format"),
        BackboneSpec("dinov2_base_xray", "", 224, family="hf", hf_defaults={**_HF_BASE, "image_size": 224},
                     note="dinov2-base-xray-style Dinov2 encoder, Hugging Face format"),
        BackboneSpec("clip_tiny_demo", "vit_base_patch16_clip_224", 160, mean=CLIP_MEAN, std=CLIP_STD,
                     kwargs={"embed_dim": 192, "depth": 4, "num_heads": 3},
                     note="CLIP-architecture ViT cut down for CPU tests; random weights"),
        BackboneSpec("dinov2_hf_tiny_demo", "", 168, family="hf",
                     hf_defaults={"model_type": "dinov2", "hidden_size": 192, "num_hidden_layers": 4,
                                  "num_attention_heads": 3, "intermediate_size": 768, "patch_size": 14,
                                  "image_size": 168},
                     note="Hugging Face Dinov2 cut down for CPU tests; random weights"),
        BackboneSpec(
            "dinov2_tiny_demo",
            "vit_small_patch14_dinov2",
            168,
            # LayerScale at 1: at its 1e-5 default, random blocks (and their LoRA) are all but silent
            kwargs={"embed_dim": 192, "depth": 4, "num_heads": 3, "global_pool": "avg", "init_values": 1.0},
            lora_targets=("qkv", "proj", "fc1", "fc2"),
            # from random weights there are no features to adapt: the patch embedding learns in full
            # (from pretrained weights, such as the phantom foundation, only the head does; see train.py)
            lora_modules_to_save=("head", "patch_embed"),
            note=("DINOv2-architecture ViT cut to 4 blocks x 192 wide for CPU demos; its phantom foundation "
                  "ships in osteo_batch/foundations (--weights), random weights without it"),
        ),
    )
}


class UnknownBackboneError(UserError, ValueError):
    """A ``--backbone`` name the registry does not hold; the message offers the close spellings."""

    code = "unknown_backbone"


class WeightsError(UserError, ValueError):
    """Backbone weights that cannot be loaded safely or do not fit the chosen backbone."""

    code = "weights_unusable"


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No weights file where ``--weights`` points."""

    code = "weights_not_found"


def list_backbones() -> list[str]:
    return sorted(REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownBackboneError(f"unknown backbone {name!r}{hint} Known: {', '.join(list_backbones())}") from None


def build(spec_name: str, arch: str, img_size: int, kwargs: dict[str, Any], num_classes: int,
          hf_config: dict[str, Any] | None = None):
    """The network with random weights (timm makes no network call with pretrained=False)."""
    if hf_config is not None:
        from osteo_batch.models.hf import HFDinov2Classifier

        return HFDinov2Classifier(hf_config, num_classes)
    import timm

    return timm.create_model(arch, pretrained=False, img_size=img_size, num_classes=num_classes, **kwargs)


def resolve_weights(path: str | Path) -> Path:
    """A local safetensors file, or a timm/Hugging Face folder holding ``model.safetensors``."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise WeightsNotFoundError(f"backbone weights not found at {p}; give a .safetensors file or a folder holding model.safetensors")
    if p.suffix != ".safetensors":
        raise WeightsError(f"backbone weights {p.name}: only .safetensors is loaded (pickle files can run code); "
                           "convert it first", code="weights_not_safetensors")
    return p


def load_backbone_weights(model, path: str | Path) -> dict[str, Any]:
    """Load pretrained backbone weights into ``model`` (head excluded); returns provenance.

    A ``manifest.json`` beside the weights (as the shipped phantom foundation
    has) names the foundation and its intended use; a model fine-tuned from it
    inherits both. A manifest whose sha256 does not match refuses the load.
    """
    from osteo_batch.models.digest import sha256_file
    from osteo_batch.models.foundation import read_manifest

    manifest = read_manifest(path)  # checks the manifest's sha256 against the file
    foundation = None
    if manifest is not None:
        foundation = {k: manifest.get(k) for k in ("name", "sha256", "clinical_use", "intended_use", "objective")}

    def digest(f: Path) -> str:
        return foundation["sha256"] if foundation and foundation["sha256"] else sha256_file(f)

    if hasattr(model, "cam_layer"):  # a Hugging Face encoder: a checkpoint folder
        from osteo_batch.models.hf import load_hf_weights

        load_hf_weights(model, path)
        f = Path(path) / "model.safetensors"
        return {"file": f"{Path(path).name}/model.safetensors", "sha256": digest(f), "foundation": foundation}

    from safetensors.torch import load_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    p = resolve_weights(path)
    state = load_file(str(p))
    state = checkpoint_filter_fn(state, model)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise WeightsError(
            f"backbone weights {p.name} do not fit: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); check --backbone", code="weights_do_not_fit",
        )
    return {"file": p.name, "sha256": digest(p), "foundation": foundation}


def lora_targets(spec: BackboneSpec, module) -> list[str]:
    if spec.family == "hf":
        from osteo_batch.models.hf import lora_targets as hf_targets

        return hf_targets(module)
    return list(spec.lora_targets)


def cam_layer_and_grid(module):
    """The layer Grad-CAM reads and the patch grid its tokens fold into, for either family."""
    if hasattr(module, "cam_layer"):
        return module.cam_layer(), module.grid_size
    return module.blocks[0].norm1, module.patch_embed.grid_size


#: Why the first block's input norm, not the last block (as Grad-CAM on a CNN would take the last layer):
#: every attention layer mixes tokens, so by the last block each token carries what attention gathered from
#: the whole image, and with an average-pooled head the gradient there is the same for every token; the map
#: then shows where activations are large (soft tissue, the lead marker), not where the evidence came from.
#: Measured on the demo model (tonight's archive): heat on bone 13% at blocks[-1] (IoU_bone 0.05, random 0.11)
#: against 39% at blocks[0].norm1 with Grad-CAM and 46% with HiResCAM (IoU_bone 0.30), the marker's share
#: then no larger than its area. Before any attention a token is
#: its own patch, and the gradient still comes through the whole network, so the map stays class-specific.
CAM_LAYER_NOTE = "first block's input norm: tokens not yet mixed by attention"
