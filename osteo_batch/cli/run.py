"""The commands that run the pipeline: ``sweep``, ``run``, ``serve``, ``deploy-shards``, and what they print.

A run holds the work folder's run lock from before Prefect starts, so a second
run refused by the lock prints one line and starts no Prefect server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osteo_batch.cli.common import CliError, need_source, say, source_args


def cmd_sweep(args) -> int:
    from osteo_batch.run.nightly import index_archive
    from osteo_batch.settings import load_settings

    s = load_settings(args.config, workdir=args.workdir, workers=args.workers, **source_args(args))
    need_source(s)
    out = index_archive(s)["sweep"]
    what = "instances" if s.pacs is not None else "files"
    print(f"swept {out['files']} {what} ({out['headers_read']} headers read) in {out['seconds']} s")
    _pacs_lines(out)
    for reason, n in out["by_reason"].items():
        print(f"  {n:8d}  {reason}")
    _warn_unreadable_folders(out)
    print(f"store: {s.store_path}")
    return 0


def cmd_run(args) -> int:
    from osteo_batch.settings import load_settings

    s = load_settings(
        args.config, workdir=args.workdir, model_dir=args.model, dxa_csv=args.dxa,
        workers=args.workers, batch_size=args.batch_size, threads=args.threads, device=args.device, shards=args.shards,
        compile=args.compile or None, send_results=args.send_results or None,
        allow_phantom_results=args.allow_phantom_results or None, fhir_url=args.fhir, **source_args(args),
    )
    need_source(s)
    from osteo_batch.models.model import check_model_dir

    check_model_dir(s.resolved_model_dir())  # no model, or a damaged one: one line, before anything starts
    s.check_device()
    if s.send_results:  # a phantom model's results never reach a PACS: refused before Prefect starts
        from osteo_batch.run.context import RunContext
        from osteo_batch.run.results import check_results_allowed

        check_results_allowed(RunContext.for_model(s, "preflight"))
    if s.dxa_csv:
        from osteo_batch.followup.dxa import parse_dxa_csv

        parse_dxa_csv(s.dxa_csv)  # a malformed table is a one-line error before the flow starts
    if args.ray and args.shard_deployment:
        raise CliError("use --ray or --shard-deployment, not both", code="conflicting_flags")
    print_run(run_flow(s, use_prefect=not args.no_prefect, ray=args.ray, shard_deployment=args.shard_deployment))
    return 0


def run_flow(settings, *, use_prefect: bool, ray: str | None = None, shard_deployment: str | None = None) -> dict:
    """One nightly run, holding the work folder's run lock from before Prefect starts.

    Why here: a second run refused by the lock must not start a Prefect server
    (or print a flow's traceback) first; the flow takes the same lock again in
    this process. The temporary Prefect server is tied to this process's life
    (:func:`osteo_batch.flows.env.tie_ephemeral_server`), so a killed run leaves none behind.
    """
    from osteo_batch.run import lock as runlock
    from osteo_batch.run.nightly import new_run_id

    run_id = new_run_id()
    with runlock.hold(settings.workdir, run_id):
        return _run_flow_locked(settings, run_id, use_prefect=use_prefect, ray=ray, shard_deployment=shard_deployment)


def _run_flow_locked(settings, run_id: str, *, use_prefect: bool, ray: str | None,
                     shard_deployment: str | None) -> dict[str, Any]:
    from osteo_batch.progress import bars

    if not use_prefect:
        if ray is not None or shard_deployment:
            raise CliError("--ray and --shard-deployment need Prefect (drop --no-prefect)", code="conflicting_flags")
        from osteo_batch.run.nightly import run_nightly

        with bars():
            return run_nightly(settings, run_id, on_stage=lambda n, o: say(f"[{n}] done in {o.get('seconds')} s"))
    from osteo_batch.flows import env

    env.configure(settings.workdir)
    env.tie_ephemeral_server()
    from osteo_batch.flows import nightly

    flow = nightly.nightly_screening if ray is None else nightly.with_ray(None if ray == "local" else ray)
    with bars():
        return flow(settings=settings, run_id=run_id, distributed=ray is not None, shard_deployment=shard_deployment)


def _pacs_lines(sweep: dict) -> None:
    """What a PACS sweep asked for and where it stopped: dates and counts only."""
    p = sweep.get("pacs")
    if not p:
        return
    print(f"PACS {p['source']}: study dates {p['date_from']} to {p['date_to']}, {p['windows_done']}/{p['windows']} "
          f"windows, {p['studies_listed']} studies listed, {p['studies_fetched']} asked for metadata; "
          f"complete through {p['complete_through']}")
    if p.get("stopped"):
        print(f"warning: PACS queries stopped early: {p['stopped']}; the next night resumes from "
              f"{p['complete_through']}")


def _results_lines(res: dict) -> None:
    """What went back: SRs stored on the PACS, the FHIR Bundle."""
    if res.get("sr"):
        sr = res["sr"]
        print(f"results back: {sr['sent']} SR(s) stored on {sr['destination']} ({sr['already']} already there, "
              f"{sr['failed']} failed)")
    if res.get("fhir_bundle"):
        print(f"FHIR bundle: {Path(res['fhir_bundle']).resolve()} ({res.get('risk_assessments', 0)} RiskAssessments)"
              + (f", posted to {res['fhir_posted']}" if res.get("fhir_posted") else ""))
    if res.get("fhir_error"):
        print(f"warning: the FHIR bundle was not posted ({res['fhir_error']}); it is kept beside the run's files")


def _warn_unreadable_folders(sweep: dict) -> None:
    """Folders the sweep could not list: a warning line, counts and reasons only."""
    from osteo_batch.reasons import unreadable_folders_line
    from osteo_batch.run.summary import unreadable_folders

    line = unreadable_folders_line(unreadable_folders(sweep))
    if line:
        print(f"warning: {line}")


def print_run(summary: dict) -> None:
    """What a nightly run did, as the operator reads it: counts, reasons, and where its pages are."""
    inst, sc, wl = summary["instances"], summary["score"], summary["worklist"]
    print(f"run {summary['run_id']}: {inst['files']} files swept, {sc['scored']} scored tonight, "
          f"{summary['explain']['explained']} heat maps, {wl['listed']} patients on the worklist")
    for reason, n in inst["by_reason"].items():
        print(f"  {n:8d}  {reason}")
    _pacs_lines(summary.get("sweep", {}))
    _results_lines(summary.get("results") or {})
    _warn_unreadable_folders(summary.get("sweep", {}))
    aside = wl.get("referral_files_set_aside") or {}
    if aside:
        print(f"note: {sum(aside.values())} queued referral file(s) could not be read and were set aside in "
              "referral-queue/quarantine/ (" + ", ".join(f"{n} {k}" for k, n in sorted(aside.items())) + ")")
    if wl.get("excluded"):
        print("left out at or above the threshold: " + ", ".join(f"{n} {k}" for k, n in wl["excluded"].items()))
    bad_dates = inst["by_reason"].get("ineligible:study_date", 0)
    if bad_dates:
        sw = summary.get("sweep", {})
        detail = ", ".join(f"{n} {k}" for k, n in (sw.get("study_dates") or {}).items() if n)
        print(f"untrusted study dates: {bad_dates} left out" + (f" ({detail})" if detail else "")
              + f", judged against {sw.get('run_date')} ({sw.get('timezone')})")
        if sw.get("study_dates_csv"):
            print(f"study dates for the PACS administrator: {Path(sw['study_dates_csv']).resolve()}")
    if summary.get("run_page"):
        print(f"run summary: {Path(summary['run_page']).resolve()}")
    if wl.get("csv"):
        print(f"csv: {Path(wl['csv']).resolve()}  ({wl.get('site_pages', 0)} site pages beside it)")
    print(f"worklist: {Path(wl['worklist']).resolve()}")


def cmd_serve(args) -> int:
    from osteo_batch.flows import env

    env.configure(args.workdir)
    from osteo_batch.flows.nightly import serve

    say(f"[serve] deployment 'nightly_screening/nightly' on cron {args.cron!r}; needs a running `prefect server start` "
        "(the ephemeral server does not fire schedules). Ctrl-C to stop.")
    if not (args.archive or args.pacs or args.config):
        raise CliError("an archive is required: give --archive DIR or --pacs URL (or [archive] path or [pacs] url in --config)",
                       code="no_archive")
    if args.pacs:
        from osteo_batch.pacs.config import parse_pacs_url

        parse_pacs_url(args.pacs)  # a bad URL: one line now, not at 02:00
    serve(str(args.archive) if args.archive else None, str(args.workdir), cron=args.cron,
          model_dir=str(args.model) if args.model else None, dxa_csv=str(args.dxa) if args.dxa else None,
          config=str(args.config) if args.config else None, pacs=args.pacs,
          since=args.since.isoformat() if args.since else None)
    return 0


def cmd_deploy_shards(args) -> int:
    from osteo_batch.flows import env

    env.configure(None)
    from osteo_batch.flows.shard import deploy

    dep_id = deploy(args.pool, name=args.name)
    print(f"deployment score_shard/{args.name} on work pool {args.pool!r} ({dep_id}); start "
          f"`prefect worker start --pool {args.pool} --limit 1` on each GPU machine, then "
          f"`osteo-batch run ... --shard-deployment score_shard/{args.name}`")
    return 0
