"""The estimate's sample (seeded, from the run's backlog) and the backlog's order (newest study first, shards kept)."""

from __future__ import annotations

import datetime as dt

import pytest

from osteo_batch.estimate.sample import draw
from osteo_batch.store import Store


@pytest.fixture(scope="module")
def swept(cohort_dir, tmp_path_factory):
    from osteo_batch.archive.sweep import sweep

    path = tmp_path_factory.mktemp("estimate-sample") / "osteo.duckdb"
    with Store(path) as st:
        sweep(st, cohort_dir.archive, run_id="r1", workers=1, run_date=dt.date(2026, 11, 30))
    return path


def _pending(st) -> set[str]:
    return {u for (u,) in st.con.execute("SELECT sop_instance_uid FROM instances WHERE status = 'pending'").fetchall()}


def test_the_sample_is_seeded_drawn_from_the_backlog_and_ordered_as_the_run_scores(swept):
    with Store(swept, read_only=True) as st:
        pending = _pending(st)
        a = draw(st, model_id="m-run", n=10, seed=0, source_prefix=None)
        b = draw(st, model_id="m-run", n=10, seed=0, source_prefix=None)
        c = draw(st, model_id="m-run", n=10, seed=1, source_prefix=None)
        everything = draw(st, model_id="m-run", n=10_000, seed=0, source_prefix=None)
        size = st.con.execute("SELECT sum(size) FROM instances WHERE status = 'pending'").fetchall()[0][0]
        dates = dict(st.con.execute("SELECT sop_instance_uid, study_date FROM instances").fetchall())
    assert a.backlog == len(pending) > 20 and a.backlog_bytes == size and a.mean_bytes == size / len(pending)
    assert a.items == b.items and len(a.items) == 10, "the same seed draws the same images"
    assert {it.sop_instance_uid for it in a.items} != {it.sop_instance_uid for it in c.items}
    assert {it.sop_instance_uid for it in everything.items} == pending
    for s in (a, everything):
        got = [dates[it.sop_instance_uid] for it in s.items]
        assert got == sorted(got, reverse=True), "newest study first, as sql/score_plan.sql"
    with pytest.raises(ValueError, match="at least one image"):
        draw(st, model_id="m-run", n=0, seed=0, source_prefix=None)


def test_an_image_scored_only_by_another_model_is_in_the_backlog(swept, tmp_path):
    import shutil

    from osteo_batch.archive.sweep import resolve_status

    path = tmp_path / "osteo.duckdb"
    shutil.copy(swept, path)
    with Store(path) as st:
        uid = sorted(_pending(st))[0]
        st.con.execute("INSERT INTO scores VALUES (?, NULL, 'm-other', 0.5, 'r0', now())", [uid])
        resolve_status(st, None)  # a sweep-only run: scored by any model
        assert uid not in _pending(st)
        mine = draw(st, model_id="m-run", n=10_000, seed=0, source_prefix=None)
        theirs = draw(st, model_id="m-other", n=10_000, seed=0, source_prefix=None)
    assert uid in {it.sop_instance_uid for it in mine.items} and mine.backlog == theirs.backlog + 1
    assert uid not in {it.sop_instance_uid for it in theirs.items}
    # a PACS's backlog is its own: none of the folder's files
    with Store(path, read_only=True) as st:
        assert draw(st, model_id="m-run", n=5, seed=0, source_prefix="http://pacs.example:8042/").backlog == 0


def test_the_plan_scores_the_newest_studies_first_and_keeps_each_shard(swept, tmp_path):
    from osteo_batch.scoring.score import plan, plan_items
    from osteo_batch.scoring.sharding import shard_of

    with Store(swept, read_only=True) as st:
        p = plan(st, tmp_path / "scores", "r2", 3)
        dates = dict(st.con.execute("SELECT sop_instance_uid, study_date FROM instances").fetchall())
        n_dated = st.con.execute("SELECT count(DISTINCT study_date) FROM instances WHERE status = 'pending'"
                                 ).fetchall()[0][0]
    assert n_dated > 5, "the cohort spans many study dates, so the order is tested"
    for shard in range(3):
        items = plan_items(p, shard)
        assert items and all(shard_of(it.sop_instance_uid, 3) == shard for it in items)
        keys = [(dates[it.sop_instance_uid], it.sop_instance_uid) for it in items]
        assert keys == sorted(keys, key=lambda k: (-k[0].toordinal(), k[1])), "newest first, then by UID"
