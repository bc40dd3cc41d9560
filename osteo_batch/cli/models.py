"""The commands that make and compare models: ``train``, ``calibrate``, ``demo``, ``study``, and the model lines.

``train`` and ``calibrate`` sweep the archive into the work folder first (a
sweep-only run), then hand the index to one call in :mod:`osteo_batch.models`;
``demo`` strings the synthetic steps of :mod:`osteo_batch.synth` together with
a nightly run; ``study`` runs its Prefect flow. Each prints the model card's
figures on the split they come from.
"""

from __future__ import annotations

import time
from pathlib import Path

from osteo_batch.cli.common import CliError, need_source, say, source_args


def cmd_train(args) -> int:
    from osteo_batch.models.train import TrainConfig, train
    from osteo_batch.run.nightly import index_archive
    from osteo_batch.settings import load_settings
    from osteo_batch.store import open_store

    s = load_settings(args.config, workdir=args.workdir, dxa_csv=args.dxa, workers=args.workers,
                      **source_args(args))
    need_source(s)
    index_archive(s, load_dxa=True)
    cfg = TrainConfig(backbone=args.backbone, weights=str(args.weights) if args.weights else None, epochs=args.epochs,
                      seed=args.seed, workers=args.workers, strategy=args.strategy,
                      masks=str(args.masks) if args.masks else None,
                      marker_masks=str(args.marker_masks) if args.marker_masks else None,
                      calibration=args.calibration,
                      label_sites=tuple(x.strip() for x in args.label_sites.split(",") if x.strip()))
    t0 = time.monotonic()
    with open_store(s) as st:
        res = train(st, args.out, cfg, truth_csv=args.truth, roots=s.archive_roots(), retrieval=s.retrieval(),
                    progress=lambda e, n, loss: say(f"[train] epoch {e}/{n} loss {loss:.3f} ({time.monotonic() - t0:.0f} s)"))
    _print_model(res)
    return 0


def cmd_demo(args) -> int:
    from osteo_batch.cli.run import print_run, run_flow
    from osteo_batch.settings import load_settings
    from osteo_batch.store import open_store
    from osteo_batch.synth import cohort as synth
    from osteo_batch.synth import demo

    workdir = Path(args.workdir)
    t0 = time.monotonic()
    spec = synth.CohortSpec(seed=args.seed)
    if synth.existing_cohort(workdir, spec):
        say(f"[demo] synthetic archive already at {workdir / 'archive'}; reusing it")
    else:
        say("[demo] writing the synthetic archive (phantoms, not people) ...")
        c = synth.write_cohort(workdir, spec)
        say(f"[demo] {c.n_files} files, {c.n_images} images; known ceiling AUC {c.ceiling_auc:.3f} ({time.monotonic() - t0:.0f} s)")
    model_dir = workdir / "models" / "demo"
    if (model_dir / "config.json").is_file():
        say(f"[demo] model already trained at {model_dir}; reusing it")
    else:
        t1 = time.monotonic()
        say("[demo] writing the site's historical radiographs paired with DXA (phantoms) ...")
        h = demo.ensure_history(workdir / "history")
        say(f"[demo] {h.n_images} historical images ({time.monotonic() - t1:.0f} s)")
        say("[demo] fine-tuning from the phantom foundation with LoRA on the CPU ...")
        t1 = time.monotonic()
        res = demo.train_demo_model(workdir / "history", model_dir, demo.DemoTraining(epochs=args.epochs,
                                                                                      workers=args.workers),
                                    progress=lambda e, n, loss: say(f"[train] epoch {e}/{n} loss {loss:.3f} "
                                                                     f"({time.monotonic() - t1:.0f} s)"))
        _print_model(res)
    say("[demo] running the nightly flow ...")
    s = load_settings(None, workdir=workdir, archive=workdir / "archive", model_dir=model_dir,
                      dxa_csv=workdir / "dxa.csv", workers=args.workers)
    summary = run_flow(s, use_prefect=not args.no_prefect)
    with open_store(s, read_only=True) as st:
        t = demo.tonight(st, summary["model_id"], workdir / "truth.csv")
    if t.get("women", 0) >= 3:
        print(f"tonight: {t['women']} women scored; score 10th-90th percentile {t['score_p10']:.3f}-{t['score_p90']:.3f} "
              f"(median {t['score_p50']:.3f}); Spearman with low latent density {t['spearman_with_low_density']:.3f}")
    print_run(summary)
    say(f"[demo] finished in {time.monotonic() - t0:.0f} s")
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
    from osteo_batch import pipeline
    from osteo_batch.models.calibrate import recalibrate_site
    from osteo_batch.models.model import check_model_dir

    s = pipeline.load_settings(args.config, workdir=args.workdir, dxa_csv=args.dxa, workers=args.workers,
                               **source_args(args))
    need_source(s)
    check_model_dir(args.model)  # a damaged model fails here, before the sweep
    pipeline.index_archive(s, load_dxa=True)
    with pipeline.open_store(s, read_only=True) as st:
        e = recalibrate_site(st, Path(args.model), args.out, method=args.method, window_days=args.window_days,
                             workers=s.workers, cache_dir=s.workdir / "cache", roots=s.archive_roots(),
                             retrieval=s.retrieval())
    print(f"model {e['model_id']} -> {e['out'].resolve()} (recalibrated from {e['from_model_id']})")
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
            say("[study] writing the synthetic cohort (a few thousand small phantoms) ...")
            synth.write_cohort(cohort_dir, study.demo_spec())
        archive, dxa = cohort_dir / "archive", cohort_dir / "dxa.csv"
        truth, masks = cohort_dir / "truth.csv", cohort_dir / "bone_masks"
        grid = study.demo_grid(epochs=args.epochs or 6)
    else:
        if not ((args.archive or args.pacs) and args.dxa and args.grid):
            raise CliError("study needs --archive DIR or --pacs URL, --dxa and --grid (or --demo)")
        archive, dxa, truth, masks = args.archive, args.dxa, args.truth, args.masks
        grid = study.load_grid(args.grid)
    from osteo_batch.flows import env

    env.configure(out)
    from osteo_batch.flows.study import model_study

    pacs = None if args.demo else args.pacs
    report = model_study(archive=str(archive) if archive else None, dxa_csv=str(dxa), out=str(out), grid=grid,
                         truth=str(truth) if truth else None, masks=str(masks) if masks else None,
                         workers=args.workers, pacs=pacs,
                         since=args.since.isoformat() if pacs and args.since else None,
                         calling_aet=args.calling_aet if pacs else None)
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
