"""Hugging Face-format Dinov2 encoders (RAD-DINO, dinov2-base-xray style) as 3-class screening models.

Why a wrapper: medical CXR encoders ship as ``transformers`` Dinov2 checkpoints,
not timm models. This module gives them the same shape as our timm models (a
``head``, ``num_prefix_tokens``, a patch grid, a Grad-CAM layer) so training,
LoRA, scoring and explanations treat both families alike. The network is built
from a config dict stored in the model folder, so loading never touches the
network or the original checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from osteo_batch.errors import UserError


class HFCheckpointError(UserError, ValueError):
    """A Hugging Face folder that is not a Dinov2 checkpoint this wrapper can build."""

    code = "not_a_dinov2_checkpoint"
    fix = "give the folder of a Hugging Face Dinov2 checkpoint (model_type dinov2 or dinov2_with_registers)"


def _classes(hf_config: dict[str, Any]):
    from transformers import Dinov2Config, Dinov2Model

    if hf_config.get("num_register_tokens"):
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        return Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    return Dinov2Config, Dinov2Model


class HFDinov2Classifier(nn.Module):
    """Dinov2 encoder + linear head on the class token."""

    def __init__(self, hf_config: dict[str, Any], num_classes: int):
        super().__init__()
        cfg_cls, model_cls = _classes(hf_config)
        cfg = cfg_cls(**{k: v for k, v in hf_config.items() if k not in ("architectures", "transformers_version")})
        self.backbone = model_cls(cfg)
        self.head = nn.Linear(cfg.hidden_size, num_classes)
        self.num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        self.grid_size = (cfg.image_size // cfg.patch_size,) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(pixel_values=x).last_hidden_state  # layer-normed tokens
        return self.head(h[:, 0])

    def cam_layer(self) -> nn.Module:
        return self.backbone.encoder.layer[0].norm1  # before any attention mixes tokens (backbones.CAM_LAYER_NOTE)


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local Hugging Face checkpoint folder."""
    import json

    p = Path(folder) / "config.json"
    if not p.is_file():
        raise HFCheckpointError(f"{folder}: no config.json; give the folder of a Hugging Face Dinov2 checkpoint",
                                code="hf_config_missing")
    cfg = json.loads(p.read_text())
    if cfg.get("model_type") not in ("dinov2", "dinov2_with_registers"):
        raise HFCheckpointError(f"{folder}: model_type {cfg.get('model_type')!r} is not a Dinov2 checkpoint")
    return cfg


def load_hf_weights(module: HFDinov2Classifier, folder: str | Path) -> None:
    """Load a local safetensors checkpoint into ``module.backbone`` (offline, strict)."""
    _, model_cls = _classes(read_hf_config(folder))
    if not (Path(folder) / "model.safetensors").is_file():
        raise HFCheckpointError(f"{folder}: no model.safetensors (pickle checkpoints are not loaded)",
                                code="hf_weights_missing")
    src = model_cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    module.backbone.load_state_dict(src.state_dict(), strict=True)


def lora_targets(module: nn.Module) -> list[str]:
    """Attention projections to adapt: ``query``/``value`` (transformers 4) or ``q_proj``/``v_proj`` (5)."""
    names = {n.rsplit(".", 1)[-1] for n, _ in module.named_modules()}
    return ["query", "value"] if "query" in names else ["q_proj", "v_proj"]
