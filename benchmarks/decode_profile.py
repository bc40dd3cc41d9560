"""Where one core's decode time goes for the archive profile, by transfer syntax and by step, before and after.

The archive profile is what a program's first night meets: 12-bit phantoms
(``osteo_batch.synth``) of 2500x2048 to 3000x2500, 70% JPEG 2000 lossless,
20% uncompressed, 10% RLE, exactly in those shares. Each image is decoded
to the model's input (518 px) on one thread, step by step:

- ``read``: :func:`osteo_batch.dicom.pixels.read_dataset` (the open_dataset
  checks and ``dcmread`` of the whole file);
- ``check``: ``check_grey`` and ``check_frames`` (what reaches a decoder);
- ``decode``: the stored values at the reduced level;
- ``block_mean``: averaging a full decode down to that level (not JPEG 2000);
- ``modality``, ``voi``, ``invert``: the display steps;
- ``pad``, ``resize``: to the model's square input.

``before`` is the previous release's path: glymur through a temporary file
for JPEG 2000, pydicom's ``pixel_array`` and numpy's ``mean`` for the others.
``after`` is today's (:func:`osteo_batch.dicom.decode.decode_reduced` with
the reader ``--j2k`` names). Both run interleaved in one process, ``--repeats``
times, and each step's median counts; ``load_image`` is today's whole path
timed in one piece, as a check on the sum of its steps. The display steps
are today's code in both columns (their changes are well under a millisecond).
The JPEG 2000 readers (Pillow from memory, glymur through a file, nvImageCodec
where a GPU is usable) are timed apart on the same frames; pylibjpeg-openjpeg
has no reduced decode, so its full decode of one frame is given for scale.
Before and after must give the same model input, bit for bit.

Usage: python benchmarks/decode_profile.py [--images 20] [--repeats 3] [--size 518] [--j2k auto] [--cache DIR]
The last line of output is one JSON object. The files are written once into
``--cache`` (default: a folder in the temporary directory) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

#: the archive profile: storage kind, its share, its transfer syntax
MIX = (("j2k", 0.7, "1.2.840.10008.1.2.4.90"), ("native", 0.2, "1.2.840.10008.1.2.1"), ("rle", 0.1, "1.2.840.10008.1.2.5"))
STEPS = ("read", "check", "decode", "block_mean", "modality", "voi", "invert", "pad", "resize")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def plan_set(n: int, seed: int, min_side: int = 2500, max_side: int = 3000) -> list[dict]:
    """``n`` images in the profile's exact shares, sizes from 2500x2048 to 3000x2500 (scaled by the sides given)."""
    rng = np.random.default_rng(seed)
    counts = [round(n * share) for _, share, _ in MIX]
    counts[0] += n - sum(counts)
    kinds = [k for (k, _, _), c in zip(MIX, counts) for _ in range(c)]
    out = []
    for i, kind in enumerate(kinds):
        rows = int(rng.integers(min_side, max_side + 1))
        cols = int(np.clip(round(rows * rng.uniform(0.82, 0.834)), round(min_side * 0.8192), round(max_side * 0.8334)))
        out.append({"i": i, "kind": kind, "rows": rows, "cols": cols, "seed": int(rng.integers(1 << 30)),
                    "photometric": "MONOCHROME1" if rng.random() < 0.35 else "MONOCHROME2"})
    return out


