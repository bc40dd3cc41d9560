"""Scoring rate from a folder and from a real PACS (Orthanc over DICOMweb and DIMSE), same files, same model.

What it measures, in images per second, in one run: the scoring stage
itself (``score_shard``: DataLoader workers decode while the model runs) on
the same synthetic archive, read three ways:

- ``folder_ips``: the files from a folder, as ``--archive`` reads them;
- ``dicomweb_ips``: the same instances from Orthanc, retrieved over WADO-RS
  (``transfer-syntax=*``: JPEG 2000 as stored) into the bounded spool while
  the model scores the ones before them, as ``--pacs http://...`` does;
- ``dimse_ips``: the same over C-GET, as ``--pacs dimse://...`` does.

Each source is run ``--rounds`` times, interleaved (folder, DICOMweb, DIMSE,
folder, ...), and the best round of each is reported, so a passing load on a
shared machine hurts all three alike. The ratios ``dicomweb_vs_folder`` and
``dimse_vs_folder`` are the figures to read (the target for DICOMweb is 0.7).
Orthanc runs on this machine, on 127.0.0.1, so the network is a loopback:
what is measured is the protocol, the PACS's own work and the spool, not a
hospital's wire. The model is the demo backbone with random weights (speed
does not depend on the weights); decoding matters, as half the archive is
JPEG 2000 at 1500-3000 px.

Usage: python benchmarks/pacs_throughput.py [--images 96] [--workers 2] [--rounds 2] [--parallel 4]
Needs Debian's ``orthanc`` and ``orthanc-dicomweb`` (scripts/setup.sh installs them).
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's Orthanc launcher


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--backbone", default="dinov2_tiny_demo")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode workers (default: all cores)")
    ap.add_argument("--parallel", type=int, default=4, help="[pacs] parallel: retrievals at once (default: 4)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-dimse", action="store_true")
    args = ap.parse_args()

    import torch

    from orthanc_server import Orthanc
    from osteo_batch.models.model import ModelConfig, build_module, load_model_dir, save_model_dir
    from osteo_batch.pacs.config import PacsSettings
    from osteo_batch.pacs.sweep import instance_uri
    from osteo_batch.scoring.score import ScoreOptions, score_shard
    from osteo_batch.scoring.tensors import Item
    from osteo_batch.synth.cohort import CohortSpec, write_cohort

    root = Path(tempfile.mkdtemp(prefix="osteo-pacs-bench-"))
    spec = CohortSpec(n_women=args.images, n_men=0, n_young=0, n_lateral=0, n_followups=0, n_unreadable=0, seed=99)
    t0 = time.monotonic()
    cohort = write_cohort(root, spec, workers=os.cpu_count() or 1)
    _say(f"archive: {len(cohort.plans)} images in {time.monotonic() - t0:.0f} s")
    torch.manual_seed(0)
    cfg = ModelConfig.for_backbone(args.backbone)
    save_model_dir(build_module(cfg), cfg, root / "model")
    model = load_model_dir(root / "model", device="cpu")

    rates: dict[str, list[float]] = {}
    with Orthanc() as orthanc:
        t0 = time.monotonic()
        up = orthanc.upload(sorted(p for p in cohort.archive.rglob("*") if p.is_file()))
        _say(f"Orthanc: {up['accepted']} instances uploaded in {time.monotonic() - t0:.0f} s")
        sources = {"folder": None, "dicomweb": PacsSettings(orthanc.dicomweb_url, parallel=args.parallel)}
        if not args.no_dimse:
            sources["dimse"] = PacsSettings(f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
                                            parallel=args.parallel)
        for rnd in range(args.rounds):
            for name, pacs in sources.items():
                if pacs is None:
                    items = [Item(str(cohort.archive / p.filename), p.sop_instance_uid, p.patient_id)
                             for p in cohort.plans]
                else:
                    items = [Item(instance_uri(pacs.display, p.study_instance_uid, p.series_instance_uid,
                                               p.sop_instance_uid), p.sop_instance_uid, p.patient_id)
                             for p in cohort.plans]
                spool = root / f"spool-{name}"
                spool.mkdir(mode=0o700, exist_ok=True)
                opts = ScoreOptions(workers=args.workers, pacs=pacs, spool_dir=str(spool) if pacs else None,
                                    roots=(str(cohort.archive.resolve()),))
                t = time.perf_counter()
                res = score_shard(model, items, out_dir=root / f"scores-{name}-{rnd}", run_id=f"b{rnd}", opts=opts)
                ips = res.scored / (time.perf_counter() - t)
                if res.scored != len(items):
                    raise SystemExit(f"{name}: scored {res.scored} of {len(items)} (rejected {res.rejected})")
                rates.setdefault(name, []).append(ips)
                _say(f"round {rnd + 1}: {name}: {ips:.2f} images/s")
    best = {k: max(v) for k, v in rates.items()}
    print(f"{'source':12}{'images/s':>10}{'vs folder':>11}")
    for k, v in best.items():
        print(f"{k:12}{v:>10.2f}{v / best['folder']:>11.2f}")
    out = {
        "folder_ips": round(best["folder"], 2), "dicomweb_ips": round(best["dicomweb"], 2),
        "dimse_ips": round(best["dimse"], 2) if "dimse" in best else None,
        "dicomweb_vs_folder": round(best["dicomweb"] / best["folder"], 3),
        "dimse_vs_folder": round(best["dimse"] / best["folder"], 3) if "dimse" in best else None,
        "rounds": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "images": len(cohort.plans), "workers": args.workers, "parallel": args.parallel, "backbone": args.backbone,
        "img_size": cfg.img_size, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "machine": platform.node(),
    }
    print(json.dumps(out))
    shutil.rmtree(root, ignore_errors=True)
    return 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
