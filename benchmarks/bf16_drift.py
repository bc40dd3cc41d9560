"""bf16 autocast against fp32 on the CPU: score drift (and speed) for the model-lab grid's backbones.

Why: scoring takes bf16 only where it stays within 0.005 of fp32
(:data:`osteo_batch.scoring.precision.BF16_MAX_DRIFT`). The tests prove it on
trained tiny models; this measures the full-size foundations of the grid
(``osteo_batch.models.backbones.REGISTRY``: dinov2_small, dinov2_base,
dinov2_small_reg4, clip_vit_base, rad_dino, dinov2_base_xray).

**No real weights offline**: each backbone has random weights here, so the
figures bound the arithmetic, not a trained network's activations (trained
ViTs grow a few very large activations, which bf16 holds to 8 bits of
mantissa like any other). Two things make random weights say something:

- timm DINOv2 blocks get LayerScale 1.0: at timm's 1e-5 default for random
  weights every block is all but silent, and bf16 would look exact;
- the score comes from a head fitted to the backbone's own features: the
  first principal direction of the fp32 features over the images, scaled so
  the logits spread with standard deviation ``--logit-std`` (scores from
  about 0.1 to 0.9, as a trained model's do). The random head's own scores
  (near 1/3 for every image) are reported too, as ``raw_drift``.

Given ``--model DIR`` (a trained model folder, e.g. the demo's), its scores as
scoring computes them (calibration included) are compared too.

Usage: python benchmarks/bf16_drift.py [--images 8] [--backbones a,b] [--model DIR] [--out DIR]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

GRID = ("dinov2_small", "dinov2_base", "dinov2_small_reg4", "clip_vit_base", "rad_dino", "dinov2_base_xray")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _images(items, img_size: int, n: int):
    import numpy as np
    import torch

    from osteo_batch.scoring.tensors import DicomDataset

    ds = DicomDataset(items, img_size)
    out = [img for _, img, _ in (ds[i] for i in range(len(items))) if img is not None][:n]
    return torch.from_numpy(np.stack(out)[:, None])


def _features_and_logits(module, x, bf16: bool):
    """(pre-head features, logits) under autocast or not; the head is the last Linear."""
    import torch

    head = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    got = {}
    hook = head.register_forward_hook(lambda m, i, o: got.setdefault("f", i[0].float()))
    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = module(x).float()
    dt = time.perf_counter() - t
    hook.remove()
    return got["f"], logits, len(x) / dt


def backbone_drift(name: str, x_by_size, logit_std: float) -> dict:
    import torch

    from osteo_batch.models.model import ModelConfig, build_module, normalise

    cfg = ModelConfig.for_backbone(name)
    if cfg.family == "timm" and "dinov2" in cfg.timm_arch:
        cfg = dataclasses.replace(cfg, backbone_kwargs={**cfg.backbone_kwargs, "init_values": 1.0})
    torch.manual_seed(0)
    module = build_module(cfg).eval()
    x = normalise(x_by_size(cfg.img_size), cfg)
    _features_and_logits(module, x[:1], False), _features_and_logits(module, x[:1], True)  # warm-up
    f32, l32, ips32 = _features_and_logits(module, x, False)
    f16, l16, ips16 = _features_and_logits(module, x, True)
    raw = (torch.softmax(l32, 1)[:, -1] - torch.softmax(l16, 1)[:, -1]).abs().max()
    mu = f32.mean(0)
    direction = torch.linalg.svd(f32 - mu, full_matrices=False).Vh[0]
    z32, z16 = (f32 - mu) @ direction, (f16 - mu) @ direction
    scale = logit_std / z32.std()
    p32, p16 = torch.sigmoid(z32 * scale), torch.sigmoid(z16 * scale)
    rel = ((f16 - f32).norm(dim=1) / f32.norm(dim=1)).max()
    return {"backbone": name, "img_size": cfg.img_size, "images": len(x), "drift": round(float((p32 - p16).abs().max()), 6),
            "score_range": [round(float(p32.min()), 3), round(float(p32.max()), 3)],
            "raw_drift": round(float(raw), 6), "feature_rel_err": round(float(rel), 5),
            "fp32_ips": round(ips32, 3), "bf16_ips": round(ips16, 3)}


def model_drift(model_dir: Path, items) -> dict:
    import torch

    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.forward import Forward
    from osteo_batch.scoring.score import ScoreOptions

    model = load_model_dir(model_dir)
    x = _images(items, model.config.img_size, len(items))
    with torch.inference_mode():
        a = Forward(model, ScoreOptions(precision="fp32"))(x)
        b = Forward(model, ScoreOptions(precision="bf16"))(x)
    return {"model": model.model_id, "backbone": model.config.backbone, "images": len(a),
            "calibrated": bool(model.config.calibration), "drift": round(max(abs(p - q) for p, q in zip(a, b)), 6),
            "score_range": [round(min(a), 3), round(max(a), 3)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--backbones", default=",".join(GRID))
    ap.add_argument("--logit-std", type=float, default=1.5)
    ap.add_argument("--model", type=Path, action="append", default=[], help="a trained model folder (repeatable)")
    ap.add_argument("--model-images", type=int, default=48)
    ap.add_argument("--out", type=Path, default=None, help="keep (and reuse) the archive here")
    args = ap.parse_args()

    from osteo_batch.scoring.precision import BF16_MAX_DRIFT, cpu_capability, native_bf16
    from osteo_batch.scoring.tensors import Item
    from osteo_batch.synth.cohort import CohortSpec, existing_cohort, write_cohort

    root = args.out or Path(tempfile.mkdtemp(prefix="osteo-bf16-drift-"))
    spec = CohortSpec(n_women=max(args.images, args.model_images), n_men=0, n_young=0, n_lateral=0, n_followups=0,
                      n_unreadable=0, seed=2718)
    cohort = existing_cohort(root / "cohort", spec) or write_cohort(root / "cohort", spec, workers=os.cpu_count() or 1)
    items = [Item(str(cohort.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort.plans]
    cache: dict[int, object] = {}

    def x_by_size(size: int):
        if size not in cache:
            cache[size] = _images(items, size, args.images)
        return cache[size]

    rows = []
    for name in args.backbones.split(","):
        rows.append(backbone_drift(name, x_by_size, args.logit_std))
        _say(json.dumps(rows[-1]))
    models = [model_drift(d, items[: args.model_images]) for d in args.model]
    for m in models:
        _say(json.dumps(m))
    print(f"{'backbone':20}{'px':>5}{'drift':>10}{'raw':>10}{'feat err':>10}{'fp32/s':>8}{'bf16/s':>8}")
    for r in rows:
        print(f"{r['backbone']:20}{r['img_size']:>5}{r['drift']:>10.5f}{r['raw_drift']:>10.6f}{r['feature_rel_err']:>10.4f}"
              f"{r['fp32_ips']:>8.2f}{r['bf16_ips']:>8.2f}")
    print(json.dumps({"cpu_capability": cpu_capability(), "native_bf16": native_bf16(), "bound": BF16_MAX_DRIFT,
                      "weights": "random (no real weights offline)", "backbones": rows, "models": models,
                      "all_within": all(r["drift"] <= BF16_MAX_DRIFT for r in rows + models),
                      "machine": platform.node()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
