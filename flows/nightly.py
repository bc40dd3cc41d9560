"""The nightly screening flow: one coarse Prefect task per stage, over ``osteo_batch.pipeline``.

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

from osteo_batch import pipeline
from osteo_batch.pipeline import Settings, is_user_error


def _worth_retrying(task, task_run, state) -> bool:
    """Retry I/O hiccups, not errors that would fail the same way again (bad settings,
    a malformed DXA table, a store another process holds: that one already waited)."""
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - we only classify it
        return not is_user_error(e)
    return True


@task(name="load-dxa", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying, task_run_name="load-dxa-{run_id}")
def load_dxa(settings: Settings, run_id: str) -> dict[str, Any]:
    return pipeline.load_dxa_stage(settings, run_id)


@task(name="sweep", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying, task_run_name="sweep-{run_id}")
def sweep(settings: Settings, run_id: str, model_id: str | None) -> dict[str, Any]:
    return pipeline.sweep_stage(settings, run_id, model_id)


@task(name="score-shard", task_run_name="score-{run_id}-shard-{shard}-of-{n_shards}")
def score(settings: Settings, run_id: str, shard: int = 0, n_shards: int = 1) -> dict[str, Any]:
    return pipeline.score_stage(settings, run_id, shard=shard, n_shards=n_shards)


@task(name="explain", task_run_name="explain-{run_id}")
def explain(settings: Settings, run_id: str) -> dict[str, Any]:
    return pipeline.explain_stage(settings, run_id)


@task(name="worklist", retries=2, retry_delay_seconds=5, retry_condition_fn=_worth_retrying, task_run_name="worklist-{run_id}")
def worklist(settings: Settings, run_id: str) -> dict[str, Any]:
    return pipeline.worklist_stage(settings, run_id)


def summary_markdown(s: dict[str, Any]) -> str:
    """The run summary as markdown: counts, model and threshold only."""
    sw = s.get("sweep", {})
    lines = [
        f"# Nightly screening run `{s['run_id']}`",
        "",
        f"- model `{s.get('model_id')}`, threshold {s.get('threshold')}",
        f"- files swept: {sw.get('files')} (headers read tonight: {sw.get('headers_read')})",
        "- " + " + ".join(f"{n} {k}" for k, n in s.get("instances", {}).get("by_status", {}).items())
        + f" = {s.get('instances', {}).get('files')} files",
        f"- scored tonight: {s.get('score', {}).get('scored')}, heat maps: {s.get('explain', {}).get('explained')}",
        f"- on the worklist: {s.get('worklist', {}).get('listed')}",
        "",
        "| status or reason | files |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in s.get("instances", {}).get("by_reason", {}).items()],
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v.get('seconds')} |" for k, v in s.items() if isinstance(v, dict) and "seconds" in v],
        "",
        "Screening aid, not a diagnosis. DXA confirms. Not for rule-out.",
    ]
    return "\n".join(lines)


@flow(name="nightly_screening")
def nightly_screening(
    archive: str,
    workdir: str,
    model_dir: str | None = None,
    dxa_csv: str | None = None,
    config: str | None = None,
    run_id: str = "",
    workers: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Sweep the archive, score what is new, explain the flagged, write the worklist."""
    log = get_run_logger()
    settings = pipeline.load_settings(config, workdir=workdir, archive=archive, model_dir=model_dir, dxa_csv=dxa_csv,
                                      workers=workers, batch_size=batch_size, device=device)
    tasks = {"dxa": load_dxa, "sweep": sweep, "score": score, "explain": explain, "worklist": worklist}
    summary = pipeline.run_nightly(
        settings, run_id or pipeline.new_run_id(), stages=tasks,
        on_stage=lambda name, out: log.info("%s: %s", name, _counts(out)),
    )
    create_markdown_artifact(key="nightly-summary", markdown=summary_markdown(summary),
                             description="Counts only; no patient data")
    return summary


def _counts(out: dict[str, Any]) -> dict[str, Any]:
    """What a log line may show: numbers, never paths or names."""
    return {k: v for k, v in out.items() if isinstance(v, (int, float, dict)) and k != "worklist"}


def serve(archive: str, workdir: str, *, cron: str, model_dir: str | None = None, dxa_csv: str | None = None,
          config: str | None = None) -> None:
    """Serve the flow as a deployment on a cron schedule (needs `prefect server start`)."""
    nightly_screening.serve(
        name="nightly",
        cron=cron,
        parameters={"archive": archive, "workdir": workdir, "model_dir": model_dir, "dxa_csv": dxa_csv, "config": config},
    )
