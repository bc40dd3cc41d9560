"""Scoring: pending images through the model in shards, to Parquet, then into the store.

The unit of work is a shard: a deterministic share of the pending images (a
hash of the SOP Instance UID picks shard i of n, :func:`osteo_batch.scoring.sharding.shard_of`).
A shard runs in one process on one device, reads its share from the run's
plan (a Parquet file, so a shard on another machine needs no database), and
writes Parquet part files, one per batch group of ``commit_every`` images,
each to a temporary name renamed when complete. It never touches DuckDB.

One writer (:func:`load_scores`) then loads every part file not yet loaded
into the store, in one transaction with the record that it did. So:

- killed at any point, a run loses at most its unfinished batch group; the
  next run loads the parts already on disk and scores only the rest, so every
  image is scored exactly once (``scores`` also keys on image and model);
- shards on several GPUs or machines never contend for the store;
- the part files under ``scores/run_date=YYYY-MM-DD/`` are the exchange format.

The device path is the same on CPU and CUDA: on CUDA the batches come through
pinned memory with non-blocking copies and the forward runs under bf16
autocast (optionally compiled); on a CPU bf16 is used only where it is native
and measured faster on the shard's first batch (:mod:`.precision`), and the
scoring process's intra-op threads are set against the decode workers
(:mod:`.threads`). When the accelerator runs out of memory the batch is split
in halves and scoring goes on at the smaller size.
"""

from __future__ import annotations

import datetime as dt
import contextlib
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from osteo_batch.errors import InternalError

from osteo_batch.models.model import LoadedModel
from osteo_batch.scoring.forward import Forward
from osteo_batch.scoring.precision import PrecisionChoice
from osteo_batch.scoring.sharding import shard_of
from osteo_batch.scoring.tensors import DicomDataset, Item, make_loader
from osteo_batch.scoring.threads import auto_threads, intra_op_threads


#: batch sizes when none is given: a CPU gains nothing past a few images per
#: forward, a GPU needs many to fill (and halves on out-of-memory).
DEFAULT_BATCH = {"cpu": 16, "cuda": 128}


@dataclass(frozen=True)
class ScoreOptions:
    batch_size: int | None = None  # None: DEFAULT_BATCH for the device
    workers: int = 2
    device: str = "cpu"
    precision: str = "auto"  # "auto" (CUDA: bf16; CPU: bf16 where native and measured faster), "fp32", "bf16"
    threads: int | None = None  # intra-op threads while scoring; None: osteo_batch.scoring.threads.auto_threads
    compile: bool = False  # torch.compile the model (CUDA; minutes of warm-up, worth it for big backlogs)
    commit_every: int = 1024  # images per part file: what a crash can cost at most
    prefetch: int = 4  # batches each worker decodes ahead
    roots: tuple[str, ...] = ()  # osteo_batch.archive.walk.real_roots: files resolving elsewhere are never opened
    item_timeout_s: float = 120.0  # one image's open + decode; past it: decode_timeout
    pacs: Any = None  # osteo_batch.pacs.config.PacsSettings: items whose path is a URI are retrieved from it
    spool_dir: str | None = None  # where retrieved instances wait to be scored (WORKDIR/spool)
    keep_at: float | None = None  # raw scores at or above this keep their retrieved file for the heat map

    def resolved_batch_size(self) -> int:
        return self.batch_size or DEFAULT_BATCH["cuda" if self.device.startswith("cuda") else "cpu"]


@dataclass(frozen=True)
class ScorePlan:
    """The pending images of one run, split into shards, in a Parquet file."""

    path: str
    run_id: str
    n_shards: int
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.sizes)


@dataclass
class ShardResult:
    shard: int
    n_shards: int
    parts: list[str] = field(default_factory=list)
    scored: int = 0
    rejected: int = 0
    seconds: float = 0.0
    micro_batch: int | None = None  # set when out-of-memory forced a smaller batch
    precision: str | None = None  # "fp32" | "bf16", as scored (None: no image reached the model)
    choice: PrecisionChoice | None = None  # why, and the rates and drift it was chosen by
    threads: int | None = None  # intra-op threads while scoring

    def counts(self) -> dict:
        c = self.choice
        return {"shard": self.shard, "n_shards": self.n_shards, "parts": len(self.parts), "scored": self.scored,
                "rejected": self.rejected, "seconds": round(self.seconds, 2), "micro_batch": self.micro_batch,
                "precision": self.precision, "precision_reason": c.reason if c else None,
                **{f"precision_{k}": None if getattr(c, k, None) is None else round(getattr(c, k), 4)
                   for k in ("fp32_ips", "bf16_ips", "drift")}, "threads": self.threads}


