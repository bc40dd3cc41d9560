"""``throughput.py --profile archive``: what a hospital stores, through the full-size model, in one run.

The archive is what a program's first night meets: 12-bit images of
2500x2048 to 3000x2500, 70% JPEG 2000 lossless, 20% uncompressed, 10% RLE
(``osteo_batch.synth`` phantoms, ``CohortSpec(j2k="lossless")``). The model
is dinov2_small at 518 px unless ``--backbone`` or ``--model`` says otherwise.

Every stage runs a fixed number of images (``--images``, ``--model-images``,
``--naive-images``), so the whole profile ends in about ten minutes on two
cores even where a slow path is measured (bf16 emulated on an AVX2 CPU runs
at about 0.14 images/s: 16 images is two minutes).

It reports, side by side, from one run:

- (a) ``decode_ips``: DataLoader workers (one per core) decoding to model inputs;
- ``decode_core_ips``: one worker on one thread, and the same per transfer
  syntax and per JPEG 2000 reader (``before``: glymur through a temporary
  file, the reader of the previous release; ``after``: the reader ``auto`` picks);
- (b) the model on tensors in memory: ``model_fp32_ips``, ``model_bf16_ips``
  and ``model_int8_ips`` (dynamic int8 Linear layers), each with its score
  drift against fp32; ``model_ips`` is the path scoring chose (``precision``,
  by measurement, :mod:`osteo_batch.scoring.precision`); ``model_core_ips``
  is that path on one thread;
- (c) ``pipeline_ips``: ``score_shard`` itself, at each split of decode
  workers against the model's intra-op threads (``pipeline_ips_by_split``);
- (d) ``naive_ips``: one file at a time (``dcmread``, pydicom's LUTs, a
  resize, one forward), in fp32;
- ``limit_ips`` (as before: ``1/(1/a + 1/b)`` on a CPU, ``min(a, b)`` on a GPU) and
  ``honest_limit_ips``: ``cores / (1/decode_core_ips + 1/model_core_ips)`` on a
  CPU (each image costs its decode and its forward in core-seconds, and the
  cores are shared), ``min(cores * decode_core_ips, model_ips)`` with a GPU;
  ``bound_by``: the stage that costs the most core-seconds per image.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

#: the archive profile's mix (shares of the archive per storage kind)
MIX = {"j2k": 0.7, "native": 0.2, "rle": 0.1}


def archive_spec(n: int, seed: int):
    from osteo_batch.synth.plan import CohortSpec

    return CohortSpec(n_women=n, n_men=0, n_young=0, n_lateral=0, n_followups=0, n_unreadable=0, seed=seed,
                      min_side=2500, max_side=3000, min_cols=2048, aspect=(0.82, 0.834),
                      share_j2k=MIX["j2k"], share_rle=MIX["rle"], j2k="lossless", native_max_side=3000)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def per_image_decode(items, storage: dict[str, str], size: int, j2k: str, rounds: int = 2) -> dict[str, float]:
    """Seconds per image per storage kind, decoding in this process on one thread (median of ``rounds``)."""
    from osteo_batch.dicom.pixels import load_image

    opts = _display(j2k)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for it in items:
            t = time.perf_counter()
            load_image(it.path, size, opts)
            times[storage[it.sop_instance_uid]].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _display(j2k: str):
    from osteo_batch.dicom.display import DisplayOptions

    try:
        return DisplayOptions(j2k=j2k)
    except TypeError:  # a release before the JPEG 2000 reader was selectable
        return DisplayOptions()


def loader_rate(items, size: int, workers: int, bs: int, j2k: str = "auto") -> tuple[float, list]:
    """Steady decode rate of DataLoader workers: from the first batch on (start-up is not decoding)."""
    from osteo_batch.scoring.tensors import DicomDataset, make_loader

    loader = make_loader(DicomDataset(items, size, _display(j2k)), batch_size=bs, workers=workers)
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t = time.perf_counter()
    batches = [first] + list(it)
    end = time.perf_counter()
    n = sum(len(b[0]) for b in batches)
    if len(batches) < 3:
        return n / (end - t0), batches
    return (n - len(first[0])) / (end - t), batches


def model_rate(model, xs, precision: str, threads: int, device: str, bs: int):
    """Images/s of the model alone at ``precision`` on ``threads`` intra-op threads, its scores, and its Forward."""
    import torch

    from osteo_batch.scoring.score import Forward, ScoreOptions

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fwd = Forward(model, ScoreOptions(batch_size=bs, device=device, precision=precision))
        with torch.inference_mode():
            fwd(xs[0][:2])  # warm-up (and, for "auto", the measured choice)
            t = time.perf_counter()
            scores = [s for x in xs for s in fwd(x)]
            rate = sum(len(x) for x in xs) / (time.perf_counter() - t)
        return rate, scores, fwd
    finally:
        torch.set_num_threads(before)


def int8_model(model):
    """The same model with dynamic int8 Linear layers (torch.ao), as a LoadedModel-like object."""
    import copy

    import torch

    q = copy.copy(model)
    q.module = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model.module), {torch.nn.Linear}, dtype=torch.qint8)
    return q


def drift(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b)) if a else float("nan")


def run(args) -> dict:
    import torch

    from osteo_batch.models.model import ModelConfig, build_module, load_model_dir, save_model_dir
    from osteo_batch.scoring.score import ScoreOptions, score_shard
    from osteo_batch.scoring.tensors import Item
    from osteo_batch.synth.cohort import existing_cohort, write_cohort
    from throughput import naive_loop

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    device = args.device
    cuda = device.startswith("cuda")
    root = args.out or Path(tempfile.mkdtemp(prefix="osteo-archive-profile-"))
    spec = archive_spec(args.images, seed=14)
    t0 = time.monotonic()
    cohort = existing_cohort(root, spec) or write_cohort(root, spec, workers=cores)
    items = [Item(str(cohort.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort.plans]
    storage = {p.sop_instance_uid: p.storage for p in cohort.plans}
    mix = {k: sum(1 for v in storage.values() if v == k) for k in MIX}
    _say(f"archive: {len(items)} images {mix} in {time.monotonic() - t0:.0f} s at {root}")

    torch.manual_seed(0)
    if args.model:
        model = load_model_dir(args.model, device=device)
    else:
        cfg = ModelConfig.for_backbone(args.backbone)
        if cfg.family == "timm" and "dinov2" in cfg.timm_arch:
            # LayerScale at 1: at timm's 1e-5 a random DINOv2 gives every image the same logits, and every
            # drift would read 0 (the speed is the same)
            cfg.backbone_kwargs.setdefault("init_values", 1.0)
        save_model_dir(build_module(cfg), cfg, root / "model")
        model = load_model_dir(root / "model", device=device)
    size = model.config.img_size
    bs = args.batch_size or (ScoreOptions(device=device).resolved_batch_size() if cuda else 8)  # 8: a few batches of 40

    # (a) decode: one worker per core, then one worker (one thread: DataLoader workers run torch on one)
    decode_ips, batches = loader_rate(items, size, cores, bs)
    decode_core_ips, _ = loader_rate(items, size, 1, bs)
    _say(f"(a) decode: {decode_ips:.1f} images/s on {cores} workers; {decode_core_ips:.1f} per core")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    by_syntax = {}
    for reader in ("glymur", "auto"):
        sec = per_image_decode(items, storage, size, reader)
        by_syntax[reader] = {k: round(1.0 / v, 2) for k, v in sec.items()}
        _say(f"    one thread, JPEG 2000 reader {reader}: " + ", ".join(f"{k} {1 / v:.1f}/s" for k, v in sec.items()))
    torch.set_num_threads(torch_threads)

    # (b) the model on tensors in memory, each path on the same images
    xs = [b[1] for b in batches if len(b[0])]
    xs = _take(xs, args.model_images)
    rates, scores = {}, {}
    for name in ("fp32", "bf16", "int8", "auto"):
        m = int8_model(model) if name == "int8" else model
        prec = "fp32" if name == "int8" else name
        rates[name], scores[name], fwd = model_rate(m, xs, prec, torch_threads, device, bs)
        if name == "auto":
            chosen = getattr(fwd, "precision", "bf16" if getattr(fwd, "bf16", False) else "fp32")
            choice = getattr(fwd, "choice", None)
        _say(f"(b) model {name}: {rates[name]:.2f} images/s, drift vs fp32 {drift(scores[name], scores['fp32']):.5f}")
    model_ips = rates["auto"]
    core_xs = _take(xs, max(2, args.model_images // 2))
    model_core_ips, _, _ = model_rate(model, core_xs, chosen, 1, device, bs)
    _say(f"(b) model {chosen} on one thread: {model_core_ips:.2f} images/s")

    # (c) the pipeline at each split of decode workers against the model's threads
    splits = sorted({(1, cores), (cores, cores), (1, max(1, cores - 1))})
    pipeline, startup, precisions = {}, {}, {}
    for w, th in splits:
        first: list[tuple[float, int]] = []

        def mark(done: int, total: int) -> None:
            if not first:
                first.append((time.perf_counter(), done))

        opts = ScoreOptions(batch_size=bs, workers=w, device=device, **_threads(th))
        t = time.perf_counter()
        res = score_shard(model, items, out_dir=root / "scores", run_id=f"archive-w{w}-t{th}", opts=opts, progress=mark)
        end = time.perf_counter()
        key = f"workers={w},threads={th}"
        pipeline[key] = (len(items) - first[0][1]) / (end - first[0][0])
        startup[key] = first[0][0] - t
        precisions[key] = getattr(res, "precision", None)
        _say(f"(c) pipeline {key}: {pipeline[key]:.2f} images/s (first batch after {startup[key]:.1f} s)")
    best = max(pipeline, key=pipeline.get)

    # (d) the naive loop, fp32, one file at a time
    paths = [it.path for it in items][: args.naive_images]
    mean = torch.tensor(model.config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std, device=device).view(1, 3, 1, 1)
    naive_loop(paths[:1], model.module, size, device, mean, std)
    naive_ips, _ = naive_loop(paths, model.module, size, device, mean, std)
    _say(f"(d) naive loop: {naive_ips:.2f} images/s")

    a, b, c = decode_ips, model_ips, pipeline[best]
    limit = min(a, b) if cuda else 1.0 / (1.0 / a + 1.0 / b)
    honest = min(cores * decode_core_ips, model_ips) if cuda else cores / (1.0 / decode_core_ips + 1.0 / model_core_ips)
    bound = ("decode" if cores * decode_core_ips < model_ips else "model") if cuda else (
        "decode" if 1.0 / decode_core_ips > 1.0 / model_core_ips else "model")
    from osteo_batch.scoring import precision as precision_mod

    return {
        "profile": "archive", "device": "cuda" if cuda else "cpu", "cores": cores,
        "cpu_capability": precision_mod.cpu_capability(), "native_bf16": precision_mod.native_bf16(),
        "cpu_model": _cpu_model(), "machine": platform.node(),
        "decode_ips": round(a, 2), "decode_core_ips": round(decode_core_ips, 2),
        "decode_core_ips_by_syntax": {"before": by_syntax["glymur"], "after": by_syntax["auto"]},
        "model_ips": round(b, 3), "model_core_ips": round(model_core_ips, 3), "precision": chosen,
        "precision_choice": _asdict(choice),
        "model_fp32_ips": round(rates["fp32"], 3), "model_bf16_ips": round(rates["bf16"], 3),
        "model_int8_ips": round(rates["int8"], 3),
        "drift_vs_fp32": {k: round(drift(scores[k], scores["fp32"]), 6) for k in ("bf16", "int8", "auto")},
        "pipeline_ips": round(c, 3), "pipeline_split": best,
        "pipeline_ips_by_split": {k: round(v, 3) for k, v in pipeline.items()},
        "pipeline_startup_s": {k: round(v, 1) for k, v in startup.items()},
        "pipeline_precision": precisions,
        "naive_ips": round(naive_ips, 3),
        "limit_ips": round(limit, 3), "honest_limit_ips": round(honest, 3),
        "pipeline_vs_limit": round(c / limit, 3), "pipeline_vs_honest_limit": round(c / honest, 3),
        "pipeline_vs_naive": round(c / naive_ips, 2), "bound_by": bound,
        "backbone": model.config.backbone, "img_size": size, "batch_size": bs, "images": len(items),
        "model_images": sum(len(x) for x in xs), "naive_images": len(paths), "mix": mix,
        "weights": "model folder" if args.model else "random",
    }


def _take(xs, n: int):
    out, got = [], 0
    for x in xs:
        if got >= n:
            break
        out.append(x[: n - got])
        got += len(out[-1])
    return out


def _threads(th: int) -> dict:
    import dataclasses

    from osteo_batch.scoring.score import ScoreOptions

    return {"threads": th} if "threads" in {f.name for f in dataclasses.fields(ScoreOptions)} else {}


def _asdict(choice):
    import dataclasses

    return dataclasses.asdict(choice) if dataclasses.is_dataclass(choice) else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(r: dict) -> None:
    rows = [
        (f"(a) decode ({r['cores']} workers)", r["decode_ips"]),
        ("    decode per core", r["decode_core_ips"]),
        (f"(b) model {r['precision']}", r["model_ips"]),
        ("    model fp32", r["model_fp32_ips"]),
        ("    model bf16 autocast", r["model_bf16_ips"]),
        ("    model int8 dynamic", r["model_int8_ips"]),
        (f"    model {r['precision']} on one thread", r["model_core_ips"]),
        (f"(c) pipeline ({r['pipeline_split']})", r["pipeline_ips"]),
        ("(d) naive loop", r["naive_ips"]),
    ]
    print(f"{'stage':40}{'images/s':>10}")
    for k, v in rows:
        print(f"{k:40}{v:>10.2f}")
    print(f"cpu {r['cpu_model']} ({r['cpu_capability']}), {r['cores']} cores; {r['backbone']} at {r['img_size']} px")
    print(f"honest limit cores/(1/decode_core + 1/model_core) = {r['honest_limit_ips']:.2f}; "
          f"(c)/honest = {r['pipeline_vs_honest_limit']:.2f} (target >= 0.9); (c)/(d) = {r['pipeline_vs_naive']:.2f}; "
          f"bound by {r['bound_by']}; drift vs fp32 {r['drift_vs_fp32']}")
    for when in ("before", "after"):
        print(f"decode per core, {when}: " + ", ".join(f"{k} {v}/s" for k, v in r["decode_core_ips_by_syntax"][when].items()))
