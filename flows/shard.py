"""One score shard as a flow of its own, for a Prefect work pool with one worker per GPU machine.

Deploy it to a pool once (:func:`deploy`, or ``osteo-batch deploy-shards --pool gpu``),
start ``prefect worker start --pool gpu --limit 1`` on each GPU machine, and
run the nightly flow with ``--shard-deployment score_shard/gpu``: the nightly
flow plans the shards, starts one run of this deployment per shard, waits for
them, and loads their Parquet parts as the single writer. Every machine must
see the archive and the work folder at the same paths (a shared mount).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from osteo_batch.run.context import RunContext
from osteo_batch.run.shards import shard_stage
from osteo_batch.settings import Settings


@flow(name="score_shard", flow_run_name="score-{run_id}-shard-{shard}")
def score_shard_flow(settings: dict[str, Any], run_id: str, plan: dict[str, Any], shard: int,
                     context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score shard ``shard`` of ``plan`` on this machine's GPU (or CPU); writes Parquet parts only.

    ``context`` is the nightly run's :class:`~osteo_batch.run.context.RunContext`
    (its model pinned at the start); a run started by hand without it checks
    the model folder here.
    """
    from osteo_batch.flows.env import library_logs

    library_logs()
    s = Settings.from_json(settings)
    ctx = RunContext.from_json(context).with_settings(s) if context else RunContext.for_model(s, run_id)
    return shard_stage(ctx, plan, shard)


def deploy(pool: str, *, name: str = "gpu"):
    """Create (or update) the ``score_shard/NAME`` deployment on work pool ``pool``; returns its ID.

    The entrypoint is the module path ``osteo_batch.flows.shard.score_shard_flow``,
    not a file in a checkout: the package is installed (perhaps from a wheel) on
    every worker machine, and its worker imports the flow from there. Nothing is
    built or pushed: a ``process`` pool's worker runs the flow in its own
    environment.
    """
    from prefect.deployments.runner import EntrypointType

    return score_shard_flow.deploy(name=name, work_pool_name=pool, build=False, push=False,
                                   entrypoint_type=EntrypointType.MODULE_PATH, print_next_steps=False)
