"""Timing the sample as the nightly run would score it and draw its heat maps, into a temporary folder.

Why the run's own code: the scorer (:func:`osteo_batch.scoring.score.score_shard`
with the run's :class:`~osteo_batch.scoring.score.ScoreOptions`) and the heat
maps (:func:`osteo_batch.explain.explain` with the explain stage's workers)
are what the backlog will run, so their start-up, precision choice, decode
workers and batch sizes are all in the figures. Each stage's clock starts
where the run's does, before the model is loaded. Nothing is written to the
store: the Parquet parts, PNGs and any PACS instances retrieved go to a
temporary folder that the caller deletes. :func:`measure` is all of it, in
the order the run goes (it runs in a process of its own, started cold).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from osteo_batch.estimate.project import Split
from osteo_batch.scoring.tensors import Item


@dataclass(frozen=True)
class ScoringTiming:
    split: Split
    scored: int
    rejected: int
    part_bytes: int  # the Parquet parts the sample wrote
    rows: int  # their rows (scores and rejections)
    precision: str | None  # as scored
    threads: int | None


@dataclass(frozen=True)
class HeatmapTiming:
    split: Split
    maps: int
    failed: int
    png_bytes: int  # all the PNGs written


@dataclass(frozen=True)
class SampleTiming:
    """Everything :func:`measure` timed on the sample."""

    scoring: ScoringTiming
    heatmaps: HeatmapTiming | None  # None: nothing was scored, so nothing to draw
    flagged: int  # sampled images at or above the threshold
    decode_core_ips: float | None
    model_core_ips: float | None  # None on a GPU (the per-core rate is a CPU's)


def _clock():
    t0 = time.monotonic()
    arrivals: list[tuple[float, int]] = []

    def progress(done: int, _total: int) -> None:
        arrivals.append((time.monotonic() - t0, done))

    return t0, arrivals, progress


def time_scoring(ctx, items: list[Item], opts, out_dir: Path) -> ScoringTiming:
    """Score ``items`` with the run's model and ``opts`` into ``out_dir``, timing each batch."""
    from osteo_batch.scoring.score import score_shard

    t0, arrivals, progress = _clock()
    model = ctx.load_model(opts.device)
    res = score_shard(model, items, out_dir=out_dir, run_id=ctx.run_id, opts=opts, progress=progress)
    end = time.monotonic() - t0
    warm = max(opts.workers, 1) * (max(opts.prefetch, 1) if opts.workers > 0 else 1)  # see run.auto_sample
    return ScoringTiming(Split.of(arrivals, warm, end), res.scored, res.rejected,
                         sum(Path(p).stat().st_size for p in res.parts), res.scored + res.rejected,
                         res.precision, res.threads)


def time_heatmaps(ctx, items: list[Item], out_dir: Path, *, roots: tuple[str, ...]) -> HeatmapTiming:
    """Draw the heat maps of ``items`` as the explain stage does (its workers, its batches), timing each batch."""
    from osteo_batch.explain import explain

    settings = ctx.settings
    workers = min(settings.workers, 2)  # as osteo_batch.run.stages.explain_stage runs it
    t0, arrivals, progress = _clock()
    model = ctx.load_model()
    done, failed = explain(model, items, out_dir, device=settings.device, roots=roots, workers=workers,
                           progress=progress)
    end = time.monotonic() - t0
    png = sum((out_dir / e.heatmap).stat().st_size for e in done)
    return HeatmapTiming(Split.of(arrivals, max(workers, 1), end), len(done), len(failed), png)


def measure(context: dict[str, Any], items: list[Item], opts, work_dir: str, n_heatmaps: int | None) -> SampleTiming:
    """Score ``items``, draw heat maps of some of them (flagged ones first), then time one core."""
    from osteo_batch.estimate.cores import decode_core_ips, model_core_ips
    from osteo_batch.models.bands import raw_floor
    from osteo_batch.run.context import RunContext

    ctx = RunContext.from_json(context)
    settings, work = ctx.settings, Path(work_dir)
    spool = None
    if settings.pacs is not None:  # retrieved into the temporary folder, kept there for the heat maps
        spool = work / "spool"
        opts = replace(opts, spool_dir=str(spool), keep_at=0.0)
    sc = time_scoring(ctx, items, opts, work / "scores")
    floor = raw_floor(ctx.threshold)
    scored = _scored_items(work / "scores", {it.sop_instance_uid: it for it in items})
    local, roots = _local(settings, [it for it, _ in scored], spool)
    flagged = [local[it.sop_instance_uid] for it, s in scored if s >= floor]
    hm = None
    if scored:
        want = n_heatmaps or (min(settings.workers, 2) + 2) * 8  # the explain stage's warm batches and two more
        rest = [local[it.sop_instance_uid] for it, s in scored if s < floor]
        hm = time_heatmaps(ctx, (flagged + rest)[:want], work / "heatmaps", roots=roots)
    model = ctx.load_model()
    decode_ips, images = decode_core_ips(list(local.values()), model.config.img_size, roots=roots)
    model_ips = None
    if not settings.device.startswith("cuda"):
        model_ips = model_core_ips(model, images, opts, sc.precision)
    return SampleTiming(sc, hm, len(flagged), decode_ips, model_ips)


def _scored_items(scores_dir: Path, by_uid: dict[str, Item]) -> list[tuple[Item, float]]:
    """The sample's scored images with their scores, from the parts it wrote."""
    import pyarrow.parquet as pq

    out = []
    for part in sorted(scores_dir.rglob("*.parquet")):
        t = pq.read_table(part, columns=["sop_instance_uid", "score"])
        out += [(by_uid[u], s) for u, s in zip(*(t.column(c).to_pylist() for c in t.column_names)) if s is not None]
    return out


def _local(settings, items: list[Item], spool: Path | None) -> tuple[dict[str, Item], tuple[str, ...]]:
    """Where each scored image can be read again: its file, or (a PACS) its copy in the temporary spool."""
    roots = settings.archive_roots()
    if spool is None:
        return {it.sop_instance_uid: it for it in items}, roots
    from osteo_batch.pacs.spool import Retrieval

    sp = Retrieval(settings.pacs, str(spool)).spool()
    return ({it.sop_instance_uid: Item(str(sp.path_for(it.path)) if "://" in it.path else it.path,
                                       it.sop_instance_uid, None) for it in items},
            (*roots, str(sp.root.resolve())))
