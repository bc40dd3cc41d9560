"""The score stage: plan the shards, score each (here, on Ray or on a work pool), load them with one writer.

Shards write Parquet parts only; :func:`load_stage` is the single writer that
loads them into the store. The plan is JSON-able (a file in the work folder
and shard sizes, no patient data), so the shards can run anywhere that sees
the archive and the work folder at the same paths.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from osteo_batch.progress import timed
from osteo_batch.run.context import RunContext
from osteo_batch.store import open_store

#: Score passes in one night: the first, then one per round of duplicate copies
#: standing in for a copy that failed to decode.
SCORE_PASSES = 3


def plan_stage(ctx: RunContext) -> dict[str, Any]:
    """Load score files left by earlier runs, then write this run's shard plan."""
    from osteo_batch.archive.sweep import resolve_status
    from osteo_batch.scoring.score import load_scores, plan, remove_stale_temporaries

    model_id = ctx.need_model()
    settings = ctx.settings
    scores_dir = settings.workdir / "scores"
    if settings.pacs is not None:  # a killed run's retrieved files: fetched again when needed
        from osteo_batch.pacs.spool import Spool

        Spool.at(settings.workdir).clear()
    with open_store(settings) as st:
        remove_stale_temporaries(scores_dir)
        earlier = load_scores(st, scores_dir)  # parts a killed or held run wrote but never loaded
        if earlier.files:
            resolve_status(st, model_id)
        p = plan(st, scores_dir, ctx.run_id, settings.n_shards(), source_prefix=run_source_prefix(settings))
    return {"plan": asdict(p), "recovered_from_earlier_parts": earlier.scored}


def run_source_prefix(settings) -> str | None:
    """The run's source as the index writes its paths: a PACS's URI prefix, or None for a folder."""
    if settings.pacs is None:
        return None
    from osteo_batch.pacs.sweep import source_prefix

    return source_prefix(settings.pacs.display)


def shard_stage(ctx: RunContext, plan: dict[str, Any], shard: int, *, device: str | None = None) -> dict[str, Any]:
    """Score one shard of the plan on one device; writes Parquet parts only, never the store.

    This is what one process, one GPU or one Ray task runs.
    """
    from osteo_batch.progress import ProgressLog
    from osteo_batch.scoring.score import ScorePlan, plan_items, score_shard

    ctx.need_model()
    settings = ctx.settings
    p = ScorePlan(**{**plan, "sizes": tuple(plan["sizes"])})
    device = device or settings.device
    if device.startswith("cuda") or settings.device.startswith("cuda"):
        settings.check_device()
    model = ctx.load_model(device)
    items = plan_items(p, shard)
    deferred = 0
    if settings.pacs is not None and not settings.pacs.may_query():  # outside [pacs] hours: no retrieval now
        deferred = sum("://" in it.path for it in items)
        items = [it for it in items if "://" not in it.path]  # they stay pending for the next night
    label = f"scoring shard {shard + 1}/{p.n_shards}" if p.n_shards > 1 else "scoring"
    opts = settings.score_options(device)
    if settings.pacs is not None:  # flagged images keep their retrieved file for the heat map
        from dataclasses import replace

        from osteo_batch.models.bands import raw_floor
        from osteo_batch.pacs.spool import Spool

        Spool.at(settings.workdir)
        opts = replace(opts, keep_at=raw_floor(ctx.threshold))
    res = score_shard(model, items, out_dir=settings.workdir / "scores", run_id=ctx.run_id, shard=shard,
                      n_shards=p.n_shards, opts=opts,
                      progress=ProgressLog(label, len(items), unit="images"))
    return {**res.counts(), "device": device, **({"retrieval_deferred": deferred} if deferred else {})}


def _shard_process(context: dict[str, Any], plan: dict[str, Any], shard: int, device: str) -> dict[str, Any]:
    return shard_stage(RunContext.from_json(context), plan, shard, device=device)


def run_shards_here(ctx: RunContext, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the plan's shards on this machine: in this process when there is one, else one process each.

    Several shards here means several GPUs (``--shards 0`` or ``--shards N``
    with ``--device cuda``): each shard gets its own process and device, so
    no two share a CUDA context or a Python interpreter. A shard that fails
    keeps the parts it finished; the next run scores only the rest.
    """
    n = plan["n_shards"]
    if n == 1:
        return [shard_stage(ctx, plan, 0)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from osteo_batch.workers import watch_parent

    with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                             initializer=watch_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_shard_process, ctx.to_json(), plan, i, ctx.settings.shard_device(i))
                   for i in range(n)]
        return [f.result() for f in futures]


def load_stage(ctx: RunContext, shards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The single writer: load every score part not yet in the store, then update statuses."""
    from osteo_batch.archive.sweep import resolve_status
    from osteo_batch.scoring.score import load_scores

    model_id = ctx.need_model()
    with open_store(ctx.settings) as st:
        res = load_scores(st, ctx.settings.workdir / "scores")
        counts = resolve_status(st, model_id)
    return {"files_loaded": res.files, "scored": res.scored, "decode_rejected": res.rejected,
            "by_status": counts, "model_id": model_id, "shards": shards or []}


def score_summary(planned: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    """The score stage's summary from its plan and its load, however the shards ran."""
    return {"pending": sum(planned["plan"]["sizes"]), "n_shards": planned["plan"]["n_shards"],
            "recovered_from_earlier_parts": planned["recovered_from_earlier_parts"], **loaded}


@timed
def score_stage(ctx: RunContext) -> dict[str, Any]:
    """Score pending images: plan the shards, run them on this machine, load the results.

    When an image's kept copy fails to decode and another file holds the same
    SOP Instance UID, that copy becomes pending at the load; it is scored in
    another pass of the same night (at most :data:`SCORE_PASSES` passes), not
    left for tomorrow.
    """
    planned = plan_stage(ctx)
    summary = score_summary(planned, load_stage(ctx, run_shards_here(ctx, planned["plan"])))
    for _ in range(SCORE_PASSES - 1):
        if not summary["decode_rejected"]:
            break
        again = plan_stage(ctx)
        if not sum(again["plan"]["sizes"]):
            break
        more = load_stage(ctx, run_shards_here(ctx, again["plan"]))
        summary["pending"] += sum(again["plan"]["sizes"])
        summary["passes"] = summary.get("passes", 1) + 1
        for k in ("files_loaded", "scored", "decode_rejected"):
            summary[k] += more[k]
        summary["by_status"], summary["shards"] = more["by_status"], summary["shards"] + more["shards"]
    return summary
