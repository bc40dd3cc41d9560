"""The commands after the night: ``worklist`` (again), ``refer``, ``outcomes``, ``report``.

Each reads the store (read-only where it only reads) and prints what it found;
none loads a model network, so none imports torch.
"""

from __future__ import annotations

from pathlib import Path

from osteo_batch.cli.common import CliError, say


def cmd_worklist(args) -> int:
    from osteo_batch.run.rerender import rerender_worklist
    from osteo_batch.settings import load_settings

    s = load_settings(args.config, workdir=args.workdir, threshold=args.threshold)
    out = rerender_worklist(s, threshold=args.threshold, model_dir=args.model, wait_s=args.wait)
    res = out.result
    print(f"{res.listed} patients at or above {out.threshold:.4f}")
    print(f"worklist: {res.path.resolve()}")
    print(f"csv: {res.csv.resolve()}")
    for site, path in res.site_pages.items():
        print(f"  {site}: {path.resolve()}")
    return 0


def cmd_refer(args) -> int:
    from osteo_batch.followup.referrals import new_referral, refer
    from osteo_batch.settings import load_settings

    s = load_settings(None, workdir=args.workdir)
    ev = new_referral(args.patient_id, args.status, args.note, args.by)
    out = refer(s.store_path, ev, wait_s=args.wait,
                on_wait=lambda: say(f"[refer] a nightly run holds the store; waiting up to {args.wait:g} s ..."))
    if out.set_aside and out.set_aside.set_aside:
        where = ", ".join(f"{Path(d).relative_to(s.workdir)}/" if Path(d).is_relative_to(s.workdir) else f"{d}/"
                          for d in out.set_aside.quarantine_dirs) or "their folder (they could not be moved)"
        print(f"note: {out.set_aside.set_aside} queued file(s) could not be read and were set aside in {where} "
              f"({', '.join(f'{n} {k}' for k, n in sorted(out.set_aside.quarantined.items()))}); a person should "
              "look at them")
    if out.how == "recorded":
        print(f"recorded: {ev.status} for {ev.patient_id} by {ev.by_user} at {ev.acted_at}")
        if out.flushed:
            print(f"also recorded {out.flushed} earlier change(s) that were queued")
        if out.known_patient is False:
            print(f"note: no image of patient {ev.patient_id} is in the store; check the ID")
        return 0
    if out.problem is None:
        print(f"queued: the store is held by a running nightly run. Your change ({ev.status} for {ev.patient_id}) is "
              f"saved in {out.queue_file.parent.name}/ and will be recorded when that run writes tonight's "
              "worklist, or by the next `osteo-batch refer`. Nothing is lost.")
        return 0
    # The work folder could not take it (full, read-only, refused): say where the action is, then fail (exit 2).
    import json
    import shlex
    from dataclasses import asdict

    change = f"your change ({ev.status} for {ev.patient_id})"
    if out.how == "queued":
        print(f"queued: the store could not be written; {change} is saved in {out.queue_file.parent.name}/ and will "
              "be recorded by the next nightly run or `osteo-batch refer` that can write the store. Nothing is lost.")
        then = f"Your change is queued in {out.queue_file.parent.name}/ and recorded once the store can be written."
    elif out.how == "fallback":
        print(f"saved outside the work folder: {change} is in {out.queue_file.parent}/ and the next "
              f"`osteo-batch refer` you run with --workdir {s.workdir} records it. Do not enter it again.")
        then = f"Your change is saved in {out.queue_file.parent}/; the next `osteo-batch refer` with this --workdir records it."
    else:
        cmd = ["osteo-batch", "refer", "--workdir", str(s.workdir), ev.patient_id, "--status", ev.status,
               *(["--note", ev.note] if ev.note else []), "--by", ev.by_user]
        print(f"NOT SAVED: {change} could not be written anywhere. Enter it again once the problem is fixed:")
        print(f"  {' '.join(shlex.quote(c) for c in cmd)}")
        then = "Your change was saved nowhere: it is printed above with the command that enters it again."
    print(json.dumps({"action": asdict(ev), "saved_in": str(out.queue_file) if out.queue_file else None}))
    raise CliError(out.problem.line(then), code="referral_not_recorded")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _load_dxa(settings, name: str) -> dict:
    """New DXA results into the store before a follow-up report (a sweep-only run context: no model)."""
    from osteo_batch.run.context import RunContext
    from osteo_batch.run.stages import load_dxa_stage

    return load_dxa_stage(RunContext.for_index(settings, name))


def cmd_outcomes(args) -> int:
    import json

    from osteo_batch.followup import outcomes
    from osteo_batch.settings import load_settings
    from osteo_batch.store import open_store

    s = load_settings(None, workdir=args.workdir, dxa_csv=args.dxa)
    if args.dxa:
        out = _load_dxa(s, "outcomes")
        say(f"[outcomes] DXA table: {out['loaded']} rows loaded, {sum(out['rejected'].values())} rejected")
    with open_store(s, read_only=True) as st:
        res = outcomes.compute(st, follow_up_days=args.follow_up_days)
    if args.json:
        print(json.dumps(res.to_json(), indent=1))
        return 0
    for title, group in (("overall", [res.overall]), ("by month of flag", res.by_month), ("by site", res.by_site),
                         ("by run", res.by_run)):
        print(f"{title}:")
        print(f"  {'':28}{'flagged':>8}{'tested':>8}{'uptake':>8}{'yield':>8}{'T<=-2.5':>8}{'days':>6}")
        for o in group:
            days = "—" if o.median_days_to_dxa is None else f"{o.median_days_to_dxa:.0f}"
            print(f"  {o.key[:28]:28}{o.flagged:>8}{o.tested:>8}{_pct(o.uptake):>8}{_pct(o.yield_low_bone_mass):>8}"
                  f"{_pct(o.yield_osteoporosis):>8}{days:>6}")
    return 0


def cmd_report(args) -> int:
    from osteo_batch.followup.program import write_program_report
    from osteo_batch.settings import load_settings
    from osteo_batch.store import open_store

    s = load_settings(None, workdir=args.workdir, dxa_csv=args.dxa)
    if args.dxa:
        _load_dxa(s, "report")
    with open_store(s, read_only=True) as st:
        path, res = write_program_report(st, s.workdir, month=args.month, follow_up_days=args.follow_up_days)
    o = res.overall
    print(f"{o.flagged} patients flagged so far, {o.tested} tested; report: {path.resolve()}")
    return 0
