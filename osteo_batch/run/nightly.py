"""One run from start to end: its record in ``runs``, its lock, its stages in order, its page.

:func:`run_nightly` is the Python entry point of the nightly run (re-exported
as ``osteo_batch.pipeline.run_nightly``); :func:`index_archive` is the
sweep-only run that ``sweep``, ``train``, ``calibrate``, the study and the
demo's history run before they read the index. Both hold the work folder's run
lock, so a sweep never interleaves with a nightly run, and both mark runs that
a kill left ``running`` as ``ended_abnormally`` (under the lock, none can be alive).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from typing import Any, Callable

from osteo_batch.run import lock as runlock
from osteo_batch.run import stages as stage_fns
from osteo_batch.run.context import RunContext
from osteo_batch.settings import Settings
from osteo_batch.store import open_store

log = logging.getLogger("osteo_batch")

Stage = Callable[[RunContext], dict[str, Any]]


def new_run_id() -> str:
    """Sortable and free of patient data: UTC time plus randomness."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def start_run(settings: Settings, run_id: str, *, kind: str = "nightly") -> tuple[RunContext, dict[str, Any]]:
    """The first stage: build the run's context and open its record. Call it holding the run lock.

    A nightly run checks and hashes its model folder here, once (a damaged file
    fails here, in one line, before anything is swept); every later stage
    takes the model from the context.
    """
    ctx = RunContext.for_model(settings, run_id) if kind == "nightly" else RunContext.for_index(settings, run_id)
    if kind == "nightly":
        from osteo_batch.run.results import check_results_allowed

        check_results_allowed(ctx)  # --send-results a phantom model: refused before anything is swept
    with open_store(settings) as st:
        abandoned = st.rows("runs_end_abandoned", {"run_id": run_id})
        st.run("runs_start", {"run_id": run_id, "kind": kind, "archive": settings.source,
                              "model_id": ctx.model_id, "threshold": ctx.threshold})
    if abandoned:
        log.warning("%d earlier run(s) had been killed before they finished; marked ended_abnormally", len(abandoned))
    return ctx, {**ctx.summary(), "earlier_runs_ended_abnormally": len(abandoned)}


def finish_run(settings: Settings, run_id: str, summary: dict[str, Any], *, status: str = "finished") -> dict[str, Any]:
    with open_store(settings) as st:
        st.run("runs_finish", {"run_id": run_id, "status": status, "summary": json.dumps(summary, default=str)})
    return summary


def index_archive(settings: Settings, run_id: str | None = None, *, load_dxa: bool = False) -> dict[str, Any]:
    """A sweep-only run (``kind = 'sweep'``): the DXA table (when asked) and the sweep, under the run lock."""
    run_id = run_id or new_run_id()
    with runlock.hold(settings.workdir, run_id):
        ctx, _ = start_run(settings, run_id, kind="sweep")
        out: dict[str, Any] = {"run_id": run_id}
        try:
            if load_dxa:
                out["dxa"] = stage_fns.load_dxa_stage(ctx)
            out["sweep"] = stage_fns.sweep_stage(ctx)
        except BaseException as e:  # recorded as failed, not left "running" for the next run to call killed
            summary = {"error": type(e).__name__, **({"error_code": e.code} if isinstance(getattr(e, "code", None), str)
                                                     else {})}
            try:
                finish_run(settings, run_id, summary, status="failed")
            except Exception:
                log.warning("run %s: could not record the failure in the store", run_id)
            raise
        finish_run(settings, run_id, {k: v for k, v in out.items() if k != "run_id"})
    return out


def run_nightly(
    settings: Settings,
    run_id: str | None = None,
    *,
    stages: dict[str, Stage] | None = None,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The whole nightly run, stage by stage, recorded in ``runs``.

    ``stages`` replaces stage functions by name (the Prefect flow passes its
    tasks here, so the sequence is written once); ``on_stage`` sees each
    stage's summary as it completes.
    """
    run_id = run_id or new_run_id()
    with runlock.hold(settings.workdir, run_id):
        return _run_locked(settings, run_id, stages, on_stage)


def _run_locked(settings: Settings, run_id: str, stages: dict[str, Stage] | None,
                on_stage: Callable[[str, dict[str, Any]], None] | None) -> dict[str, Any]:
    fns = {**stage_fns.STAGES, **(stages or {})}
    ctx, meta = start_run(settings, run_id)
    summary: dict[str, Any] = dict(meta)
    try:
        for name in stage_fns.STAGES:
            summary[name] = fns[name](ctx)
            if on_stage:
                on_stage(name, summary[name])
        summary["instances"] = stage_fns.instance_counts(settings)
    except BaseException as e:
        summary["error"] = type(e).__name__  # the type only: a message may name a file
        code = getattr(e, "code", None)
        if isinstance(code, str):
            summary["error_code"] = code
        _write_summary_page(settings, summary, "failed")
        try:
            finish_run(settings, run_id, summary, status="failed")
        except Exception:  # e.g. the store is held; the original error matters more
            log.warning("run %s: could not record the failure in the store", run_id)
        raise
    summary["run_page"] = str(_write_summary_page(settings, summary, "finished"))
    return finish_run(settings, run_id, summary)


def _write_summary_page(settings: Settings, summary: dict[str, Any], status: str):
    from osteo_batch.run.summary import write_run_page

    try:
        return write_run_page(settings.workdir, summary, status=status)
    except Exception:  # the run's own outcome matters more than its summary page
        log.warning("run %s: could not write the run summary page", summary.get("run_id"))
        return None
