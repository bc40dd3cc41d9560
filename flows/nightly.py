"""The nightly screening flow: one coarse Prefect task per stage, over ``osteo_batch.run``.

This module holds orchestration only: no DICOM, torch, SQL or templates. Each
task wraps one library call and returns counts; task names carry the run ID,
never patient data. I/O stages retry (a share mount that blinks, a store held
by a coordinator's query); the model stages do not, since a retry would fail
the same way.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from osteo_batch.errors import InternalError, is_user_error
from osteo_batch.run import shards as score_stages
from osteo_batch.run import stages
from osteo_batch.run.context import RunContext
from osteo_batch.run.nightly import new_run_id, run_nightly
from osteo_batch.settings import Settings, load_settings


class ShardRunsFailedError(InternalError, RuntimeError):
    """Shard runs on the work pool that did not complete: their workers' logs say why."""

    code = "shard_runs_failed"


def _worth_retrying(task, task_run, state) -> bool:
    """Retry I/O hiccups, not errors that would fail the same way again (bad settings,
    a malformed DXA table, a store another process holds: that one already waited)."""
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - we only classify it
        return not is_user_error(e)
    return True


@task(name="load-dxa", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying, task_run_name="load-dxa-{ctx.run_id}")
def load_dxa(ctx: RunContext) -> dict[str, Any]:
    return stages.load_dxa_stage(ctx)


@task(name="sweep", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying, task_run_name="sweep-{ctx.run_id}")
def sweep(ctx: RunContext) -> dict[str, Any]:
    return stages.sweep_stage(ctx)


@task(name="score", task_run_name="score-{ctx.run_id}")
def score(ctx: RunContext) -> dict[str, Any]:
    """Plan, shards on this machine (one process per GPU when several), load."""
    return score_stages.score_stage(ctx)


@task(name="score-plan", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying,
      task_run_name="score-plan-{ctx.run_id}")
def score_plan(ctx: RunContext) -> dict[str, Any]:
    return score_stages.plan_stage(ctx)


@task(name="score-shard", task_run_name="score-{ctx.run_id}-shard-{shard}")
def score_shard(ctx: RunContext, plan: dict[str, Any], shard: int) -> dict[str, Any]:
    return score_stages.shard_stage(ctx, plan, shard)


@task(name="score-load", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying,
      task_run_name="score-load-{ctx.run_id}")
def score_load(ctx: RunContext, shards: list[dict[str, Any]]) -> dict[str, Any]:
    return score_stages.load_stage(ctx, shards)


def score_distributed(ctx: RunContext) -> dict[str, Any]:
    """The score stage as one task per shard, on whatever task runner the flow has (Ray).

    Each shard task asks for one GPU when the device is CUDA, so Ray places
    one shard per GPU across the cluster. Shards write Parquet parts only;
    the load task is the single writer.
    """
    import time

    t0 = time.monotonic()
    planned = score_plan(ctx)
    plan = planned["plan"]
    log = get_run_logger()
    log.info("score: %d pending images in %d shards %s", sum(plan["sizes"]), plan["n_shards"], plan["sizes"])
    if ctx.settings.device.startswith("cuda"):
        from prefect_ray.context import remote_options

        with remote_options(num_gpus=1):
            futures = [score_shard.submit(ctx, plan, i) for i in range(plan["n_shards"])]
    else:
        futures = [score_shard.submit(ctx, plan, i) for i in range(plan["n_shards"])]
    shards = []
    for f in futures:
        out = f.result()
        log.info("score shard %d/%d: %d scored, %d rejected in %.1f s on %s", out["shard"] + 1, out["n_shards"],
                 out["scored"], out["rejected"], out["seconds"], out["device"])
        shards.append(out)
    loaded = score_load(ctx, shards)
    return {**score_stages.score_summary(planned, loaded), "seconds": round(time.monotonic() - t0, 2)}


def score_on_work_pool(ctx: RunContext, deployment: str) -> dict[str, Any]:
    """The score stage with each shard a run of the ``score_shard`` deployment (a work pool's workers).

    All shard runs start at once; the pool's workers (one per GPU machine)
    take them. Parts of shards that failed stay on disk and are loaded; the
    images they did not reach are scored by the next run.
    """
    import time

    from prefect import get_client
    from prefect.deployments import run_deployment

    t0 = time.monotonic()
    planned = score_plan(ctx)
    plan = planned["plan"]
    log = get_run_logger()
    runs = [run_deployment(deployment, parameters={"settings": ctx.settings.to_json(), "run_id": ctx.run_id,
                                                   "plan": plan, "shard": i, "context": ctx.to_json()}, timeout=0)
            for i in range(plan["n_shards"])]
    log.info("score: %d pending images in %d shard runs of %s", sum(plan["sizes"]), len(runs), deployment)
    failed = []
    with get_client(sync_client=True) as client:
        for i, r in enumerate(runs):
            while True:  # a backlog shard may take days; poll gently
                state = client.read_flow_run(r.id).state
                if state is not None and state.is_final():
                    break
                time.sleep(2)
            log.info("score shard %d/%d: %s", i + 1, len(runs), state.type.value)
            if not state.is_completed():
                failed.append(i)
    loaded = score_load(ctx, [])
    if failed:
        raise ShardRunsFailedError(f"score shards {failed} of {len(runs)} did not complete (see their flow runs); "
                                   "their finished parts are loaded and the next run scores the rest")
    return {**score_stages.score_summary(planned, loaded), "seconds": round(time.monotonic() - t0, 2)}