def shard_items(items: list[Item], shard: int, n_shards: int) -> list[Item]:
    return [it for it in items if shard_of(it.sop_instance_uid, n_shards) == shard]


# ------------------------------------------------------------------ plan


def plan(store, scores_dir: str | os.PathLike, run_id: str, n_shards: int = 1, *,
         source_prefix: str | None = None) -> ScorePlan:
    """Write the run's pending images, each with its shard, to ``scores/plans/<run_id>.parquet``.

    The shards are computed in DuckDB and the rows stay in Arrow: a backlog of
    millions of images never becomes millions of Python objects here.
    ``source_prefix``: the run's PACS (:func:`osteo_batch.pacs.sweep.source_prefix`), or None for a folder;
    only that source's pending rows are planned.
    """
    import pyarrow.compute as pc

    from osteo_batch.outputs import private_dir

    table = store.arrow("score_plan", {"n_shards": n_shards, "prefix": source_prefix})
    final = private_dir(Path(scores_dir) / "plans") / f"{run_id}.parquet"
    _write_atomic(table, final)
    counts = {r["values"]: r["counts"] for r in pc.value_counts(table.column("shard")).to_pylist()} if len(table) else {}
    return ScorePlan(str(final), run_id, n_shards, tuple(int(counts.get(i, 0)) for i in range(n_shards)))


def plan_items(plan_: ScorePlan, shard: int) -> list[Item]:
    """This shard's images, in the plan's order."""
    import pyarrow.parquet as pq

    t = pq.read_table(plan_.path, filters=[("shard", "=", shard)], columns=["path", "sop_instance_uid", "patient_id"])
    return [Item(p, u, pid) for p, u, pid in zip(*(t.column(c).to_pylist() for c in t.column_names))]


def _write_atomic(table, final: Path) -> None:
    import pyarrow.parquet as pq

    tmp = final.with_name(final.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)  # readers never see half a file
    except OSError as e:
        tmp.unlink(missing_ok=True)  # a full disk keeps no half part (and gets its space back)
        if e.filename is None:
            e.filename = str(tmp)  # pyarrow names no file: the message then names scores/
        raise


# ------------------------------------------------------------------ one shard


class _Parts:
    """Rows of the current batch group; ``flush`` writes them as one part file."""

    def __init__(self, out_dir: Path, run_id: str, shard: int, n_shards: int, model_id: str):
        self.out_dir, self.run_id, self.model_id = out_dir, run_id, model_id
        # an attempt token: a second pass or a retried shard of the same run never reuses a part's
        # name, which the loader would take for one it has loaded already
        self.stem = f"{run_id}-shard-{shard:04d}-of-{n_shards:04d}-{secrets.token_hex(4)}"
        self.rows: dict[str, list] = {k: [] for k in ("sop_instance_uid", "patient_id", "score", "path", "decode_reason")}
        self.files: list[str] = []

    def add_score(self, item: Item, score: float) -> None:
        for k, v in zip(self.rows, (item.sop_instance_uid, item.patient_id, score, None, None)):
            self.rows[k].append(v)

    def add_rejection(self, item: Item, reason: str) -> None:
        for k, v in zip(self.rows, (item.sop_instance_uid, item.patient_id, None, item.path, reason)):
            self.rows[k].append(v)

    def __len__(self) -> int:
        return len(self.rows["sop_instance_uid"])

    def flush(self) -> None:
        import pyarrow as pa

        from osteo_batch.outputs import private_dir

        n = len(self)
        if not n:
            return
        now = dt.datetime.now()
        table = pa.table({
            "sop_instance_uid": pa.array(self.rows["sop_instance_uid"], pa.string()),
            "patient_id": pa.array(self.rows["patient_id"], pa.string()),
            "model_id": pa.array([self.model_id] * n, pa.string()),
            "score": pa.array(self.rows["score"], pa.float64()),
            "run_id": pa.array([self.run_id] * n, pa.string()),
            "scored_at": pa.array([now] * n, pa.timestamp("us")),
            "path": pa.array(self.rows["path"], pa.string()),  # rejected rows only
            "decode_reason": pa.array(self.rows["decode_reason"], pa.string()),
        })
        part = private_dir(self.out_dir / f"run_date={now.date().isoformat()}")
        final = part / f"{self.stem}-part-{len(self.files):05d}.parquet"
        _write_atomic(table, final)
        self.files.append(str(final))
        for v in self.rows.values():
            v.clear()


