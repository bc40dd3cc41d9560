"""The nightly run's stages as plain functions of the run context: what a Prefect task (or a script) calls.

Each stage takes the :class:`~osteo_batch.run.context.RunContext` its run's
first stage built, opens the store itself, does one job, and returns a small
JSON-able summary with counts only (no patient data), so the same functions
serve the Prefect flow (one task per stage), a distributed runner, or a plain
Python loop (:func:`osteo_batch.run.nightly.run_nightly`).

archive -> sweep (instances) -> score (pixel tensors -> scores) -> explain -> worklist

The score stage, with its shards, is in :mod:`osteo_batch.run.shards`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable

from osteo_batch.progress import timed
from osteo_batch.run.context import RunContext
from osteo_batch.run.results import results_stage
from osteo_batch.run.shards import run_source_prefix, score_stage
from osteo_batch.settings import SettingsError
from osteo_batch.store import open_store


@timed
def load_dxa_stage(ctx: RunContext) -> dict[str, Any]:
    """Load the DXA table if one was given; later runs keep what was loaded."""
    from osteo_batch.followup.dxa import load_dxa

    settings = ctx.settings
    if not settings.dxa_csv:
        return {"loaded": 0, "rejected": {}}
    with open_store(settings) as st:
        parsed = load_dxa(st, settings.dxa_csv)
    rejected: dict[str, int] = {}
    for _, reason in parsed.rejected:
        rejected[reason] = rejected.get(reason, 0) + 1
    return {"loaded": len(parsed.rows), "rejected": rejected}


@timed
def sweep_stage(ctx: RunContext) -> dict[str, Any]:
    """Index the archive; statuses reflect scores from the run's model (any model in a sweep-only run).

    Study dates are judged against today in the archive's time zone; files left
    out for one (``ineligible:study_date``) are counted by what is wrong and, when
    there are any, listed in ``runs/run-<run_id>-study-dates.csv`` for the PACS
    administrator (accession, study date, SOP Instance UID; no names).
    """
    from osteo_batch.archive.eligibility import STUDY_DATE_PROBLEMS, load_rules
    from osteo_batch.archive.sweep import by_reason, study_date_files, sweep
    from osteo_batch.progress import ProgressLog
    from osteo_batch.run.summary import write_study_dates_csv

    settings = ctx.settings
    pacs_out = None
    if settings.pacs is None and (not settings.archive or not Path(settings.archive).is_dir()):
        raise SettingsError(f"archive {settings.archive} is not a directory; pass --archive DIR or --pacs URL")
    rules = load_rules(settings.rules_file)
    run_date = settings.run_date()
    with open_store(settings) as st:
        if settings.pacs is not None:
            from osteo_batch.pacs.connect import connect
            from osteo_batch.pacs.sweep import sweep_pacs

            client = connect(settings.pacs)
            try:
                res, pacs_out = sweep_pacs(st, client, settings.pacs, run_id=ctx.run_id, rules=rules,
                                           model_id=ctx.model_id, run_date=run_date,
                                           progress=ProgressLog("sweeping: PACS windows", 0, unit="windows"))
            finally:
                client.close()
        else:
            res = sweep(st, settings.archive, run_id=ctx.run_id, rules=rules, model_id=ctx.model_id,
                        workers=settings.workers or None,
                        progress=ProgressLog("sweeping: headers read", 0, unit="files"), run_date=run_date,
                        allowed_roots=tuple(settings.allowed_roots))
        reasons = st.rows("status_counts")
        bad_dates = study_date_files(st, run_date)
    problems = {k: 0 for k in STUDY_DATE_PROBLEMS}
    for r in bad_dates:
        problems[r["problem"]] += 1
    csv_path = write_study_dates_csv(settings.workdir, ctx.run_id, bad_dates) if bad_dates else None
    return {
        "files": res.files,
        "headers_read": res.read,
        "vanished": res.vanished,
        "unreadable_dirs": res.unreadable_dirs,
        "unreadable_dir_reasons": res.unreadable_dir_reasons,  # counts by why (permission_denied, io_error, vanished)
        "by_status": res.counts,
        "by_reason": by_reason(reasons),
        "conserved": res.conserved(),
        "run_date": run_date.isoformat(),
        "timezone": settings.timezone or f"local ({dt.datetime.now().astimezone().tzname()})",
        "study_dates": problems,  # untrusted study dates by what is wrong (all are ineligible:study_date)
        "study_dates_csv": str(csv_path) if csv_path else None,
        "pacs": pacs_out.to_json() if pacs_out is not None else None,  # windows, studies, where it stopped
    }


@timed
def explain_stage(ctx: RunContext) -> dict[str, Any]:
    """Grad-CAM heat maps for flagged images that have none from this run's model."""
    from osteo_batch.explain import explain, record
    from osteo_batch.models.bands import raw_floor
    from osteo_batch.progress import ProgressLog
    from osteo_batch.scoring.tensors import Item

    settings, model_id = ctx.settings, ctx.need_model()
    with open_store(settings, read_only=True) as st:
        todo = [Item(r["path"], r["sop_instance_uid"], None)
                for r in st.rows("flagged_unexplained", {"model_id": model_id, "min_score": raw_floor(ctx.threshold),
                                                         "prefix": run_source_prefix(settings)})]
    if not todo:  # no network to load for nothing
        return {"flagged_without_heatmap": 0, "explained": 0, "failed": 0}
    model = ctx.load_model()
    roots, not_retrieved, spool = settings.archive_roots(), 0, None
    if any("://" in it.path for it in todo):  # PACS instances: their retrieved files (kept when flagged tonight)
        retrieval = settings.retrieval()
        if retrieval is None:
            raise SettingsError("flagged images from a PACS need the PACS to draw their heat maps; pass --pacs URL")
        spool = retrieval.spool()
        wanted = [it.path for it in todo if "://" in it.path]
        if retrieval.pacs.may_query():
            lost = retrieval.fetch(wanted)
        else:  # outside [pacs] hours: only what the spool holds; the rest get their heat map another night
            lost = {u: "deferred" for u in wanted if not spool.path_for(u).exists()}
        not_retrieved = len(lost)
        uris = [it.path for it in todo if it.path not in lost]
        todo = [Item(str(spool.path_for(it.path)) if "://" in it.path else it.path, it.sop_instance_uid, None)
                for it in todo if it.path not in lost]
        roots = (*roots, str(spool.root.resolve()))
    try:
        done, failed = explain(model, todo, settings.workdir / "heatmaps", device=settings.device, roots=roots,
                               workers=min(settings.workers, 2), progress=ProgressLog("heat maps", len(todo)))
    finally:
        if spool is not None:
            for u in uris:
                spool.remove(u)
    with open_store(settings) as st:
        record(st, model_id, ctx.run_id, done)
    return {"flagged_without_heatmap": len(todo) + not_retrieved, "explained": len(done),
            "failed": len(failed) + not_retrieved}


