"""Score shards as runs of a deployment on a Prefect work pool, taken by a real worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from osteo_batch import pipeline
from osteo_batch.store import Store


def _scores(work):
    with Store(work / "osteo.duckdb", read_only=True) as st:
        return dict(st.con.execute("SELECT sop_instance_uid, score FROM scores").fetchall())


@pytest.mark.slow
def test_shards_on_a_work_pool_equal_a_single_process_run(tmp_path, cohort_dir, tiny_model, prefect_server):
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    from osteo_batch.flows.nightly import nightly_screening

    async def make_pool():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="osteo-test-gpu", type="process"))

    asyncio.run(make_pool())
    from osteo_batch.cli import main

    assert main(["deploy-shards", "--pool", "osteo-test-gpu"]) == 0

    async def deployment():
        async with get_client() as client:
            return await client.read_deployment_by_name("score_shard/gpu")

    dep = asyncio.run(deployment())
    # the installed package, not a file in a checkout: a wheel-installed worker machine can run it
    assert dep.entrypoint == "osteo_batch.flows.shard.score_shard_flow" and not dep.pull_steps, dep

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "osteo-test-gpu",
                               "--limit", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, cwd=tmp_path)  # not the checkout
    fp32 = tmp_path / "fp32.toml"  # the runs are compared score for score: "auto" would choose by timing
    fp32.write_text('[run]\nprecision = "fp32"\n')
    try:
        state = nightly_screening(archive=str(cohort_dir.archive), workdir=str(tmp_path / "pool"),
                                  model_dir=str(tiny_model.model_dir), dxa_csv=str(cohort_dir.dxa_csv), workers=1,
                                  shards=2, shard_deployment="score_shard/gpu", config=str(fp32), return_state=True)
        summary = state.result()
    finally:  # the worker is our helper: ask it to stop, and end it if it lingers
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)

    single = pipeline.load_settings(None, workdir=tmp_path / "single", archive=cohort_dir.archive,
                                    model_dir=tiny_model.model_dir, dxa_csv=cohort_dir.dxa_csv, workers=1,
                                    precision="fp32")
    pipeline.run_nightly(single, "single")
    sc = summary["score"]
    assert sc["n_shards"] == 2 and sc["files_loaded"] >= 2, "each shard run wrote its parts"
    a, b = _scores(tmp_path / "single"), _scores(tmp_path / "pool")
    assert a.keys() == b.keys() and len(b) == sc["scored"] > 0
    assert max(abs(a[k] - b[k]) for k in a) < 1e-6