@task(name="explain", task_run_name="explain-{ctx.run_id}")
def explain(ctx: RunContext) -> dict[str, Any]:
    return stages.explain_stage(ctx)


@task(name="worklist", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying, task_run_name="worklist-{ctx.run_id}")
def worklist(ctx: RunContext) -> dict[str, Any]:
    return stages.worklist_stage(ctx)


@task(name="results", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying,
      task_run_name="results-{ctx.run_id}")
def results(ctx: RunContext) -> dict[str, Any]:
    return stages.results_stage(ctx)


@flow(name="nightly_screening")
def nightly_screening(
    archive: str | None = None,
    workdir: str | None = None,
    model_dir: str | None = None,
    dxa_csv: str | None = None,
    config: str | None = None,
    run_id: str = "",
    workers: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    shards: int | None = None,
    distributed: bool = False,
    shard_deployment: str | None = None,
    compile: bool | None = None,
    pacs: str | None = None,
    since: str | None = None,
    send_results: bool | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Sweep the archive, score what is new, explain the flagged, write the worklist.

    ``settings``: the whole typed configuration (:class:`osteo_batch.settings.Settings`),
    as the command line passes it; Prefect validates it, and ``Settings``
    checks every value again. A deployment (``serve``, ``prefect deployment
    run -p archive=...``) passes the named parameters instead, read with the
    config file exactly as the command line reads its flags; the two ways do
    not mix.

    ``distributed``: run each score shard as its own task on the flow's task
    runner (give the flow a ``RayTaskRunner``, see :func:`with_ray`);
    ``shard_deployment``: run each shard as a run of that ``score_shard``
    deployment on a work pool (``flows/shard.py``); otherwise the shards run on
    this machine, one process per GPU.
    """
    from osteo_batch.flows.env import library_logs

    library_logs()
    log = get_run_logger()
    named = dict(archive=archive, workdir=workdir, model_dir=model_dir, dxa_csv=dxa_csv, config=config,
                 workers=workers, batch_size=batch_size, device=device, shards=shards, compile=compile,
                 pacs_url=pacs, since=since, send_results=send_results)
    if settings is None:
        if not workdir or not (archive or pacs or config):
            from osteo_batch.settings import SettingsError

            raise SettingsError("the nightly flow needs workdir and archive or pacs (or settings)")
        if since:
            from osteo_batch.pacs.config import parse_since

            named["since"] = parse_since(since)
        settings = load_settings(config, **{k: v for k, v in named.items() if k != "config"})
    elif any(v is not None for v in named.values()):
        from osteo_batch.settings import SettingsError

        raise SettingsError("pass either settings or the named parameters (archive, workdir, ...), not both")
    if shard_deployment:
        score_fn = lambda ctx: score_on_work_pool(ctx, shard_deployment)  # noqa: E731
    else:
        score_fn = score_distributed if distributed else score
    tasks = {"dxa": load_dxa, "sweep": sweep, "score": score_fn, "explain": explain, "worklist": worklist,
             "results": results}
    summary = run_nightly(
        settings, run_id or new_run_id(), stages=tasks,
        on_stage=lambda name, out: log.info("%s: %s", name, _counts(out)),
    )
    from osteo_batch.run.summary import summary_markdown

    create_markdown_artifact(key="nightly-summary", markdown=summary_markdown(summary),
                             description="Counts only; no patient data")
    return summary


def _counts(out: dict[str, Any]) -> dict[str, Any]:
    """What a log line may show: numbers, never paths or names."""
    return {k: v for k, v in out.items() if isinstance(v, (int, float, dict)) and k != "worklist"}


def with_ray(address: str | None = None, **init_kwargs: Any):
    """The flow on a Ray cluster (``address`` like ``ray://head:10001``; None starts a local one)."""
    from prefect_ray import RayTaskRunner

    return nightly_screening.with_options(task_runner=RayTaskRunner(address=address, init_kwargs=init_kwargs or None))


def serve(archive: str | None, workdir: str, *, cron: str, model_dir: str | None = None, dxa_csv: str | None = None,
          config: str | None = None, pacs: str | None = None, since: str | None = None) -> None:
    """Serve the flow as a deployment on a cron schedule (needs `prefect server start`).

    At most one run at a time: a run that comes due while another is still
    going is cancelled by Prefect (collision strategy CANCEL_NEW), and the
    work folder's run lock refuses any other run started by hand.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    nightly_screening.serve(
        name="nightly",
        cron=cron,
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        parameters={"archive": archive, "workdir": workdir, "model_dir": model_dir, "dxa_csv": dxa_csv, "config": config,
                    "pacs": pacs, "since": since},
    )