@timed
def worklist_stage(ctx: RunContext) -> dict[str, Any]:
    """Record queued referral actions, load known conditions, render the run's worklists (all sites, each site, CSV)."""
    from osteo_batch.followup.referrals import flush_queue
    from osteo_batch.worklist import write_worklist

    settings, model_id = ctx.settings, ctx.need_model()
    known = {"loaded": 0, "rejected": 0}
    with open_store(settings) as st:
        queued = flush_queue(st, settings.workdir)  # coordinators' actions made while a run held the store
        if settings.known_conditions_csv:
            from osteo_batch.followup.conditions import load_known_conditions

            parsed = load_known_conditions(st, settings.known_conditions_csv)
            known = {"loaded": len(parsed.rows), "rejected": len(parsed.rejected)}
        res = write_worklist(
            st, workdir=settings.workdir, run={"run_id": ctx.run_id}, model_id=model_id, threshold=ctx.threshold,
            bands=ctx.bands, model_card=ctx.card, rules=settings.exclusions(), sites=settings.sites,
        )
    return {"worklist": str(res.path), "csv": str(res.csv), "site_pages": len(res.site_pages), "listed": res.listed,
            "flagged": res.listed + sum(res.excluded.values()), "excluded": res.excluded,
            "below_threshold": res.below_threshold, "threshold": ctx.threshold,
            "referrals_from_queue": queued.recorded, "referral_files_set_aside": queued.quarantined,
            "known_conditions": known}


def instance_counts(settings) -> dict[str, Any]:
    """Files by status and by reason, as the store holds them now (read-only)."""
    from osteo_batch.archive.sweep import by_reason, by_status

    with open_store(settings, read_only=True) as st:
        rows = st.rows("status_counts")
        eligible = st.scalar("eligible_count")
    counts = by_status(rows)
    return {"files": sum(counts.values()), "eligible": eligible, "by_status": counts, "by_reason": by_reason(rows)}


#: The nightly stages in order: archive -> instances -> scores -> explanations -> worklist.
#: The one place the order is written (the run page lists stages in the order they ran).
STAGES: dict[str, Callable[[RunContext], dict[str, Any]]] = {
    "dxa": load_dxa_stage,
    "sweep": sweep_stage,
    "score": score_stage,
    "explain": explain_stage,
    "worklist": worklist_stage,
    "results": results_stage,
}
