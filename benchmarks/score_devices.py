"""Scoring stage on each device and precision, measured side by side in one run.

What it reports, for the same files and the same (random-weight) model:
- ``model_ips``: images/s of the model alone on pre-decoded tensors;
- ``pipeline_ips``: images/s of ``score_shard`` (DataLoader workers decoding
  real DICOM, pinned memory and non-blocking copies on CUDA);
- ``max_abs_diff_vs_cpu_fp32``: how far each configuration's risk scores are
  from the CPU fp32 scores (bf16 autocast changes numbers; this says how much).

Usage: python benchmarks/score_devices.py [--images 48] [--backbone dinov2_small] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--backbone", default="dinov2_tiny_demo")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="keep the archive here (default: a temporary folder)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from osteo_batch.models.model import ModelConfig, build_module, load_model_dir, normalise, save_model_dir
    from osteo_batch.scoring import ScoreOptions, score_shard
    from osteo_batch.synth import CohortSpec, write_cohort
    from osteo_batch.tensors import DicomDataset, Item, make_loader

    root = args.out or Path(tempfile.mkdtemp(prefix="osteo-bench-"))
    spec = CohortSpec(n_women=args.images, n_men=0, n_young=0, n_lateral=0, n_followups=0, n_unreadable=0, seed=99)
    t0 = time.monotonic()
    cohort = write_cohort(root, spec, workers=min(8, os.cpu_count() or 1))
    print(f"archive: {cohort.n_images} images in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    items = [Item(str(cohort.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort.plans]

    torch.manual_seed(0)
    cfg = ModelConfig.for_backbone(args.backbone)
    save_model_dir(build_module(cfg), cfg, root / "model")

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    configs = [("cpu", "fp32")] + [(d, p) for d in devices if d != "cpu" for p in ("fp32", "bf16")]

    # pre-decoded tensors for the model-only rate
    xs = [x for _, x, _ in make_loader(DicomDataset(items, cfg.img_size), batch_size=args.batch_size, workers=args.workers)]
    rows, ref = [], None
    for device, precision in configs:
        model = load_model_dir(root / "model", device=device)
        cuda = device == "cuda"
        with torch.inference_mode(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for x in xs[:1]:  # warm-up
                model.module(normalise(x.to(device), model.config))
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            for x in xs:
                model.module(normalise(x.to(device, non_blocking=cuda), model.config))
            if cuda:
                torch.cuda.synchronize()
            model_ips = sum(len(x) for x in xs) / (time.perf_counter() - t)
        opts = ScoreOptions(batch_size=args.batch_size, workers=args.workers, device=device, precision=precision)
        t = time.perf_counter()
        res = score_shard(model, items, out_dir=root / "scores", run_id=f"bench-{device}-{precision}", opts=opts)
        pipeline_ips = res.scored / (time.perf_counter() - t)
        import pyarrow.parquet as pq

        tbl = pq.read_table(res.parquet)
        scores = dict(zip(tbl["sop_instance_uid"].to_pylist(), tbl["score"].to_pylist()))
        if ref is None:
            ref = scores
        diff = max(abs(scores[k] - ref[k]) for k in ref)
        rows.append({"device": device, "precision": precision, "model_ips": round(model_ips, 2),
                     "pipeline_ips": round(pipeline_ips, 2), "max_abs_diff_vs_cpu_fp32": float(f"{diff:.3g}")})

    print(f"{'device':8}{'precision':>10}{'model img/s':>14}{'pipeline img/s':>16}{'max |Δscore|':>14}")
    for r in rows:
        print(f"{r['device']:8}{r['precision']:>10}{r['model_ips']:>14.1f}{r['pipeline_ips']:>16.1f}{r['max_abs_diff_vs_cpu_fp32']:>14.3g}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(json.dumps({"backbone": args.backbone, "images": len(items), "workers": args.workers,
                      "cpu_count": os.cpu_count(), "gpu": gpu, "machine": platform.node(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
