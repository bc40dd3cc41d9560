"""Two score shards as Prefect tasks on a local Ray cluster (prefect-ray) equal one process, score for score."""

from __future__ import annotations

import pytest

from osteo_batch import pipeline
from osteo_batch.store import Store

pytest.importorskip("prefect_ray", reason="the ray extra is not installed (pip install -e '.[ray]')")


def _scores(work):
    with Store(work / "osteo.duckdb", read_only=True) as st:
        return dict(st.con.execute("SELECT sop_instance_uid, score FROM scores").fetchall())


@pytest.mark.slow
def test_two_shards_on_ray_equal_a_single_process_run(tmp_path, cohort_dir, tiny_model, prefect_server):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from osteo_batch.flows.nightly import with_ray

    single = pipeline.load_settings(None, workdir=tmp_path / "single", archive=cohort_dir.archive,
                                    model_dir=tiny_model.model_dir, dxa_csv=cohort_dir.dxa_csv, workers=1,
                                    precision="fp32")  # compared score for score: "auto" would choose by timing
    pipeline.run_nightly(single, "single")

    fp32 = tmp_path / "fp32.toml"
    fp32.write_text('[run]\nprecision = "fp32"\n')
    flow = with_ray(None, num_cpus=2, include_dashboard=False)
    state = flow(archive=str(cohort_dir.archive), workdir=str(tmp_path / "ray"), model_dir=str(tiny_model.model_dir),
                 dxa_csv=str(cohort_dir.dxa_csv), workers=1, shards=2, distributed=True, config=str(fp32),
                 return_state=True)
    summary = state.result()
    sc = summary["score"]
    assert sc["n_shards"] == 2 and [s["shard"] for s in sc["shards"]] == [0, 1]
    assert all(s["scored"] > 0 for s in sc["shards"]), "both shards did work"

    a, b = _scores(tmp_path / "single"), _scores(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == sc["scored"]
    assert max(abs(a[k] - b[k]) for k in a) < 1e-6, "score for score"

    import asyncio

    async def task_names():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            return sorted(r.name for r in runs)

    names = asyncio.run(task_names())
    assert sum(n.startswith("score-") and "-shard-" in n for n in names) == 2, names
    assert any(n.startswith("score-plan-") for n in names) and any(n.startswith("score-load-") for n in names)