def _write_one(args: tuple[dict, str]) -> str:
    from pydicom.uid import JPEG2000Lossless, RLELossless

    from osteo_batch.synth.cohort import build_dataset
    from osteo_batch.synth.phantom import draw_phantom
    from osteo_batch.synth.plan import ImagePlan

    p, folder = args
    uid = f"2.25.{7_000_000 + p['i']}"
    plan = ImagePlan(sop_instance_uid=uid, study_instance_uid=uid + "1", series_instance_uid=uid + "2",
                     patient_id=f"PROF{p['i']:04d}", patient_name="Profile^Phantom", sex="F", birth_date="19550101",
                     study_date="20260101", accession=f"P{p['i']:07d}", modality="DX", view="PA", rows=p["rows"],
                     cols=p["cols"], photometric=p["photometric"], storage=p["kind"], z=0.0, seed=p["seed"],
                     institution="Profile", filename=f"IM{p['i']:04d}")
    img, _mask, (wlo, whi) = draw_phantom(plan)
    px = np.round(img * 4095).astype(np.uint16)
    window = (wlo * 4095, whi * 4095)
    if plan.photometric == "MONOCHROME1":
        px, window = (4095 - px).astype(np.uint16), (4095 - window[1], 4095 - window[0])
    ds = build_dataset(plan, px, window)
    if plan.storage == "j2k":
        ds.compress(JPEG2000Lossless, px, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif plan.storage == "rle":
        ds.compress(RLELossless, px, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    out = Path(folder) / plan.filename
    ds.save_as(out, enforce_file_format=True)
    return str(out)


def write_set(folder: Path, plans: list[dict]) -> list[tuple[dict, str]]:
    """The files of ``plans`` under ``folder``, written unless a previous run left exactly these."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "plans.json"
    paths = [str(folder / f"IM{p['i']:04d}") for p in plans]
    if manifest.exists() and json.loads(manifest.read_text()) == plans and all(os.path.exists(p) for p in paths):
        return list(zip(plans, paths))
    _say(f"writing {len(plans)} archive-profile files to {folder} ...")
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        paths = list(pool.map(_write_one, [(p, str(folder)) for p in plans]))
    manifest.write_text(json.dumps(plans))
    return list(zip(plans, paths))


def _block_mean_before(arr: np.ndarray, k: int) -> np.ndarray:
    """The previous release's block mean (numpy's float32 mean over two axes)."""
    h, w = arr.shape[0] // k * k, arr.shape[1] // k * k
    return arr[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)


def run_steps(path: str, size: int, which: str, reader: str) -> tuple[dict[str, float], np.ndarray]:
    """Seconds per step for one image, ``which`` = "before" or "after", and the model input it made."""
    from osteo_batch.dicom import decode as dec
    from osteo_batch.dicom import j2k, reduce
    from osteo_batch.dicom.display import DisplayOptions, apply_voi, bone_bright, modality
    from osteo_batch.dicom.frames import J2K, RLE, check_frames, check_grey
    from osteo_batch.dicom.pixels import pad_square, read_dataset, resize
    from osteo_batch.dicom.quiet import reading

    t: dict[str, float] = dict.fromkeys(STEPS, 0.0)
    c0 = time.perf_counter()
    ds = read_dataset(path)
    c1 = time.perf_counter()
    with reading():
        check_grey(ds)
        checked = check_frames(ds)
    c2 = time.perf_counter()
    t["read"], t["check"] = c1 - c0, c2 - c1
    ts = str(ds.file_meta.TransferSyntaxUID)
    r = dec.reduction_levels(int(ds.Rows), int(ds.Columns), size)
    with reading():
        if ts in J2K:
            geo = j2k.geometry(checked.frame)  # outside the clock for "before": yesterday had no such step
            c3 = time.perf_counter()
            if which == "before":
                arr = j2k._read_glymur(checked.frame, r, checked.claim, geo).astype(np.uint16, copy=False)
            else:
                arr = dec._reduced_j2k(ds, checked, r, reader)
                assert arr is not None, "the profile's JPEG 2000 frames are all readable at a reduced level"
            t["decode"] = time.perf_counter() - c3
            # yesterday's values brought to today's one reduction filter, outside the clock (after: inside)
            out = arr if which != "before" else reduce.equalise_low_band(arr, r, reversible=geo.reversible)
        else:
            c3 = time.perf_counter()
            if which == "before":
                arr, mask = dec._decode_checked(ds, checked), None
            else:
                fast = dec._native_frame(ds) if checked.frame is None else dec._rle_frame(ds, checked) if ts == RLE else None
                arr, mask = fast if fast is not None else (dec._decode_checked(ds, checked), None)
            c4 = time.perf_counter()
            out = _block_mean_before(arr, 2**r) if which == "before" else dec.block_mean(arr, 2**r, mask=mask)
            out = reduce.equalise_box(out, r)  # today's one reduction filter (timed with block_mean)
            t["decode"], t["block_mean"] = c4 - c3, time.perf_counter() - c4
    opts = DisplayOptions()
    for step, fn in (("modality", lambda a: modality(a, ds)), ("voi", lambda a: apply_voi(a, ds, opts)),
                     ("invert", lambda a: bone_bright(a, ds)), ("pad", pad_square), ("resize", lambda a: resize(a, size))):
        c = time.perf_counter()
        out = fn(out)
        t[step] = time.perf_counter() - c
    return t, out


def time_readers(files: list[tuple[dict, str]], size: int, repeats: int) -> dict:
    """Milliseconds per reduced JPEG 2000 read, per reader, on the same frames, interleaved."""
    from osteo_batch.dicom import j2k, nvimgcodec
    from osteo_batch.dicom.decode import reduction_levels
    from osteo_batch.dicom.frames import check_frames
    from osteo_batch.dicom.pixels import read_dataset

    frames = []
    for p, path in files:
        if p["kind"] == "j2k":
            ds = read_dataset(path)
            c = check_frames(ds)
            frames.append((c.frame, c.claim, j2k.geometry(c.frame), reduction_levels(p["rows"], p["cols"], size)))
    gpu = nvimgcodec.usable()
    readers = {"pillow": j2k._read_pillow, "glymur": j2k._read_glymur}
    if gpu:
        readers["nvimgcodec"] = lambda f, r, c, g: nvimgcodec.read_reduced(f, r, bits=c.bits, tiles=g.tiles(),
                                                                          origin=(g.y0, g.x0))
    ms: dict[str, list[float]] = defaultdict(list)
    for rep in range(repeats):
        for f, c, g, r in frames:
            names = list(readers) if rep % 2 == 0 else list(readers)[::-1]
            outs = {}
            for name in names:
                t = time.perf_counter()
                outs[name] = readers[name](f, r, c, g)
                ms[name].append((time.perf_counter() - t) * 1000)
            ref = outs["glymur"].astype(np.int32)
            for name, o in outs.items():
                assert o is not None and np.array_equal(o.astype(np.int32), ref), f"{name} differs from glymur"
    out = {k: round(statistics.median(v), 2) for k, v in ms.items()}
    f, c, g, r = frames[0]
    import openjpeg

    t = time.perf_counter()
    openjpeg.decode(f)
    out["openjpeg_full"] = round((time.perf_counter() - t) * 1000, 2)
    out["gpu_usable"] = gpu
    return out


def _one_thread() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    import glymur

    glymur.set_option("lib.num_threads", 1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--j2k", default="auto", help="the JPEG 2000 reader of 'after': auto, pillow, glymur, nvimgcodec")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "osteo-decode-profile")
    ap.add_argument("--sides", type=int, nargs=2, default=(2500, 3000), help="row range (the profile: 2500 3000)")
    args = ap.parse_args(argv)
    _one_thread()
    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.display import DisplayOptions

    plans = plan_set(args.images, args.seed, *args.sides)
    files = write_set(args.cache / f"n{args.images}-s{args.seed}-{args.sides[0]}-{args.sides[1]}", plans)
    opts = DisplayOptions(j2k=args.j2k)
    samples: dict[str, dict[int, dict[str, list[float]]]] = {"before": defaultdict(lambda: defaultdict(list)),
                                                              "after": defaultdict(lambda: defaultdict(list))}
    max_diff = 0.0
    for p, path in files:  # warm-up: imports, first-call costs
        run_steps(path, args.size, "before", args.j2k)
        run_steps(path, args.size, "after", args.j2k)
    for rep in range(args.repeats):
        for p, path in files:
            order = ("before", "after") if (rep + p["i"]) % 2 == 0 else ("after", "before")
            imgs = {}
            for which in order:
                t, imgs[which] = run_steps(path, args.size, which, args.j2k)
                for step, s in t.items():
                    samples[which][p["i"]][step].append(s * 1000)
            c = time.perf_counter()
            whole = load_image(path, args.size, opts)
            samples["after"][p["i"]]["load_image"].append((time.perf_counter() - c) * 1000)
            max_diff = max(max_diff, float(np.abs(imgs["before"] - imgs["after"]).max()),
                           float(np.abs(whole - imgs["after"]).max()))
    readers = time_readers(files, args.size, max(2, args.repeats // 2))
    result = summarise(samples, files)
    result.update({"profile": "archive", "size": args.size, "images": len(files), "repeats": args.repeats,
                   "j2k_reader": args.j2k, "j2k_readers_ms": readers, "max_abs_diff_before_after": max_diff,
                   "cores": os.cpu_count()})
    print_table(result)
    print(json.dumps(result))
    return result


def summarise(samples, files) -> dict:
    """Per syntax: mean over its files of each step's median; images/s per core; the mix's rate."""
    out: dict = {}
    kinds = {p["i"]: p["kind"] for p, _ in files}
    for which in ("before", "after"):
        by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for i, steps in samples[which].items():
            for step, v in steps.items():
                by_kind[kinds[i]][step].append(statistics.median(v))
        syn = {}
        for kind, steps in by_kind.items():
            ms = {s: round(statistics.mean(v), 2) for s, v in steps.items()}
            total = sum(ms[s] for s in STEPS)
            syn[kind] = {"ms": ms, "total_ms": round(total, 2), "ips_per_core": round(1000 / total, 2), "files": len(steps["read"])}
        per_image = [sum(statistics.median(samples[which][i][s]) for s in STEPS) for i in kinds]
        out[which] = {"by_syntax": syn, "ms_per_image": round(statistics.mean(per_image), 2),
                      "ips_per_core": round(1000 / statistics.mean(per_image), 2)}
    whole = [statistics.median(samples["after"][i]["load_image"]) for i in kinds]
    out["after"]["load_image_ips_per_core"] = round(1000 / statistics.mean(whole), 2)
    out["speedup"] = round(out["before"]["ms_per_image"] / out["after"]["ms_per_image"], 2)
    return out


def print_table(res: dict) -> None:
    print(f"archive profile, {res['images']} images at {res['size']} px, one thread, median of {res['repeats']}; "
          "ms per image (before -> after)")
    print(f"{'step':12}" + "".join(f"{k:>22}" for k, _, _ in MIX))
    for step in STEPS:
        cells = []
        for kind, _, _ in MIX:
            b, a = res["before"]["by_syntax"][kind]["ms"][step], res["after"]["by_syntax"][kind]["ms"][step]
            cells.append(f"{b:9.1f} -> {a:8.1f}")
        print(f"{step:12}" + "".join(f"{c:>22}" for c in cells))
    for label, key in (("total ms", "total_ms"), ("images/s", "ips_per_core")):
        cells = [f"{res['before']['by_syntax'][k][key]:9.1f} -> {res['after']['by_syntax'][k][key]:8.1f}" for k, _, _ in MIX]
        print(f"{label:12}" + "".join(f"{c:>22}" for c in cells))
    print(f"mix: {res['before']['ips_per_core']:.1f} -> {res['after']['ips_per_core']:.1f} images/s per core "
          f"({res['speedup']:.2f}x; load_image whole: {res['after']['load_image_ips_per_core']:.1f}); "
          f"max |before - after| = {res['max_abs_diff_before_after']:g}")
    print("JPEG 2000 readers, ms per reduced read: " + ", ".join(f"{k} {v}" for k, v in res["j2k_readers_ms"].items()))


if __name__ == "__main__":
    main()
