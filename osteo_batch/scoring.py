"""Scoring: pending images through the model in batches, to Parquet, then into the store.

Why Parquet first: a shard (one process, one GPU, one machine) writes its own
Parquet file, to a temporary name renamed when complete, and touches nothing
else. One writer then loads the shard files into DuckDB. That keeps the store
single-writer however many shards run, and leaves an exchange file per shard
under ``scores/run_date=YYYY-MM-DD/`` for other tools.

The device path is the same on CPU and CUDA: on CUDA the batches come through
pinned memory with non-blocking copies and the forward runs under bf16
autocast; on CPU autocast is off by default (set ``precision="bf16"`` to use it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from osteo_batch.models import calibrate
from osteo_batch.models.model import LoadedModel, normalise
from osteo_batch.tensors import DicomDataset, Item, make_loader, shard_of

log = logging.getLogger("osteo_batch.scoring")


@dataclass(frozen=True)
class ScoreOptions:
    batch_size: int = 16
    workers: int = 2
    device: str = "cpu"
    precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16"


@dataclass
class ShardResult:
    shard: int
    n_shards: int
    parquet: str | None
    scored: int
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def shard_items(items: list[Item], shard: int, n_shards: int) -> list[Item]:
    return [it for it in items if shard_of(it.sop_instance_uid, n_shards) == shard]


def score_shard(
    model: LoadedModel,
    items: list[Item],
    *,
    out_dir: str | os.PathLike,
    run_id: str,
    shard: int = 0,
    n_shards: int = 1,
    opts: ScoreOptions = ScoreOptions(),
    progress=None,
) -> ShardResult:
    """Score this shard's share of ``items``; write one Parquet file; return rejections."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from osteo_batch.outputs import private_dir

    mine = shard_items(items, shard, n_shards)
    cuda = opts.device.startswith("cuda")
    use_bf16 = opts.precision == "bf16" or (opts.precision == "auto" and cuda)
    loader = make_loader(
        DicomDataset(mine, model.config.img_size), batch_size=opts.batch_size, workers=opts.workers, pin_memory=cuda
    )
    uids, pids, scores, rejected = [], [], [], []
    done = 0
    with torch.inference_mode():
        for idx, x, failed in loader:
            rejected.extend((mine[i].key, reason) for i, reason in failed)
            if len(idx):
                x = x.to(opts.device, non_blocking=cuda)
                with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=use_bf16):
                    logits = model.module(normalise(x, model.config))
                p = torch.softmax(logits.float(), dim=1)[:, model.config.labels.index(model.config.score_label)]
                p = calibrate.apply(model.config.calibration, p)  # a site's recalibration, if any
                for i, s in zip(idx.tolist(), p.cpu().tolist()):
                    uids.append(mine[i].sop_instance_uid)
                    pids.append(mine[i].patient_id)
                    scores.append(float(s))
            done += len(idx) + len(failed)
            if progress:
                progress(done, len(mine))

    if not uids:  # nothing scored: no empty exchange file
        return ShardResult(shard, n_shards, None, 0, rejected)
    now = dt.datetime.now()
    table = pa.table(
        {
            "sop_instance_uid": pa.array(uids, pa.string()),
            "patient_id": pa.array(pids, pa.string()),
            "model_id": pa.array([model.model_id] * len(uids), pa.string()),
            "score": pa.array(scores, pa.float64()),
            "run_id": pa.array([run_id] * len(uids), pa.string()),
            "scored_at": pa.array([now] * len(uids), pa.timestamp("us")),
        }
    )
    part = private_dir(Path(out_dir) / f"run_date={now.date().isoformat()}")
    final = part / f"{run_id}-shard-{shard:04d}-of-{n_shards:04d}.parquet"
    tmp = final.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, final)  # readers never see half a shard
    return ShardResult(shard, n_shards, str(final), len(uids), rejected)


def load_shards(store, results: list[ShardResult]) -> int:
    """The single writer: load shard Parquet files and record decode rejections."""
    import pyarrow as pa

    files = [r.parquet for r in results if r.parquet and r.scored]
    before = store.scalar("count_scores")
    if files:
        with store.transaction():  # the scores and the record that their files are loaded
            store.run("scores_load", {"files": files})
            store.run("shard_files_record", {"files": [Path(f).name for f in files]})
    rejected = [rj for r in results for rj in r.rejected]
    if rejected:
        rej = pa.table({"path": [p for p, _ in rejected], "decode_reason": [r for _, r in rejected]})
        store.run("decode_rejections", rej=rej)
    return store.scalar("count_scores") - before


def load_orphan_shards(store, scores_dir: str | os.PathLike) -> int:
    """Load shard files that were written but never loaded (the writer was held or killed).

    Returns how many score rows that added. Scores already present are kept,
    so loading a file twice changes nothing.
    """
    root = Path(scores_dir)
    if not root.is_dir():
        return 0
    on_disk = {p.name: str(p) for p in root.glob("run_date=*/*.parquet")}
    if not on_disk:
        return 0
    loaded = {r["file"] for r in store.rows("shard_files_loaded")}
    orphans = [path for name, path in sorted(on_disk.items()) if name not in loaded]
    if not orphans:
        return 0
    return load_shards(store, [ShardResult(-1, -1, f, 1) for f in orphans])
