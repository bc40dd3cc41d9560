"""The ``estimate`` command: how long the backlog will take here, before the first night (prints a table or JSON)."""

from __future__ import annotations

import json

from osteo_batch.cli.common import need_source, say, source_args


def cmd_estimate(args) -> int:
    from osteo_batch.estimate.run import run_estimate
    from osteo_batch.models.model import check_model_dir
    from osteo_batch.settings import load_settings

    s = load_settings(args.config, workdir=args.workdir, model_dir=args.model, workers=args.workers,
                      batch_size=args.batch_size, threads=args.threads, device=args.device, **source_args(args))
    need_source(s)
    check_model_dir(s.resolved_model_dir())  # no model, or a damaged one: one line, before the sweep
    s.check_device()
    est = run_estimate(s, sample=args.sample, seed=args.seed, window=args.window_hours, cores=args.cores,
                       shards=args.shards, heatmaps=args.heatmaps, on_step=say)
    if args.json:
        print(json.dumps(est.to_json(), indent=1))
    else:
        from osteo_batch.estimate.table import render

        print(render(est))
        print(f"recorded in the store's estimates table (run {est.run_id})")
    return 0
