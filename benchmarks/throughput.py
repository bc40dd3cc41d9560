"""Scoring throughput: decode, model, pipeline and a naive loop, side by side on the same files and model.

What it measures, in images per second, in one run:

- (a) ``decode_ips``: DataLoader workers decoding the archive to model inputs, no model;
- (b) ``model_ips``: the model alone on pre-decoded tensors held in memory
  (bf16 autocast on CUDA, fp32 on CPU, as scoring runs them);
- (c) ``pipeline_ips``: the scoring stage itself (``score_shard``: workers
  decode while the model runs, Parquet parts written);

(a) and (c) are steady-state rates, timed from the first batch on (when there
are at least 4 batches; fewer are timed from the start), so worker start-up (reported apart as ``pipeline_startup_s``, paid once per shard and
night) does not count against a 96-image archive as it would not against 5 million;
- (d) ``naive_ips``: the loop most research code uses: for each file
  ``dcmread``, ``pixel_array``, pydicom's modality and VOI LUTs, min-max
  scaling, a resize, and a forward pass of one image.

Where the pipeline should land: with no accelerator, decoding and the model
share the same cores, so the best it can do is ``1 / (1/a + 1/b)``; with a GPU
it is ``min(a, b)``. The report gives (c) against that limit, and (c) against (d).
It also reports how far reduced-resolution decoding moves the scores from a
full decode (``max_abs_diff_reduced_vs_full``).

The archive is synthetic (phantoms at 1500-3000 px: half JPEG 2000, a fifth
RLE, the rest uncompressed, as the demo writes it); the model is the demo
backbone with random weights unless ``--backbone`` says otherwise (speed does
not depend on the weights).

Usage: python benchmarks/throughput.py [--images 96] [--workers 2] [--device cpu|cuda] [--backbone dinov2_tiny_demo]
       python benchmarks/throughput.py --profile archive [--images 40] [--model DIR]   (see archive_profile.py)
The last line of output is one JSON object.
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


#: below this many batches, (a) and (c) count from the start (a steady state needs a few batches)
STEADY_MIN_BATCHES = 4


def naive_loop(paths: list[str], module, size: int, device: str, mean, std) -> tuple[float, list[float]]:
    """One file at a time, the way research scripts score an archive."""
    import numpy as np
    import pydicom
    import torch
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out = []
    t = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            ds = pydicom.dcmread(p)
            arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
            arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                arr = 1.0 - arr
            img = np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
            x = torch.from_numpy(img.copy())[None, None].expand(1, 3, size, size).to(device)
            x = (x - mean) / std
            out.append(float(torch.softmax(module(x).float(), 1)[0, -1]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(paths) / (time.perf_counter() - t), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("mixed", "archive"), default="mixed",
                    help="mixed: the demo's phantoms and backbone (below); archive: what hospitals store, "
                         "through the full-size model (benchmarks/archive_profile.py)")
    ap.add_argument("--images", type=int, default=None, help="default: 96 (mixed), 40 (archive)")
    ap.add_argument("--backbone", default=None, help="default: dinov2_tiny_demo (mixed), dinov2_small (archive)")
    ap.add_argument("--model", type=Path, default=None, help="archive: a trained model folder instead of random weights")
    ap.add_argument("--model-images", type=int, default=16, help="archive: images per model path")
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--workers", default=str(os.cpu_count() or 1),
                    help="decode workers; a comma list (4,8,14) measures (a) and (c) at each and reports the best")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on CPU, 128 on CUDA")
    ap.add_argument("--naive-images", type=int, default=None, help="files for the naive loop (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="keep the archive here (default: a temporary folder)")
    args = ap.parse_args()
    if args.profile == "archive":
        import archive_profile

        args.images = args.images or 40
        args.backbone = args.backbone or "dinov2_small"
        args.naive_images = args.naive_images or 6
        result = archive_profile.run(args)
        archive_profile.print_table(result)
        print(json.dumps(result))
        return 0
    args.images = args.images or 96
    args.backbone = args.backbone or "dinov2_tiny_demo"

    import numpy as np
    import torch

    from osteo_batch.dicom.display import DisplayOptions
    from osteo_batch.models.model import ModelConfig, build_module, load_model_dir, save_model_dir
    from osteo_batch.scoring.score import Forward, ScoreOptions, score_shard
    from osteo_batch.synth.cohort import CohortSpec, write_cohort
    from osteo_batch.scoring.tensors import DicomDataset, Item, make_loader

    worker_counts = [int(w) for w in args.workers.split(",")]
    root = args.out or Path(tempfile.mkdtemp(prefix="osteo-throughput-"))
    spec = CohortSpec(n_women=args.images, n_men=0, n_young=0, n_lateral=0, n_followups=0, n_unreadable=0, seed=99)
    t0 = time.monotonic()
    cohort = write_cohort(root, spec, workers=os.cpu_count() or 1)
    items = [Item(str(cohort.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort.plans]
    _say(f"archive: {len(items)} images in {time.monotonic() - t0:.0f} s at {root}")

    torch.manual_seed(0)
    cfg = ModelConfig.for_backbone(args.backbone)
    save_model_dir(build_module(cfg), cfg, root / "model")
    model = load_model_dir(root / "model", device=args.device)
    opts = ScoreOptions(batch_size=args.batch_size, workers=worker_counts[0], device=args.device)
    bs = opts.resolved_batch_size()
    cuda = args.device.startswith("cuda")

    # (a) decode only, at each worker count
    def decode_rate(workers: int, reduce: bool = True) -> tuple[float, list]:
        ds = DicomDataset(items, cfg.img_size, DisplayOptions(reduce=reduce))
        loader = make_loader(ds, batch_size=bs, workers=workers, pin_memory=cuda)
        t0 = time.perf_counter()
        it = iter(loader)
        first = next(it)  # worker start-up is not decoding
        t = time.perf_counter()
        batches = [first] + list(it)
        end = time.perf_counter()
        if len(batches) < STEADY_MIN_BATCHES:  # too few batches for a steady state: count from the start
            return sum(len(b[0]) for b in batches) / (end - t0), batches
        return (sum(len(b[0]) for b in batches) - len(first[0])) / (end - t), batches

    decode = {}
    for w in worker_counts:
        decode[w], batches = decode_rate(w)
        _say(f"(a) decode, {w} workers: {decode[w]:.1f} images/s")
    xs = [b[1] for b in batches if len(b[0])]

    # (b) model only, on tensors in memory
    fwd = Forward(model, opts)
    with torch.inference_mode():
        fwd(xs[0])  # warm-up
        t = time.perf_counter()
        for x in xs:
            fwd(x)
        model_ips = sum(len(x) for x in xs) / (time.perf_counter() - t)  # Forward returns on the CPU: synchronised
    _say(f"(b) model ({args.backbone} {cfg.img_size} px, batch {bs}, {'bf16' if fwd.bf16 else 'fp32'}): "
         f"{model_ips:.1f} images/s")
    model_fp32_ips = None
    if cuda:
        f32 = Forward(model, ScoreOptions(batch_size=bs, device=args.device, precision="fp32"))
        with torch.inference_mode():
            f32(xs[0])
            t = time.perf_counter()
            for x in xs:
                f32(x)
            model_fp32_ips = sum(len(x) for x in xs) / (time.perf_counter() - t)
        _say(f"(b) model fp32 for comparison: {model_fp32_ips:.1f} images/s")

    # (c) the pipeline, at each worker count
    pipeline: dict[int, float] = {}
    startup: dict[int, float] = {}
    scores = {}
    for w in worker_counts:
        o = ScoreOptions(batch_size=args.batch_size, workers=w, device=args.device)
        first: list[tuple[float, int]] = []

        def mark(done: int, total: int) -> None:  # steady state, as for (a): from the first batch on
            if not first:
                first.append((time.perf_counter(), done))

        t = time.perf_counter()
        res = score_shard(model, items, out_dir=root / "scores", run_id=f"bench-w{w}", opts=o, progress=mark)
        end = time.perf_counter()
        n_batches = -(-len(items) // bs)
        steady = n_batches >= STEADY_MIN_BATCHES
        pipeline[w] = (len(items) - first[0][1]) / (end - first[0][0]) if steady else len(items) / (end - t)
        startup[w] = first[0][0] - t
        _say(f"(c) pipeline, {w} workers: {pipeline[w]:.1f} images/s (first batch after {startup[w]:.1f} s; "
             f"{res.scored / (end - t):.1f} images/s counting it)")
        if not scores:
            import pyarrow.parquet as pq

            for f in res.parts:
                t_ = pq.read_table(f)
                scores.update(zip(t_["sop_instance_uid"].to_pylist(), t_["score"].to_pylist()))

    # full decode for the score check (not timed against anything)
    full = [x for _, x, _ in make_loader(DicomDataset(items, cfg.img_size, DisplayOptions(reduce=False)),
                                          batch_size=bs, workers=worker_counts[0])]
    with torch.inference_mode():
        full_scores = [s for x in full for s in fwd(x)]
    reduced_scores = [scores[it.sop_instance_uid] for it in items if it.sop_instance_uid in scores]
    max_diff = float(np.max(np.abs(np.array(full_scores) - np.array(reduced_scores)))) if reduced_scores else None

    # (d) the naive loop
    paths = [it.path for it in items][: args.naive_images or len(items)]
    mean = torch.tensor(cfg.mean, device=args.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=args.device).view(1, 3, 1, 1)
    naive_loop(paths[:2], model.module, cfg.img_size, args.device, mean, std)  # warm-up
    naive_ips, _ = naive_loop(paths, model.module, cfg.img_size, args.device, mean, std)
    _say(f"(d) naive loop: {naive_ips:.1f} images/s")

    best_w = max(pipeline, key=pipeline.get)
    a, b, c = decode[best_w], model_ips, pipeline[best_w]
    limit = min(a, b) if cuda else 1.0 / (1.0 / a + 1.0 / b)
    bound = "decode" if a < b else "model"
    print(f"{'stage':34}{'images/s':>10}")
    print(f"{'(a) decode (' + str(best_w) + ' workers)':34}{a:>10.1f}")
    print(f"{'(b) model':34}{b:>10.1f}")
    print(f"{'(c) pipeline':34}{c:>10.1f}")
    print(f"{'(d) naive loop':34}{naive_ips:>10.1f}")
    print(f"limit {'min(a, b)' if cuda else '1/(1/a + 1/b)'} = {limit:.1f}; (c)/limit = {c / limit:.2f} (target >= 0.85); "
          f"(c)/(d) = {c / naive_ips:.1f} (target >= 3); bound by {bound}; "
          f"max |score reduced - full decode| = {max_diff:.4f}")
    gpu = torch.cuda.get_device_name(0) if cuda else None
    print(json.dumps({
        "device": "cuda" if cuda else "cpu",
        "decode_ips": round(a, 2), "model_ips": round(b, 2), "pipeline_ips": round(c, 2), "naive_ips": round(naive_ips, 2),
        "limit_ips": round(limit, 2), "pipeline_vs_limit": round(c / limit, 3), "pipeline_vs_naive": round(c / naive_ips, 2),
        "bound_by": bound, "workers": best_w, "decode_ips_by_workers": {str(k): round(v, 2) for k, v in decode.items()},
        "pipeline_ips_by_workers": {str(k): round(v, 2) for k, v in pipeline.items()},
        "pipeline_startup_s": round(startup[best_w], 2),
        "model_fp32_ips": round(model_fp32_ips, 2) if model_fp32_ips else None,
        "precision": "bf16" if fwd.bf16 else "fp32", "batch_size": bs, "backbone": args.backbone,
        "img_size": cfg.img_size, "images": len(items), "max_abs_diff_reduced_vs_full": max_diff,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu, "machine": platform.node(),
    }))
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
