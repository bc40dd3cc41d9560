"""A saved model is a directory: weights, config, card. This module reads and writes it.

Layout::

    model.safetensors   merged weights (LoRA folded into the backbone), no pickle
    config.json         backbone, input size, normalisation, labels, threshold, bands
    card.json           validation metrics, provenance, intended use
    card.html           the same card for people

The model ID is a content hash of the weights and the inference fields of the
config, so every score row names the exact model that produced it, and a
retrained or recalibrated model gets a new ID (and its images are rescored).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osteo_batch.errors import UserError
from osteo_batch.models.digest import sha256_file
from osteo_batch.models.labels import LABELS

FORMAT = "osteo-batch-model/1"


class ModelDirError(UserError, ValueError):
    """A model directory that cannot be used; the message says what is wrong and the fix."""

    code = "model_dir_unusable"


@dataclass
class ModelConfig:
    backbone: str
    timm_arch: str
    img_size: int
    backbone_kwargs: dict[str, Any]
    mean: list[float]
    std: list[float]
    threshold: float
    bands: dict[str, float]
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    score_label: str = "osteoporosis"
    lora: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    family: str = "timm"
    hf_config: dict[str, Any] | None = None  # the Hugging Face encoder's config (family "hf")
    calibration: dict[str, Any] | None = None  # site recalibration of P(osteoporosis), see models/calibrate.py

    @classmethod
    def for_backbone(cls, name: str, *, lora_r: int = 8, lora_alpha: int = 16,
                     weights: str | Path | None = None) -> "ModelConfig":
        """A config for registry backbone ``name``; threshold and bands are set after validation.

        For a Hugging Face encoder the architecture comes from the weights folder's
        ``config.json`` (so a site's checkpoint defines its own size), else from
        the registry's defaults.
        """
        from osteo_batch.models.backbones import get_backbone

        spec = get_backbone(name)
        hf_config, img_size = None, spec.img_size
        if spec.family == "hf":
            from osteo_batch.models.hf import read_hf_config

            hf_config = read_hf_config(weights) if weights else dict(spec.hf_defaults)
            img_size = int(hf_config.get("image_size", img_size))
        return cls(
            backbone=spec.name, timm_arch=spec.timm_arch, img_size=img_size, backbone_kwargs=dict(spec.kwargs),
            mean=list(spec.mean), std=list(spec.std), threshold=0.5, bands={"high": 0.5},
            lora={"r": lora_r, "alpha": lora_alpha, "target_modules": list(spec.lora_targets), "merged": True},
            family=spec.family, hf_config=hf_config,
        )

    def inference_fields(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("lora", None)
        if d.get("family") == "timm" and d.get("hf_config") is None:  # IDs of timm models predate families
            d.pop("family")
            d.pop("hf_config")
        if d.get("calibration") is None:
            d.pop("calibration")
        return d


@dataclass
class LoadedModel:
    module: Any  # torch.nn.Module in eval mode
    config: ModelConfig
    model_id: str
    path: Path
    card: dict[str, Any]


def compute_model_id(weights: Path, config: ModelConfig) -> str:
    h = hashlib.sha256()
    h.update(sha256_file(weights).encode())
    h.update(json.dumps(config.inference_fields(), sort_keys=True).encode())
    return "m-" + h.hexdigest()[:16]


def build_module(config: ModelConfig):
    from osteo_batch.models.backbones import build

    return build(config.backbone, config.timm_arch, config.img_size, config.backbone_kwargs, len(config.labels),
                 hf_config=config.hf_config if config.family == "hf" else None)


def save_model_dir(module, config: ModelConfig, out: str | Path) -> str:
    """Write weights and config; returns the model ID. The card is written by the caller."""
    from safetensors.torch import save

    from osteo_batch.outputs import private_dir, write_private

    out = private_dir(out)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_private(out / "model.safetensors", save(state, metadata={"format": FORMAT}))
    write_private(out / "config.json", json.dumps(asdict(config), indent=2))
    return compute_model_id(out / "model.safetensors", config)


def staging_dir(out: str | Path) -> Path:
    """Where a model folder is written before :func:`publish_model_dir` swaps it in."""
    import shutil

    out = Path(out)
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def publish_model_dir(staging: Path, out: str | Path) -> None:
    """Swap a completely written model folder into place: a reader (or a crash)
    sees the old folder or the new one, never new weights beside an old card."""
    import os
    import secrets
    import shutil

    out = Path(out)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{secrets.token_hex(3)}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_config(path: str | Path) -> ModelConfig:
    p = Path(path)
    cfg_path = p / "config.json"
    if not p.is_dir():
        raise ModelDirError(f"model {p} is not a directory; pass the folder that holds model.safetensors and config.json")
    for need in ("model.safetensors", "config.json"):
        if not (p / need).is_file():
            raise ModelDirError(f"model {p}: {need} is missing; train one with `osteo-batch train` or copy the whole folder")
    try:
        raw = json.loads(cfg_path.read_text())
        if raw.get("format") != FORMAT:
            raise ModelDirError(f"model {p}: config.json format {raw.get('format')!r}, expected {FORMAT!r}")
        return ModelConfig(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise ModelDirError(f"model {p}: config.json is not a valid model config ({e})") from None


def check_model_dir(path: str | Path) -> str:
    """Check a model folder before a run starts, cheaply (no torch); returns its model ID.

    Why: a damaged ``model.safetensors`` was found only when the score stage
    loaded it, after a whole sweep. Here the safetensors header is parsed
    (a truncated or garbled file fails) and the folder's model ID, a hash of
    the weights and the inference config, is compared with the one its card
    recorded when the model was written (a flipped byte anywhere fails).
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    cfg = read_config(p)
    weights = p / "model.safetensors"
    try:
        with safe_open(str(weights), framework="numpy") as f:
            names = list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelDirError(f"model {p}: model.safetensors cannot be read ({str(e).splitlines()[0][:120]}); "
                            "the file is damaged, copy the model folder again") from None
    if not names:
        raise ModelDirError(f"model {p}: model.safetensors holds no tensors; copy the model folder again")
    model_id = compute_model_id(weights, cfg)
    card_path = p / "card.json"
    if card_path.is_file():
        try:
            recorded = json.loads(card_path.read_text()).get("model_id")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ModelDirError(f"model {p}: card.json is not valid JSON; copy the model folder again") from None
        if recorded and recorded != model_id:
            raise ModelDirError(f"model {p}: the weights or config.json changed since the model was written "
                                f"(model ID {model_id}, its card says {recorded}); the folder is damaged, "
                                "copy it again")
    return model_id


def load_model_dir(path: str | Path, *, device: str = "cpu", model_id: str | None = None) -> LoadedModel:
    """Load a model directory for inference. Weights come from safetensors only.

    ``model_id``: the ID a run pinned when it started (:class:`osteo_batch.run.context.RunContext`,
    which also checks the weights file is the one it hashed); given, the weights are not hashed again.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    cfg = read_config(p)
    module = build_module(cfg)
    try:
        state = load_file(str(p / "model.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ModelDirError(f"model {p}: model.safetensors cannot be read ({e}); the file is damaged, copy it again") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ModelDirError(f"model {p}: weights do not match config.json ({first})") from None
    module.eval().to(device)
    card = {}
    if (p / "card.json").is_file():
        card = json.loads((p / "card.json").read_text())
    return LoadedModel(module, cfg, model_id or compute_model_id(p / "model.safetensors", cfg), p, card)


def normalise(batch, config: ModelConfig):
    """(N, 1, H, W) in [0, 1] to the backbone's 3-channel normalised input."""
    import torch

    mean = torch.tensor(config.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch.expand(-1, 3, -1, -1) - mean) / std


def risk_band(score: float, bands: dict[str, float]) -> str:
    """'very high', 'high' or 'below threshold', from the model's band edges, on the displayed score."""
    from osteo_batch.models.bands import band_of

    return band_of(score, bands)
