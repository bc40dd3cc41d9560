"""``osteo-batch``: the command line.

Errors a user can fix (a wrong flag, a missing path, a locked store, a broken
model folder) print one line starting ``osteo-batch: error:`` and exit with
status 2, without a traceback; ``--debug`` shows one. Imports are lazy so that
``--help`` and ``sweep`` start without loading torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_WORKDIR = "osteo-work"
EPILOG = "Screening aid, not a diagnosis: DXA confirms osteoporosis, and a low score never rules it out."


class CliError(Exception):
    """A user-facing error: printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _existing(kind: str):
    """argparse type: a path that must exist as a 'directory' or a 'file'."""
    test = Path.is_dir if kind == "directory" else Path.is_file

    def check(value: str) -> Path:
        if not test(Path(value)):
            raise argparse.ArgumentTypeError(f"{value}: no such {kind}")
        return Path(value)

    return check


def _probability(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value}: not a number") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"{value}: must be between 0 and 1")
    return x


def _month(value: str) -> str:
    """argparse type: a calendar month as YYYY-MM."""
    import datetime as dt

    try:
        dt.date.fromisoformat(f"{value}-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value}: not a month; use YYYY-MM, like 2026-11") from None
    if len(value) != 7:
        raise argparse.ArgumentTypeError(f"{value}: not a month; use YYYY-MM, like 2026-11")
    return value


def _say(msg: str) -> None:
    from osteo_batch.text import clean

    print(clean(msg), file=sys.stderr, flush=True)


