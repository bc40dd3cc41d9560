"""One score shard as a flow of its own, for a Prefect work pool with one worker per GPU machine.

Deploy it to a pool once, start ``prefect worker start --pool gpu --limit 1``
on each GPU machine, and run the nightly flow with
``--shard-deployment score_shard/gpu``: the nightly flow plans the shards,
starts one run of this deployment per shard, waits for them, and loads their
Parquet parts as the single writer. Every machine must see the archive and the
work folder at the same paths (a shared mount).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from osteo_batch import pipeline
from osteo_batch.pipeline import Settings


@flow(name="score_shard", flow_run_name="score-{run_id}-shard-{shard}")
def score_shard_flow(settings: dict[str, Any], run_id: str, plan: dict[str, Any], shard: int) -> dict[str, Any]:
    """Score shard ``shard`` of ``plan`` on this machine's GPU (or CPU); writes Parquet parts only."""
    from osteo_batch.flows.env import library_logs

    library_logs()
    return pipeline.shard_stage(Settings.from_json(settings), run_id, plan, shard)
