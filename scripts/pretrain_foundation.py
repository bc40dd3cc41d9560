#!/usr/bin/env python
"""Reproduce the shipped phantom foundation: osteo_batch/foundations/phantom_dinov2_tiny.

    .venv/bin/python scripts/pretrain_foundation.py [--out DIR] [--images N] [--epochs E]

1. Draws an unlabelled phantom archive with a cohort seed that no demo, study
   or test cohort uses (PRETRAIN_SEED), written as real DICOM files at twice
   the model's input size and read back through the pipeline's own decoder,
   so pretraining sees exactly what scoring will see. Only the archive folder
   is read: the DXA and truth tables that the cohort writer leaves beside it
   are never opened.
2. Pretrains the DINOv2-architecture ViT of the registry's ``dinov2_tiny_demo``
   self-supervised: VICReg between a masked and an unmasked view of each
   phantom, plus SimMIM on the masked one (osteo_batch.models.pretrain).
3. Writes the timm-format folder with its manifest: sha256, architecture,
   preprocessing, intended use, and the recipe (seeds, image count,
   resolution, epochs, wall time, machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The pretraining cohort's seed; tests/models/test_foundation.py checks no other cohort draws it.
PRETRAIN_SEED = 31_415_926


def machine() -> dict:
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "osteo_batch" / "foundations" / "phantom_dinov2_tiny")
    ap.add_argument("--images", type=int, default=2500, help="phantom radiographs to pretrain on")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=PRETRAIN_SEED)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the phantom archive here (default: a temp folder)")
    args = ap.parse_args(argv)

    from osteo_batch.synth import cohort as synth
    from osteo_batch.models.backbones import get_backbone
    from osteo_batch.models.pretrain import PretrainConfig, pretrain, write_foundation
    from osteo_batch.models.predict import decode_cached
    from osteo_batch.scoring.tensors import Item

    spec_bb = get_backbone("dinov2_tiny_demo")
    side = 2 * spec_bb.img_size
    n = args.images
    spec = synth.CohortSpec(
        n_women=int(n * 0.8), n_men=int(n * 0.1), n_young=n - int(n * 0.8) - int(n * 0.1), n_lateral=n // 20,
        n_followups=0, n_unreadable=0, seed=args.seed, min_side=side, max_side=int(side * 1.15),
        share_j2k=0.2, share_rle=0.2, dxa_fraction=0.0, recent_dxa_fraction=0.0,
    )
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="osteo-pretrain-") as tmp:
        work = args.workdir or Path(tmp)
        cohort = synth.existing_cohort(work, spec)
        reused = cohort is not None
        cohort = cohort or synth.write_cohort(work, spec)
        plans, archive = cohort.plans, cohort.archive
        print(f"[pretrain] {len(plans)} phantoms drawn in {time.monotonic() - t0:.0f} s", flush=True)
        items = [Item(str(archive / p.filename), p.sop_instance_uid, None) for p in plans]
        x, ok = decode_cached(items, spec_bb.img_size, 2, str(work / "cache") if args.workdir else None)
    print(f"[pretrain] {len(ok)} decoded at {spec_bb.img_size} px ({time.monotonic() - t0:.0f} s)", flush=True)
    cfg = PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0)
    res = pretrain(x, cfg, progress=lambda e, total, loss: print(
        f"[pretrain] epoch {e}/{total} loss {loss:.4f} ({time.monotonic() - t0:.0f} s)", flush=True))
    recipe = {
        "script": "scripts/pretrain_foundation.py",
        "cohort_seed": args.seed,
        "images": len(ok),
        "image_mix": {"women_50_plus": spec.n_women, "men": spec.n_men, "young_women": spec.n_young,
                      "lateral_views": spec.n_lateral, "storage": "20% JPEG 2000, 20% RLE, rest uncompressed"},
        "detector_side_px": [spec.min_side, spec.max_side],
        "resolution": spec_bb.img_size,
        "augmentation": "random resized crop (area 0.6-1) and horizontal flip",
        "labels_used": "none (no DXA, T-score or latent density is read)",
        "draw_and_decode_seconds": round(time.monotonic() - t0 - res.seconds, 1),
        "phantoms_reused_from_workdir": reused,
        "wall_seconds": round(time.monotonic() - t0, 1),
        "machine": machine(),
    }
    out = write_foundation(args.out, res, cfg, recipe)
    print(f"[pretrain] foundation -> {out} ({res.seconds:.0f} s pretraining, bf16={res.bf16})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
