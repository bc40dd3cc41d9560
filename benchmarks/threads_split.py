"""Decode workers against intra-op threads: the scoring pipeline's rate at each split of the cores.

Why: on a CPU, the DataLoader's workers (one thread each) and the model's
intra-op threads share the same cores. Too many threads and the model's
parallel regions wait on a core a decoder holds; too few and a core idles.
This measures ``score_shard`` itself at each split (workers x threads), the
precisions interleaved and each split repeated, and reports medians, so the
automatic rule in :mod:`osteo_batch.scoring.threads` rests on figures.

Also measured: ``decode_core_ips`` (one process, one thread, no model) and
the model alone on 1 and on all threads, so the decode share of a core at the
pipeline's rate can be read off: ``share = pipeline_ips / decode_core_ips``
per worker.

Usage: python benchmarks/threads_split.py [--profile archive|mixed] [--images 24] [--backbone dinov2_small]
           [--splits 1x2,1x1,2x2,2x1] [--precisions bf16,fp32] [--repeats 3] [--out DIR]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _spec(profile: str, n: int):
    from osteo_batch.synth.cohort import CohortSpec

    if profile == "archive":  # the realistic profile: 12-bit 2500x2048..3000x2500, 70% J2K lossless
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from archive_profile import archive_spec

        return archive_spec(n, seed=77)
    return CohortSpec(n_women=n, n_men=0, n_young=0, n_lateral=0, n_followups=0, n_unreadable=0, seed=99)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("archive", "mixed"), default="archive")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--backbone", default="dinov2_small")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--splits", default="1x2,1x1,2x2,2x1", help="workers x threads, comma separated")
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="keep (and reuse) the archive here")
    args = ap.parse_args()

    import torch

    from osteo_batch.models.model import ModelConfig, build_module, load_model_dir, save_model_dir
    from osteo_batch.scoring.forward import Forward
    from osteo_batch.scoring.precision import cpu_capability
    from osteo_batch.scoring.score import ScoreOptions, score_shard
    from osteo_batch.scoring.tensors import DicomDataset, Item
    from osteo_batch.scoring.threads import busy_cores, cores, intra_op_threads
    from osteo_batch.synth.cohort import existing_cohort, write_cohort

    root = args.out or Path(tempfile.mkdtemp(prefix="osteo-threads-"))
    spec = _spec(args.profile, args.images)
    t0 = time.monotonic()
    cohort = existing_cohort(root / "cohort", spec) or write_cohort(root / "cohort", spec, workers=os.cpu_count() or 1)
    items = [Item(str(cohort.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort.plans]
    _say(f"archive: {len(items)} images ({args.profile}) in {time.monotonic() - t0:.0f} s at {root}")

    torch.manual_seed(0)
    cfg = ModelConfig.for_backbone(args.backbone)
    if not (root / "model" / "config.json").exists():
        save_model_dir(build_module(cfg), cfg, root / "model")
    model = load_model_dir(root / "model")

    # decode on one core: one process, no workers
    ds = DicomDataset(items, cfg.img_size)
    ds[0]
    t = time.perf_counter()
    n_dec = min(len(items) - 1, 8)
    decoded = [ds[i][1] for i in range(1, 1 + n_dec)]
    decode_core_ips = n_dec / (time.perf_counter() - t)
    _say(f"decode, one core: {decode_core_ips:.2f} images/s")

    # the model alone, per precision, on 1 thread and on all
    x = torch.from_numpy(__import__("numpy").stack([d for d in decoded if d is not None][: args.batch_size])[:, None])
    model_ips: dict[str, dict[int, float]] = {}
    for prec in args.precisions.split(","):
        model_ips[prec] = {}
        for th in sorted({1, cores()}):
            fwd = Forward(model, ScoreOptions(precision=prec, batch_size=args.batch_size))
            with intra_op_threads(th), torch.inference_mode():
                fwd(x)
                runs = []
                for _ in range(2):
                    t = time.perf_counter()
                    fwd(x)
                    runs.append(len(x) / (time.perf_counter() - t))
            model_ips[prec][th] = max(runs)
            _say(f"model {prec}, {th} thread(s): {model_ips[prec][th]:.2f} images/s")

    splits = [tuple(int(v) for v in s.split("x")) for s in args.splits.split(",")]
    rates: dict[str, dict[str, list[float]]] = {p: {f"{w}x{t}": [] for w, t in splits} for p in args.precisions.split(",")}
    busy: list[float] = []
    for rep in range(args.repeats):
        order = splits[rep % len(splits):] + splits[: rep % len(splits)]  # rotate: no split always runs first
        for prec in rates:
            for w, th in order:
                first: list[tuple[float, int]] = []

                def mark(done: int, total: int) -> None:
                    if not first:
                        first.append((time.perf_counter(), done))

                busy.append(busy_cores())  # what other processes hold as the run starts
                opts = ScoreOptions(batch_size=args.batch_size, workers=w, threads=th, precision=prec)
                res = score_shard(model, items, out_dir=root / "scores", run_id=f"split-{rep}-{prec}-{w}x{th}",
                                  opts=opts, progress=mark)
                end = time.perf_counter()
                r = (res.scored - first[0][1]) / (end - first[0][0])
                rates[prec][f"{w}x{th}"].append(r)
                _say(f"rep {rep} {prec} workers {w} threads {th}: {r:.2f} images/s (precision {res.precision}; "
                     f"{busy[-1]:.1f} cores busy before)")

    med = {p: {k: round(statistics.median(v), 3) for k, v in by.items()} for p, by in rates.items()}
    print(f"{'precision':10}" + "".join(f"{k:>10}" for k in med[next(iter(med))]))
    for p, by in med.items():
        print(f"{p:10}" + "".join(f"{v:>10.2f}" for v in by.values()))
    print(json.dumps({
        "profile": args.profile, "backbone": args.backbone, "img_size": cfg.img_size, "images": len(items),
        "batch_size": args.batch_size, "cores": cores(), "cpu_capability": cpu_capability(),
        "decode_core_ips": round(decode_core_ips, 3),
        "model_ips": {p: {str(k): round(v, 3) for k, v in by.items()} for p, by in model_ips.items()},
        "pipeline_ips_median": med, "pipeline_ips_runs": {p: {k: [round(r, 3) for r in v] for k, v in by.items()}
                                                          for p, by in rates.items()},
        "repeats": args.repeats, "busy_cores_before_runs": [round(b, 2) for b in busy], "machine": platform.node(), "processor": platform.processor(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
