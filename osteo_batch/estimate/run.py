"""One estimate, start to end: sweep, draw the sample, time it, project it, record it.

Why under the run lock: the estimate sweeps the run's own store (so the
nightly run after it finds the index done), and its timings mean nothing
while a run shares the cores. Only the sweep writes to the store, and the
``estimates`` row at the end; the sample's score parts, heat maps and any
PACS instances it retrieved go to a temporary folder in the work folder,
deleted after (a killed estimate's folder is deleted by the next one).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from osteo_batch.errors import UserError
from osteo_batch.estimate.project import Measured, Split, project
from osteo_batch.estimate.result import Estimate
from osteo_batch.estimate.timing import measure

log = logging.getLogger("osteo_batch.estimate")

#: the nightly window when neither --window-hours nor [pacs] hours says one
DEFAULT_WINDOW_HOURS = 8.0
#: the smallest sample drawn, and the largest one drawn without being asked
MIN_SAMPLE, MAX_AUTO_SAMPLE = 48, 1024
#: temporary folders in the work folder start with this
TMP_PREFIX = "estimate-tmp-"


class OutsidePacsHoursError(UserError):
    """The PACS may not be queried now ([pacs] hours): the estimate would retrieve its sample against them."""

    code = "pacs_outside_hours"


def auto_sample(workers: int, batch_size: int, prefetch: int = 1) -> int:
    """Enough images for the warm batches (each worker's ``prefetch`` batches) and two steady batches after them.

    Why all the prefetched batches: the workers decode them while the model
    starts (and measures its precision), so they then arrive at the model's
    speed, not the pipeline's; a steady rate timed on them would be the
    model's, and the backlog's estimate too short.
    """
    warm = max(workers, 1) * (max(prefetch, 1) if workers > 0 else 1)
    return min(MAX_AUTO_SAMPLE, max(MIN_SAMPLE, (warm + 2) * batch_size))


def window_hours(settings, given: float | None) -> float:
    """The nightly window: given, else the length of ``[pacs] hours``, else :data:`DEFAULT_WINDOW_HOURS`."""
    if given:
        return float(given)
    hours = settings.pacs.hours if settings.pacs is not None else None
    if not hours:
        return DEFAULT_WINDOW_HOURS
    h1, m1, h2, m2 = map(int, re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", hours).groups())  # checked by PacsSettings
    return ((h2 * 60 + m2 - h1 * 60 - m1) % (24 * 60)) / 60.0


def source_kind(settings) -> str:
    return settings.pacs.parsed.protocol if settings.pacs is not None else "folder"


def run_estimate(settings, *, sample: int | None = None, seed: int = 0, window: float | None = None,
                 cores: int | None = None, shards: int | None = None, heatmaps: int | None = None,
                 on_step: Callable[[str], None] | None = None) -> Estimate:
    """Sweep, time a sample of the backlog with the run's model, project it, and record it in the store."""
    from osteo_batch.run import lock as runlock
    from osteo_batch.run.nightly import new_run_id

    if settings.pacs is not None and not settings.pacs.may_query():
        raise OutsidePacsHoursError(f"the PACS may be queried only at {settings.pacs.hours} ([pacs] hours); "
                                    "run the estimate within those hours")
    run_id = new_run_id()
    with runlock.hold(settings.workdir, run_id):
        for old in Path(settings.workdir).glob(TMP_PREFIX + "*"):  # a killed estimate's (none can be alive)
            shutil.rmtree(old, ignore_errors=True)
        est = _locked(settings, run_id, sample=sample, seed=seed, window=window, cores=cores, shards=shards,
                      heatmaps=heatmaps, say=on_step or log.info)
        from osteo_batch.estimate.record import record
        from osteo_batch.store import open_store

        with open_store(settings) as st:
            record(st, est)
    return est


def _locked(settings, run_id: str, *, sample, seed, window, cores, shards, heatmaps, say) -> Estimate:
    from osteo_batch.estimate.sample import draw
    from osteo_batch.models.model import read_config
    from osteo_batch.run.context import RunContext
    from osteo_batch.run.nightly import index_archive
    from osteo_batch.run.shards import run_source_prefix
    from osteo_batch.scoring import threads
    from osteo_batch.scoring.precision import cpu_capability
    from osteo_batch.store import open_store

    ctx = RunContext.for_model(settings, run_id)  # the run's model, checked and hashed once
    cfg = read_config(ctx.model_dir)
    before = _store_size(settings)
    say("[estimate] sweeping the source, as the nightly run does ...")
    index_archive(settings, run_id)
    after = _store_size(settings)
    opts = settings.score_options()
    n = sample or auto_sample(opts.workers, opts.resolved_batch_size(), opts.prefetch)
    with open_store(settings, read_only=True) as st:
        smp = draw(st, model_id=ctx.model_id, n=n, seed=seed, source_prefix=run_source_prefix(settings))
    spool_bytes = int(settings.pacs.spool_max * smp.mean_bytes) if settings.pacs is not None else None
    base = dict(backlog=smp.backlog, cores=threads.cores(), store_bytes=after[0],
                store_bytes_per_instance=_growth(before, after), spool_bytes=spool_bytes)
    precision = n_threads = None
    if not smp.items:
        say("[estimate] nothing is pending")
        measured = Measured(sample_size=0, scored=0, rejected=0, flagged=0, scoring=Split(0.0, 0, None),
                            heatmaps=None, **base)
    else:
        say(f"[estimate] timing a sample of {len(smp.items)} of them with the run's model: scoring, heat maps, "
            "then decoding and the model on one core ...")
        work = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=settings.workdir))
        try:
            t = _in_fresh_process(measure, ctx.to_json(), list(smp.items), opts, str(work), heatmaps)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        sc, hm = t.scoring, t.heatmaps
        measured = Measured(sample_size=len(smp.items), scored=sc.scored, rejected=sc.rejected, flagged=t.flagged,
                            scoring=sc.split, heatmaps=hm.split if hm and hm.maps else None,
                            decode_core_ips=t.decode_core_ips, model_core_ips=t.model_core_ips,
                            part_bytes_per_row=sc.part_bytes / sc.rows if sc.rows else 0.0,
                            heatmap_bytes=hm.png_bytes / hm.maps if hm and hm.maps else 0.0, **base)
        precision, n_threads = sc.precision, sc.threads
    proj = project(measured, window_hours=window_hours(settings, window), cores=cores, shards=shards,
                   model_name=f"{cfg.backbone} at {cfg.img_size} px")
    return Estimate(run_id=run_id, estimated_at=dt.datetime.now().replace(microsecond=0),
                    source_kind=source_kind(settings), model_id=ctx.model_id,
                    model_name=f"{cfg.backbone} at {cfg.img_size} px", device=settings.device, precision=precision,
                    threads=n_threads, cpu_capability=cpu_capability(), seed=seed, measured=measured,
                    projection=proj)


def _in_fresh_process(fn, *args):
    """``fn(*args)`` in a process of its own, started for it: a cold start, as the nightly run's stages have.

    Why: the sweep just now started the decode workers' server (with torch
    preloaded) in this process, and the run that follows sweeps nothing new,
    so its score stage starts that server, and imports torch, inside its own
    time. Timed here they would be missing from the estimate.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from osteo_batch.workers import watch_parent

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=watch_parent, initargs=(os.getpid(),)) as pool:
        return pool.submit(fn, *args).result()


def _store_size(settings) -> tuple[int, int]:
    """(bytes, instances) of the store now; (0, 0) before it exists."""
    from osteo_batch.store import open_store

    p = settings.store_path
    if not p.exists():
        return 0, 0
    with open_store(settings, read_only=True) as st:
        n = int(st.scalar("count_instances"))
    return p.stat().st_size, n


def _growth(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Store bytes per instance the sweep added (per instance indexed, when it added none)."""
    if after[1] > before[1]:
        return max(0, after[0] - before[0]) / (after[1] - before[1])
    return after[0] / after[1] if after[1] else 0.0