def score_shard(
    model: LoadedModel,
    items: list[Item],
    *,
    out_dir: str | os.PathLike,
    run_id: str,
    shard: int = 0,
    n_shards: int = 1,
    opts: ScoreOptions = ScoreOptions(),
    progress: Callable[[int, int], None] | None = None,
    forward: Forward | None = None,
) -> ShardResult:
    """Score ``items`` (this shard's share, or all of them when ``n_shards`` is 1).

    Writes one part file per ``opts.commit_every`` images (scores and decode
    rejections together, so one rename commits both) and returns counts and
    part paths only, never patient data.
    """
    import torch

    t0 = time.monotonic()
    mine = shard_items(items, shard, n_shards) if n_shards > 1 else items
    fwd = forward or Forward(model, opts)
    parts = _Parts(Path(out_dir), run_id, shard, n_shards, model.model_id)
    retrieving = _retrieval(mine, opts)
    loader = make_loader(DicomDataset(mine, model.config.img_size, roots=opts.roots,
                                      item_timeout_s=opts.item_timeout_s,
                                      spool_dir=opts.spool_dir if retrieving else None),
                         batch_size=opts.resolved_batch_size(),
                         workers=opts.workers, pin_memory=fwd.cuda, prefetch=opts.prefetch)
    res = ShardResult(shard, n_shards)
    done = 0
    threads = opts.threads if opts.threads is not None or not mine else auto_threads(opts.workers, opts.device)
    with torch.inference_mode(), intra_op_threads(threads) as res.threads, \
            retrieving or contextlib.nullcontext() as fetch:
        for idx, x, failed in loader:
            for i, reason in failed:
                parts.add_rejection(mine[i], reason)
                if fetch is not None and "://" in mine[i].path:
                    fetch.done(mine[i].path)
            if len(idx):
                for i, s in zip(idx.tolist(), fwd(x)):
                    parts.add_score(mine[i], float(s))
                    if fetch is not None and "://" in mine[i].path:
                        fetch.done(mine[i].path, keep=opts.keep_at is not None and float(s) >= opts.keep_at)
            res.scored += len(idx)
            res.rejected += len(failed)
            done += len(idx) + len(failed)
            if len(parts) >= opts.commit_every:
                parts.flush()
            if progress:
                progress(done, len(mine))
    parts.flush()
    res.parts = parts.files
    res.seconds = time.monotonic() - t0
    res.micro_batch, res.precision, res.choice = fwd.micro_batch, fwd.precision, fwd.choice
    return res


def _retrieval(items: list[Item], opts: ScoreOptions):
    """A :class:`~osteo_batch.pacs.spool.Prefetcher` for the items that are PACS instances, or None.

    It retrieves them in the order the DataLoader reads them, so retrieval
    overlaps decoding and scoring; at most ``[pacs] spool_max`` files (and at
    least one batch's worth) wait in the spool.
    """
    uris = [it.path for it in items if "://" in it.path]
    if not uris:
        return None
    if opts.pacs is None or opts.spool_dir is None:
        raise InternalError("PACS instances to score, but no PACS settings or spool for them")
    from osteo_batch.pacs.spool import Retrieval

    return Retrieval(opts.pacs, opts.spool_dir).prefetcher(uris, at_least=opts.resolved_batch_size())


# ------------------------------------------------------------------ the single writer


@dataclass
class LoadResult:
    files: int = 0
    scored: int = 0  # score rows added
    rejected: int = 0  # decode rejections recorded


def load_scores(store, scores_dir: str | os.PathLike) -> LoadResult:
    """Load every part file under ``scores_dir`` that is not loaded yet (the single writer).

    Parts of this run, of a shard on another machine, or of a run that was
    killed before it could load them: all the same here. Each file's rows and
    the record that it is loaded commit together; a score already present is
    kept, so nothing is ever counted twice.
    """
    root = Path(scores_dir)
    if not root.is_dir():
        return LoadResult()
    on_disk = {p.name: str(p) for p in root.glob("run_date=*/*.parquet")}
    loaded = {r["file"] for r in store.rows("shard_files_loaded")}
    todo = [path for name, path in sorted(on_disk.items()) if name not in loaded]
    if not todo:
        return LoadResult()
    before = store.scalar("count_scores")
    with store.transaction():
        store.run("scores_load", {"files": todo})
        rejected = store.scalar("decode_rejections_load", {"files": todo})
        store.run("shard_files_record", {"files": [Path(f).name for f in todo]})
    return LoadResult(len(todo), store.scalar("count_scores") - before, int(rejected or 0))


def remove_stale_temporaries(scores_dir: str | os.PathLike) -> int:
    """Delete ``*.tmp`` files a killed writer left (call only while holding the run lock)."""
    root = Path(scores_dir)
    n = 0
    for p in list(root.glob("run_date=*/*.tmp")) + list(root.glob("plans/*.tmp")):
        p.unlink(missing_ok=True)
        n += 1
    return n
