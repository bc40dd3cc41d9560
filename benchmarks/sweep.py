"""Sweep at archive scale: first sweep, unchanged re-sweep against the OS's own walk, peak memory.

Builds an archive of N small DICOM files (8x8 pixels: the sweep reads headers,
so pixel size does not matter), then measures in one run:

- ``first_sweep_files_per_s``: the first sweep of the whole archive;
- ``resweep_s``: a second sweep with nothing changed;
- ``walk_stat_s``: ``os.walk`` plus ``os.stat`` of every file over the same tree,
  the floor any incremental sweep must pay (target: resweep_s <= 2 x walk_stat_s);
- ``peak_rss_mb``: the peak resident memory of this process and its workers.

Usage: python benchmarks/sweep.py [--files 100000] [--workers N] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _write_chunk(args: tuple[str, int, int]) -> int:
    root, start, stop = args
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, DigitalXRayImageStorageForPresentation

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.PatientSex, ds.PatientBirthDate, ds.StudyDate = "F", "19550101", "20250101"
    ds.StudyInstanceUID = ds.SeriesInstanceUID = "2.25.1"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64, dtype="<u2").tobytes()
    for i in range(start, stop):
        uid = f"2.25.{10**12 + i}"
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = uid
        ds.PatientID = f"B{i:07d}"
        p = Path(root) / f"{i // 10000:02d}" / f"{(i // 100) % 100:02d}" / f"IM{i:07d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(p, enforce_file_format=True)
    return stop - start


def build_archive(root: Path, n: int, workers: int) -> None:
    marker = root.parent / f".{root.name}-complete"  # beside the archive, not in it
    if marker.is_file() and marker.read_text() == str(n):
        return
    step = 2000
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_chunk, [(str(root), i, min(n, i + step)) for i in range(0, n, step)]))
    marker.write_text(str(n))


def walk_stat(root: Path) -> int:
    n = 0
    for d, _, files in os.walk(root):
        for f in files:
            os.stat(os.path.join(d, f))
            n += 1
    return n


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)  # ru_maxrss is in KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--root", type=Path, default=None, help="where to build the archive (kept for reruns)")
    args = ap.parse_args()

    from osteo_batch.store import Store
    from osteo_batch.archive.sweep import sweep

    root = args.root or Path(tempfile.mkdtemp(prefix="osteo-sweep-bench-"))
    archive = root / "archive"
    t = time.perf_counter()
    build_archive(archive, args.files, args.workers)
    print(f"archive of {args.files} files ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    store_path = root / "bench.duckdb"
    store_path.unlink(missing_ok=True)

    with Store(store_path) as st:
        t = time.perf_counter()
        first = sweep(st, archive, run_id="first", workers=args.workers)
        first_s = time.perf_counter() - t
        walk_s = min(_timed(walk_stat, archive) for _ in range(2))
        t = time.perf_counter()
        again = sweep(st, archive, run_id="again", workers=args.workers)
        resweep_s = time.perf_counter() - t
    assert first.conserved() and again.read == 0 and first.files == args.files

    print(f"{'files':>24} {first.files}")
    print(f"{'first sweep':>24} {first_s:8.1f} s  ({first.files / first_s:,.0f} files/s, {args.workers} workers)")
    print(f"{'re-sweep, unchanged':>24} {resweep_s:8.2f} s")
    print(f"{'os.walk + stat':>24} {walk_s:8.2f} s  (re-sweep / walk = {resweep_s / walk_s:.2f})")
    print(f"{'peak RSS':>24} {peak_rss_mb():8.0f} MB")
    print(json.dumps({"files": first.files, "first_sweep_files_per_s": round(first.files / first_s, 1),
                      "resweep_s": round(resweep_s, 3), "walk_stat_s": round(walk_s, 3),
                      "peak_rss_mb": peak_rss_mb(), "workers": args.workers, "cpu_count": os.cpu_count()}))
    return 0


def _timed(fn, *a) -> float:
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