class _CleanText:
    """A text stream that drops terminal control characters from everything written to it.

    Why on the stream: whatever a command prints (a site name, a patient ID, an
    outcomes key) may come from a DICOM header, and one InstitutionName holding
    ``ESC [2J`` would clear the operator's screen. Values are cleaned where they
    are made too (:mod:`osteo_batch.text`); this catches every line the CLI
    prints to stdout, whichever code wrote it. Newlines and tabs pass.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, s: str) -> int:
        from osteo_batch.text import clean

        return self._stream.write(clean(s))

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):  # flush, fileno, isatty, buffer, encoding ...
        return getattr(self._stream, name)


# ---------------------------------------------------------------- commands


def cmd_sweep(args) -> int:
    from osteo_batch import pipeline

    s = pipeline.load_settings(args.config, workdir=args.workdir, archive=args.archive, workers=args.workers)
    out = pipeline.index_archive(s)["sweep"]
    print(f"swept {out['files']} files ({out['headers_read']} headers read) in {out['seconds']} s")
    for reason, n in out["by_reason"].items():
        print(f"  {n:8d}  {reason}")
    _warn_unreadable_folders(out)
    print(f"store: {s.store_path}")
    return 0


def _run_flow(settings, *, use_prefect: bool, ray: str | None = None, shard_deployment: str | None = None) -> dict:
    """One nightly run, holding the work folder's run lock from before Prefect starts.

    Why here: a second run refused by the lock must not start a Prefect server
    (or print a flow's traceback) first; the flow takes the same lock again in
    this process. The temporary Prefect server is tied to this process's life
    (:func:`flows.env.tie_ephemeral_server`), so a killed run leaves none behind.
    """
    from osteo_batch import pipeline
    from osteo_batch.run import lock as runlock

    run_id = pipeline.new_run_id()
    with runlock.hold(settings.workdir, run_id):
        return _run_flow_locked(settings, run_id, use_prefect=use_prefect, ray=ray, shard_deployment=shard_deployment)


def _run_flow_locked(settings, run_id: str, *, use_prefect: bool, ray: str | None, shard_deployment: str | None) -> dict:
    from osteo_batch import pipeline
    from osteo_batch.progress import bars

    if not use_prefect:
        if ray is not None or shard_deployment:
            raise CliError("--ray and --shard-deployment need Prefect (drop --no-prefect)")
        with bars():
            return pipeline.run_nightly(settings, run_id,
                                        on_stage=lambda n, o: _say(f"[{n}] done in {o.get('seconds')} s"))
    from osteo_batch.flows import env

    env.configure(settings.workdir)
    env.tie_ephemeral_server()
    from osteo_batch.flows import nightly

    flow = nightly.nightly_screening if ray is None else nightly.with_ray(None if ray == "local" else ray)
    with bars():
        return flow(
            archive=str(settings.archive), workdir=str(settings.workdir),
            model_dir=str(settings.model_dir) if settings.model_dir else None,
            dxa_csv=str(settings.dxa_csv) if settings.dxa_csv else None,
            config=str(settings.config_file) if settings.config_file else None,
            run_id=run_id, workers=settings.workers, batch_size=settings.batch_size, device=settings.device,
            shards=settings.shards, distributed=ray is not None, shard_deployment=shard_deployment,
            compile=settings.compile or None,
        )


def _warn_unreadable_folders(sweep: dict) -> None:
    """Folders the sweep could not list: a warning line, counts and reasons only."""
    from osteo_batch.reasons import unreadable_folders_line
    from osteo_batch.run.summary import unreadable_folders

    line = unreadable_folders_line(unreadable_folders(sweep))
    if line:
        print(f"warning: {line}")


def _print_run(summary: dict) -> None:
    inst, sc, wl = summary["instances"], summary["score"], summary["worklist"]
    print(f"run {summary['run_id']}: {inst['files']} files swept, {sc['scored']} scored tonight, "
          f"{summary['explain']['explained']} heat maps, {wl['listed']} patients on the worklist")
    for reason, n in inst["by_reason"].items():
        print(f"  {n:8d}  {reason}")
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


def cmd_run(args) -> int:
    from osteo_batch import pipeline

    s = pipeline.load_settings(
        args.config, workdir=args.workdir, archive=args.archive, model_dir=args.model, dxa_csv=args.dxa,
        workers=args.workers, batch_size=args.batch_size, device=args.device, shards=args.shards,
        compile=args.compile or None,
    )
    from osteo_batch.models.model import check_model_dir

    check_model_dir(s.resolved_model_dir())  # no model, or a damaged one: one line, before anything starts
    s.check_device()
    if s.dxa_csv:
        from osteo_batch.followup.dxa import parse_dxa_csv

        parse_dxa_csv(s.dxa_csv)  # a malformed table is a one-line error before the flow starts
    if args.ray and args.shard_deployment:
        raise CliError("use --ray or --shard-deployment, not both")
    _print_run(_run_flow(s, use_prefect=not args.no_prefect, ray=args.ray, shard_deployment=args.shard_deployment))
    return 0


def cmd_worklist(args) -> int:
    from osteo_batch import pipeline
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.store import Store
    from osteo_batch.worklist import write_worklist

    s = pipeline.load_settings(args.config, workdir=args.workdir, threshold=args.threshold)
    with Store(s.store_path, read_only=True, wait_s=args.wait) as st:
        runs = st.rows("latest_run")
        if not runs:
            raise CliError(f"no nightly run in {s.store_path}; run `osteo-batch run` first")
        run = runs[0]
        model_dir = Path(args.model) if args.model else _model_dir_of(s, run)
        model = load_model_dir(model_dir)
        if model.model_id != run["model_id"]:
            raise CliError(f"model {model_dir} is {model.model_id}, but the latest run used {run['model_id']}; pass --model")
        threshold = args.threshold if args.threshold is not None else run["threshold"]
        suffix = "" if args.threshold is None else f"-threshold-{threshold:.4f}"
        res = write_worklist(
            st, workdir=s.workdir, run={"run_id": run["run_id"]}, model_id=model.model_id, threshold=threshold,
            bands=model.config.bands, model_card=model.card, rules=s.exclusions(), sites=s.sites,
            name_suffix=suffix, record=False,
        )
    print(f"{res.listed} patients at or above {threshold:.4f}")
    print(f"worklist: {res.path.resolve()}")
    print(f"csv: {res.csv.resolve()}")
    for site, path in res.site_pages.items():
        print(f"  {site}: {path.resolve()}")
    return 0


def cmd_refer(args) -> int:
    from osteo_batch import pipeline
    from osteo_batch.followup.referrals import new_referral, refer

    s = pipeline.load_settings(None, workdir=args.workdir)
    ev = new_referral(args.patient_id, args.status, args.note, args.by)
    out = refer(s.store_path, ev, wait_s=args.wait,
                on_wait=lambda: _say(f"[refer] a nightly run holds the store; waiting up to {args.wait:g} s ..."))
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
    raise CliError(out.problem.line(then))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def cmd_outcomes(args) -> int:
    import json

    from osteo_batch import pipeline
    from osteo_batch.followup import outcomes

    s = pipeline.load_settings(None, workdir=args.workdir, dxa_csv=args.dxa)
    if args.dxa:
        out = pipeline.load_dxa_stage(s, "outcomes")
        _say(f"[outcomes] DXA table: {out['loaded']} rows loaded, {sum(out['rejected'].values())} rejected")
    with pipeline.open_store(s, read_only=True) as st:
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
    from osteo_batch import pipeline
    from osteo_batch.followup.program import write_program_report

    s = pipeline.load_settings(None, workdir=args.workdir, dxa_csv=args.dxa)
    if args.dxa:
        pipeline.load_dxa_stage(s, "report")
    with pipeline.open_store(s, read_only=True) as st:
        path, res = write_program_report(st, s.workdir, month=args.month, follow_up_days=args.follow_up_days)
    o = res.overall
    print(f"{o.flagged} patients flagged so far, {o.tested} tested; report: {path.resolve()}")
    return 0


def _model_dir_of(settings, run) -> Path:
    import json

    summary = json.loads(run["summary"]) if run.get("summary") else {}
    d = summary.get("model_dir")
    return Path(d) if d else settings.resolved_model_dir()


def cmd_train(args) -> int:
    from osteo_batch import pipeline
    from osteo_batch.models.train import TrainConfig, train

    s = pipeline.load_settings(args.config, workdir=args.workdir, archive=args.archive, dxa_csv=args.dxa,
                               workers=args.workers)
    pipeline.index_archive(s, load_dxa=True)
    cfg = TrainConfig(backbone=args.backbone, weights=str(args.weights) if args.weights else None, epochs=args.epochs,
                      seed=args.seed, workers=args.workers, strategy=args.strategy,
                      masks=str(args.masks) if args.masks else None,
                      marker_masks=str(args.marker_masks) if args.marker_masks else None,
                      calibration=args.calibration,
                      label_sites=tuple(x.strip() for x in args.label_sites.split(",") if x.strip()))
    t0 = time.monotonic()
    with pipeline.open_store(s) as st:
        res = train(st, args.out, cfg, truth_csv=args.truth,
                    progress=lambda e, n, loss: _say(f"[train] epoch {e}/{n} loss {loss:.3f} ({time.monotonic() - t0:.0f} s)"))
    _print_model(res)
    return 0


def cmd_demo(args) -> int:
    from osteo_batch import pipeline
    from osteo_batch.synth import cohort as synth

    workdir = Path(args.workdir)
    t0 = time.monotonic()
    spec = synth.CohortSpec(seed=args.seed)
    if synth.existing_cohort(workdir, spec):
        _say(f"[demo] synthetic archive already at {workdir / 'archive'}; reusing it")
    else:
        _say("[demo] writing the synthetic archive (phantoms, not people) ...")
        c = synth.write_cohort(workdir, spec)
        _say(f"[demo] {c.n_files} files, {c.n_images} images; known ceiling AUC {c.ceiling_auc:.3f} ({time.monotonic() - t0:.0f} s)")
    from osteo_batch.synth.cohort import demo

    model_dir = workdir / "models" / "demo"
    if (model_dir / "config.json").is_file():
        _say(f"[demo] model already trained at {model_dir}; reusing it")
    else:
        t1 = time.monotonic()
        _say("[demo] writing the site's historical radiographs paired with DXA (phantoms) ...")
        h = demo.ensure_history(workdir / "history")
        _say(f"[demo] {h.n_images} historical images ({time.monotonic() - t1:.0f} s)")
        _say("[demo] fine-tuning from the phantom foundation with LoRA on the CPU ...")
        t1 = time.monotonic()
        res = demo.train_demo_model(workdir / "history", model_dir, demo.DemoTraining(epochs=args.epochs,
                                                                                      workers=args.workers),
                                    progress=lambda e, n, loss: _say(f"[train] epoch {e}/{n} loss {loss:.3f} "
                                                                     f"({time.monotonic() - t1:.0f} s)"))
        _print_model(res)
    _say("[demo] running the nightly flow ...")
    s = pipeline.load_settings(None, workdir=workdir, archive=workdir / "archive", model_dir=model_dir,
                               dxa_csv=workdir / "dxa.csv", workers=args.workers)
    summary = _run_flow(s, use_prefect=not args.no_prefect)
    with pipeline.open_store(s, read_only=True) as st:
        t = demo.tonight(st, summary["model_id"], workdir / "truth.csv")
    if t.get("women", 0) >= 3:
        print(f"tonight: {t['women']} women scored; score 10th-90th percentile {t['score_p10']:.3f}-{t['score_p90']:.3f} "
              f"(median {t['score_p50']:.3f}); Spearman with low latent density {t['spearman_with_low_density']:.3f}")
    _print_run(summary)
    _say(f"[demo] finished in {time.monotonic() - t0:.0f} s")
    return 0


def _print_model(res) -> None:
    """What a fine-tune produced, on the split its figures come from."""
    c = res.card
    v, bone, ceiling = c["validation"], c.get("bone"), c["ceiling"]["auc_validation"]
    split = "held-out test" if c["data"].get("reported_on") == "test" else "validation"
    print(f"model {res.model_id} -> {Path(res.model_dir).resolve()}")
    if c.get("foundation"):
        f = c["foundation"]
        print(f"from foundation {f['name']} (sha256 {f['sha256'][:12]}...)"
              + ("; phantoms only, not for patients" if not c.get("for_patients") else ""))
    if bone:
        line = (f"looks at bone: IoU_bone {bone['iou_bone']:.3f} (random map {bone['iou_bone_random']:.3f}); "
                f"occluding bone drops AUC by {bone['delta_bone']:.3f} (equal non-bone area: {bone['delta_nonbone']:.3f})")
        if bone.get("marker_heat_share") is not None:
            line += (f"; heat on the side marker {bone['marker_heat_share']:.1%} "
                     f"(it covers {bone['marker_area_share']:.1%} of the image)")
        print(line)
    ratio = f" = {v['auc'] / ceiling:.2f} of the known ceiling {ceiling:.3f}" if ceiling else ""
    print(f"{split} AUC {v['auc']:.3f} (95% CI {v['auc_ci95'][0]:.3f}-{v['auc_ci95'][1]:.3f}, "
          f"{c['data']['val_patients']} women){ratio}; ECE {c['calibration']['ece']:.3f}; "
          f"threshold {v['threshold']:.3f}: sensitivity {v['sensitivity']:.2f}, specificity {v['specificity']:.2f}, "
          f"PPV {v['ppv']:.2f}")
    for b in c.get("bands") or []:
        print(f"  {b['band']:>15}: {b['text']}")


def cmd_calibrate(args) -> int:
    import datetime as dt

    import numpy as np

    from osteo_batch import pipeline
    from osteo_batch.models.calibrate import recalibrate
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.models.train import decode_cached, predict
    from osteo_batch.scoring.tensors import Item
    from osteo_batch.models.labels import min_t, who_class

    s = pipeline.load_settings(args.config, workdir=args.workdir, archive=args.archive, dxa_csv=args.dxa,
                               workers=args.workers)
    model = load_model_dir(args.model)
    pipeline.index_archive(s, load_dxa=True)
    with pipeline.open_store(s, read_only=True) as st:
        pairs = [{**p, "t_min": min_t(p)} for p in st.rows("training_pairs", {"window_days": args.window_days})]
    pairs = [p for p in pairs if p["t_min"] is not None]
    if len(pairs) < 20:
        raise CliError(f"only {len(pairs)} images pair with a DXA within {args.window_days} days; 20 or more are needed")
    items = [Item(p["path"], p["sop_instance_uid"], p["patient_id"]) for p in pairs]
    x, ok = decode_cached(items, model.config.img_size, s.workers, str(s.workdir / "cache"))
    raw = predict(model.module, x, model.config)[:, model.config.labels.index(model.config.score_label)]
    y = np.array([who_class(pairs[i]["t_min"]) == 2 for i in ok], dtype=int)
    patients = np.array([pairs[i]["patient_id"] for i in ok])
    out = Path(args.out) if args.out else Path(f"{Path(args.model).resolve()}-{args.method}-{dt.date.today():%Y%m%d}")
    try:
        e = recalibrate(Path(args.model), out, raw, y, patients, method=args.method)
    except ValueError as err:
        raise CliError(str(err)) from None
    print(f"model {e['model_id']} -> {out.resolve()} (recalibrated from {e['from_model_id']})")
    print(f"{args.method} on {e['pairs'] - e['judged_on']} pairs, judged on {e['judged_on']}: "
          f"ECE {e['ece_before']:.3f} -> {e['ece_after']:.3f}, AUC {e['auc_before']:.3f} -> {e['auc_after']:.3f}; "
          f"threshold {e['threshold']:.4f}: sensitivity {e['sensitivity']:.2f}, specificity {e['specificity']:.2f}")
    return 0


def cmd_study(args) -> int:
    import json

    from osteo_batch import study
    from osteo_batch.synth import cohort as synth

    out = Path(args.out)
    if args.demo:
        cohort_dir = out / "cohort"
        if not synth.existing_cohort(cohort_dir, study.demo_spec()):
            _say("[study] writing the synthetic cohort (a few thousand small phantoms) ...")
            synth.write_cohort(cohort_dir, study.demo_spec())
        archive, dxa = cohort_dir / "archive", cohort_dir / "dxa.csv"
        truth, masks = cohort_dir / "truth.csv", cohort_dir / "bone_masks"
        grid = study.demo_grid(epochs=args.epochs or 6)
    else:
        if not (args.archive and args.dxa and args.grid):
            raise CliError("study needs --archive, --dxa and --grid (or --demo)")
        archive, dxa, truth, masks = args.archive, args.dxa, args.truth, args.masks
        grid = study.load_grid(args.grid)
    from osteo_batch.flows import env

    env.configure(out)
    from osteo_batch.flows.study import model_study

    report = model_study(archive=str(archive), dxa_csv=str(dxa), out=str(out), grid=grid,
                         truth=str(truth) if truth else None, masks=str(masks) if masks else None,
                         workers=args.workers)
    data = json.loads(Path(report).read_text())
    print(f"{'backbone':20}{'strategy':>9}{'init':>11}{'AUC':>8}{'95% CI':>16}{'sens':>7}{'spec':>7}{'Δbone':>8}{'IoU_bone':>9}")
    for r in data["rows"]:
        ci = f"{r['auc_ci'][0]:.3f}-{r['auc_ci'][1]:.3f}"
        fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
        print(f"{r['backbone']:20}{r['strategy']:>9}{r.get('init', ''):>11}{r['auc']:8.3f}{ci:>16}{r['sensitivity']:7.2f}{r['specificity']:7.2f}"
              f"{fmt(r['delta_bone']):>8}{fmt(r['iou_bone']):>9}")
    if data["ceiling_auc"] is not None:
        print(f"known ceiling AUC {data['ceiling_auc']:.3f}; random-map IoU_bone {data['iou_bone_random']:.3f}; "
              f"non-bone occlusion Δ {data['delta_nonbone']:.3f}")
    print(f"report: {Path(report).resolve()} (and report.html)")
    return 0


def cmd_serve(args) -> int:
    from osteo_batch.flows import env

    env.configure(args.workdir)
    from osteo_batch.flows.nightly import serve

    _say(f"[serve] deployment 'nightly_screening/nightly' on cron {args.cron!r}; needs a running `prefect server start` "
         "(the ephemeral server does not fire schedules). Ctrl-C to stop.")
    serve(str(args.archive), str(args.workdir), cron=args.cron, model_dir=str(args.model) if args.model else None,
          dxa_csv=str(args.dxa) if args.dxa else None, config=str(args.config) if args.config else None)
    return 0


def cmd_deploy_shards(args) -> int:
    from osteo_batch.flows import env

    env.configure(None)
    from osteo_batch.flows.shard import score_shard_flow

    repo = Path(__file__).resolve().parents[1]
    dep_id = score_shard_flow.from_source(source=str(repo), entrypoint="flows/shard.py:score_shard_flow").deploy(
        name=args.name, work_pool_name=args.pool, print_next_steps=False)
    print(f"deployment score_shard/{args.name} on work pool {args.pool!r} ({dep_id}); start "
          f"`prefect worker start --pool {args.pool} --limit 1` on each GPU machine, then "
          f"`osteo-batch run ... --shard-deployment score_shard/{args.name}`")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="osteo-batch",
        description="Nightly osteoporosis screening of archived chest radiographs: sweep, score, explain, refer.",
        epilog=EPILOG,
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(sp, *, archive: bool = False, archive_required: bool = False):
        sp.add_argument("--workdir", type=Path, default=Path(os.environ.get("OSTEO_BATCH_WORKDIR", DEFAULT_WORKDIR)),
                        help=f"folder for the store, scores, heat maps and worklists (default: {DEFAULT_WORKDIR})")
        if archive:
            sp.add_argument("--archive", type=_existing("directory"), required=archive_required,
                            help="the DICOM archive to sweep")

    d = sub.add_parser("demo", help="write a synthetic archive, train the demo model, run the nightly flow",
                       description="End to end on synthetic phantoms: archive, DXA table, model, nightly flow, worklist.",
                       epilog=EPILOG)
    d.add_argument("--workdir", type=Path, default=Path("demo-run"), help="where to put everything (default: demo-run)")
    d.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (default: 8)")
    d.add_argument("--seed", type=int, default=synth_seed(), help="cohort seed (default: fixed)")
    d.add_argument("--workers", type=int, default=2, help="decode worker processes (default: 2)")
    d.add_argument("--no-prefect", action="store_true", help="run the stages in-process without Prefect")
    d.set_defaults(fn=cmd_demo)

    s = sub.add_parser("sweep", help="index the archive only (eligible, unscored files are 'pending')",
                       description="Walk the archive, read headers, record every file's status in the store.")
    common(s, archive=True, archive_required=True)
    s.add_argument("--config", type=_existing("file"), help="TOML with [run] settings and/or [[rule]] eligibility rules")
    s.add_argument("--workers", type=int, default=None, help="header-reading processes (default: 2)")
    s.set_defaults(fn=cmd_sweep)

    r = sub.add_parser("run", help="one nightly run: sweep, score, explain, worklist (a Prefect flow)",
                       description="One nightly run as the Prefect flow nightly_screening, on a local ephemeral server "
                                   "unless PREFECT_API_URL points at one.", epilog=EPILOG)
    common(r, archive=True, archive_required=True)
    r.add_argument("--model", type=_existing("directory"), help="model folder (default: WORKDIR/models/demo)")
    r.add_argument("--dxa", type=_existing("file"), help="DXA table (CSV) to load; later runs keep it")
    r.add_argument("--config", type=_existing("file"), help="TOML with [run] settings and/or [[rule]] eligibility rules")
    r.add_argument("--workers", type=int, default=None, help="decode worker processes (default: 2)")
    r.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default: 16 on CPU, 128 on CUDA, halved when memory runs out)")
    r.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:1 ...")
    r.add_argument("--shards", type=int, default=None,
                   help="split scoring into N shards, one process each (0: one per visible GPU; default: 1)")
    r.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each shard as a task on a Ray cluster (ray://HEAD:10001; no address: a local cluster)")
    r.add_argument("--shard-deployment", metavar="FLOW/DEPLOYMENT",
                   help="run each shard as a run of this score_shard deployment on a Prefect work pool")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; slow start, faster backlog)")
    r.add_argument("--no-prefect", action="store_true", help="run the stages in-process without Prefect")
    r.set_defaults(fn=cmd_run)

    w = sub.add_parser("worklist", help="re-render the latest run's worklist (the store is opened read-only)",
                       epilog=EPILOG)
    common(w)
    w.add_argument("--threshold", type=_probability, default=None,
                   help="list patients at or above P; 0 lists every scored eligible patient not excluded")
    w.add_argument("--model", type=_existing("directory"), help="model folder (default: the one the run used)")
    w.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a store held by a run (default: 60)")
    w.add_argument("--config", type=_existing("file"), help="TOML with [worklist] exclusions and [sites]")
    w.set_defaults(fn=cmd_worklist)

    t = sub.add_parser("train", help="fine-tune a model (LoRA) on archive images paired with DXA",
                       description="Pairs eligible images with DXA within 180 days, splits by patient, fine-tunes with "
                                   "LoRA, evaluates, and writes MODEL_DIR with its card.")
    common(t, archive=True, archive_required=True)
    t.add_argument("--dxa", type=_existing("file"), required=True, help="DXA table (CSV)")
    t.add_argument("--out", type=Path, required=True, help="model folder to write")
    t.add_argument("--backbone", default="dinov2_tiny_demo", help="backbone name (default: dinov2_tiny_demo)")
    t.add_argument("--weights", type=Path, help="local .safetensors backbone weights (never downloaded)")
    t.add_argument("--strategy", choices=("lora", "linear", "full"), default="lora",
                   help="LoRA adapters (default), linear probe on a frozen backbone, or full fine-tune")
    t.add_argument("--masks", type=_existing("directory"),
                   help="folder of <SOP Instance UID>.png bone masks: reports Δbone and IoU_bone on the card")
    t.add_argument("--marker-masks", type=_existing("directory"),
                   help="folder of <SOP Instance UID>.png side-marker masks: reports the heat on the marker")
    t.add_argument("--calibration", choices=("platt", "isotonic"),
                   help="fit this calibration, the threshold and the bands on part of the held-out women; "
                        "every figure on the card then comes from the rest (a test split)")
    t.add_argument("--label-sites", default="t_lumbar_spine,t_femoral_neck,t_total_hip",
                   help="DXA sites whose minimum T-score sets the WHO label (default: all three)")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--truth", type=_existing("file"), help="synthetic cohorts: truth.csv, to report the ceiling")
    t.add_argument("--config", type=_existing("file"), help="TOML with [[rule]] eligibility rules")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("calibrate", help="recalibrate a model on a site's own image-DXA pairs (no retraining)",
                       description="Fits Platt or isotonic calibration and a new threshold on the site's pairs and "
                                   "writes a new model version beside the old one; the card keeps the history.")
    common(c, archive=True, archive_required=True)
    c.add_argument("--model", type=_existing("directory"), required=True)
    c.add_argument("--dxa", type=_existing("file"), required=True)
    c.add_argument("--method", choices=("isotonic", "platt"), default="isotonic")
    c.add_argument("--out", type=Path, help="new model folder (default: MODEL-METHOD-YYYYMMDD)")
    c.add_argument("--window-days", type=int, default=180, help="image-DXA pairing window (default: 180)")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--config", type=_existing("file"), help="TOML with [[rule]] eligibility rules")
    c.set_defaults(fn=cmd_calibrate)

    y = sub.add_parser("study", help="train a grid of backbone x strategy models and compare them (a Prefect flow)",
                       description="The SNUH protocol on your pairs: every model of --grid on the same patient split; "
                                   "writes OUT/report.json and OUT/report.html.")
    y.add_argument("--out", type=Path, required=True, help="folder for the store, models and report")
    y.add_argument("--demo", action="store_true", help="use a seeded synthetic cohort and the 3-strategy demo grid")
    y.add_argument("--archive", type=_existing("directory"))
    y.add_argument("--dxa", type=_existing("file"))
    y.add_argument("--grid", type=_existing("file"), help="TOML with [[model]] backbone/strategy/weights/epochs")
    y.add_argument("--truth", type=_existing("file"), help="synthetic cohorts: truth.csv, for the ceiling")
    y.add_argument("--masks", type=_existing("directory"), help="bone masks, for Δbone and IoU_bone")
    y.add_argument("--epochs", type=int, default=None, help="demo grid: epochs per model (default: 8)")
    y.add_argument("--workers", type=int, default=2)
    y.set_defaults(fn=cmd_study)

    v = sub.add_parser("serve", help="serve the nightly flow on a cron schedule (needs `prefect server start`)")
    common(v, archive=True, archive_required=True)
    v.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: 02:00 every night)")
    v.add_argument("--model", type=_existing("directory"))
    v.add_argument("--dxa", type=_existing("file"))
    v.add_argument("--config", type=_existing("file"))
    v.set_defaults(fn=cmd_serve)

    rf = sub.add_parser("refer", help="record what a coordinator did for a patient (append-only)")
    common(rf)
    rf.add_argument("patient_id", help="the patient's ID as on the worklist")
    rf.add_argument("--status", required=True, choices=("contacted", "referred", "declined", "unreachable", "dxa-done"))
    rf.add_argument("--note", help="free text, kept with the action")
    rf.add_argument("--by", help="who did it (default: your login name)")
    rf.add_argument("--wait", type=float, default=10.0,
                    help="seconds to wait for a store held by a nightly run before queueing the change (default: 10)")
    rf.set_defaults(fn=cmd_refer)

    oc = sub.add_parser("outcomes", help="match DXA results to flagged patients: uptake, yield, time to DXA")
    common(oc)
    oc.add_argument("--dxa", type=_existing("file"), help="new DXA results to load first (the usual CSV format)")
    oc.add_argument("--follow-up-days", type=int, default=365, help="DXA counted up to this long after the flag")
    oc.add_argument("--json", action="store_true", help="print JSON instead of tables")
    oc.set_defaults(fn=cmd_outcomes)

    rp = sub.add_parser("report", help="write the monthly program report (HTML, with trend plots)")
    common(rp)
    rp.add_argument("--month", type=_month, help="YYYY-MM (default: this month)")
    rp.add_argument("--dxa", type=_existing("file"), help="new DXA results to load first")
    rp.add_argument("--follow-up-days", type=int, default=365)
    rp.set_defaults(fn=cmd_report)

    ds = sub.add_parser("deploy-shards", help="deploy the score_shard flow to a Prefect work pool (needs a Prefect server)")
    ds.add_argument("--pool", required=True, help="work pool name (create it with `prefect work-pool create NAME --type process`)")
    ds.add_argument("--name", default="gpu", help="deployment name (default: gpu)")
    ds.set_defaults(fn=cmd_deploy_shards)
    return p


def synth_seed() -> int:
    from osteo_batch.synth.cohort import CohortSpec

    return CohortSpec.seed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = sys.stdout
    sys.stdout = out if isinstance(out, _CleanText) else _CleanText(out)
    try:
        return _main(args)
    finally:
        sys.stdout = out


def _main(args) -> int:
    os.umask(0o077)  # everything this command writes is readable by its owner only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("osteo-batch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if args.debug:
            raise
        from osteo_batch.outputs import os_error_message

        disk = None if isinstance(e, CliError) else os_error_message(e, workdir=getattr(args, "workdir", None))
        if disk:  # a full disk, a read-only or refused folder: the user's to fix, in one line
            print(f"osteo-batch: error: {disk}", file=sys.stderr)
            return 2
        from osteo_batch.pipeline import is_user_error
        from osteo_batch.text import clean_cell

        if isinstance(e, CliError) or is_user_error(e):
            print(f"osteo-batch: error: {clean_cell(str(e))}", file=sys.stderr)
            return 2
        print(f"osteo-batch: internal error: {type(e).__name__}: {clean_cell(str(e))} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
