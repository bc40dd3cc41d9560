"""End to end through a real Prefect flow run: conservation, Parquet, rerun, privacy."""

import re
import shutil
import stat

import pyarrow.parquet as pq
import pytest

from osteo_batch.store import Store


@pytest.fixture(scope="module")
def runs(cohort_dir, tiny_model, prefect_server, tmp_path_factory):
    from osteo_batch.flows.nightly import nightly_screening

    root = tmp_path_factory.mktemp("nightly")
    archive = root / "archive"
    shutil.copytree(cohort_dir.archive, archive)
    work = root / "work"
    kw = dict(archive=str(archive), workdir=str(work), model_dir=str(tiny_model.model_dir), dxa_csv=str(cohort_dir.dxa_csv))
    first = nightly_screening(**kw)
    second = nightly_screening(**kw)
    return {"archive": archive, "work": work, "first": first, "second": second}


def _q(work, sql):
    with Store(work / "osteo.duckdb", read_only=True) as st:
        return st.con.execute(sql).fetchall()


def test_statuses_sum_to_files_and_unscored_rows_have_reasons(runs):
    n_files = sum(1 for p in runs["archive"].rglob("*") if p.is_file())
    assert _q(runs["work"], "SELECT count(*) FROM instances")[0][0] == n_files
    assert runs["first"]["instances"]["files"] == n_files
    statuses = dict(_q(runs["work"], "SELECT status, count(*) FROM instances GROUP BY 1"))
    assert set(statuses) <= {"scored", "ineligible", "duplicate", "rejected", "pending"}
    assert statuses.get("pending", 0) == 0 and statuses["scored"] > 0
    assert _q(runs["work"], "SELECT count(*) FROM instances WHERE status <> 'scored' AND reason IS NULL")[0][0] == 0


def test_scores_in_store_and_parquet_agree(runs):
    scored = runs["first"]["score"]["scored"]
    assert scored == _q(runs["work"], "SELECT count(*) FROM instances WHERE status = 'scored'")[0][0]
    files = list((runs["work"] / "scores").glob("run_date=*/*.parquet"))
    assert len(files) == 1 and not list((runs["work"] / "scores").rglob("*.tmp"))
    table = pq.read_table(files[0])
    assert set(table.column_names) >= {"sop_instance_uid", "patient_id", "model_id", "score", "run_id"}
    store_rows = sorted(_q(runs["work"], "SELECT sop_instance_uid, score FROM scores"))
    pq_rows = sorted(zip(table["sop_instance_uid"].to_pylist(), table["score"].to_pylist()))
    assert store_rows == pq_rows and len(pq_rows) == scored
    assert all(0.0 <= s <= 1.0 for _, s in pq_rows)


def test_rerun_scores_nothing_again(runs):
    second = runs["second"]
    assert second["score"]["pending"] == 0 and second["score"]["scored"] == 0
    assert second["explain"]["explained"] == 0
    assert second["sweep"]["headers_read"] == 0
    n = _q(runs["work"], "SELECT count(*) FROM scores")[0][0]
    assert n == runs["first"]["score"]["scored"]


def test_worklist_lists_flagged_patients_once_highest_first(runs):
    wl = runs["first"]["worklist"]
    html = open(wl["worklist"], encoding="utf-8").read()
    scores = [float(s) for s in re.findall(r'data-score="([0-9.e-]+)"', html)]
    assert len(scores) == wl["listed"] and scores == sorted(scores, reverse=True)
    # listed when the *displayed* score reaches the threshold (osteo_batch.models.bands.raw_floor): a raw
    # score up to half a display step below it is listed, and shown at the threshold
    from osteo_batch.models.bands import flagged

    assert all(flagged(s, wl["threshold"]) for s in scores)
    assert "DXA confirms" in html and "not a diagnosis" in html
    n_files = runs["first"]["instances"]["files"]
    assert re.search(rf'class="conservation">{n_files} = \d+ scored \+ \d+ ineligible \+ \d+ duplicate \+ \d+ rejected<', html)
    ids = re.findall(r"<td>(SYN\d{5})</td>", html)
    assert len(ids) == len(set(ids)) == wl["listed"], "one row per patient"
    # patients whose last DXA was in the last 2 years (1 year if its lowest T-score was -2.49 to -2.0) are left out
    import datetime as dt

    today = dt.date.today()
    last = _q(runs["work"], """
        SELECT patient_id, max_by(least(t_lumbar_spine, t_femoral_neck, t_total_hip), exam_date), max(exam_date)
        FROM dxa WHERE exam_date <= current_date GROUP BY 1""")
    recent = {pid for pid, t, d in last if (today - d).days <= (365 if t is not None and -2.49 <= t <= -2.0 else 730)}
    assert recent and {pid for pid, _, _ in last} - recent, "the test cohort has recent and older DXAs"
    assert not recent & set(ids)
    assert wl["excluded"].get("recent_dxa", 0) >= 1


def test_outputs_are_private_and_named_without_patient_data(runs):
    work = runs["work"]
    names = {r[0] for r in _q(work, "SELECT patient_name FROM instances WHERE patient_name IS NOT NULL")}
    ids = {r[0] for r in _q(work, "SELECT patient_id FROM instances WHERE patient_id IS NOT NULL")}
    for p in work.rglob("*"):
        if ".prefect" in p.parts:
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p.relative_to(work)} is {oct(mode)}"
        assert not any(i in p.name for i in ids) and not any(n.split("^")[0] in p.name for n in names)
    heatmaps = list((work / "heatmaps").iterdir())
    assert heatmaps and all(re.fullmatch(r"[0-9a-f]{24}\.png", h.name) for h in heatmaps)


def test_prefect_artifact_and_task_names_hold_no_patient_data(runs):
    import asyncio

    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            arts = await client.read_artifacts()
            tasks = await client.read_task_runs()
            return [a.data for a in arts if a.key == "nightly-summary"], [t.name for t in tasks]

    arts, task_names = asyncio.run(fetch())
    assert arts, "the run summary is published as an artifact"
    ids = {r[0] for r in _q(runs["work"], "SELECT patient_id FROM instances WHERE patient_id IS NOT NULL")}
    surnames = {r[0].split("^")[0] for r in _q(runs["work"], "SELECT patient_name FROM instances WHERE patient_name IS NOT NULL")}
    text = "\n".join(arts) + "\n".join(task_names)
    assert "files swept" in text
    assert not [i for i in ids if i in text]
    assert not [s for s in surnames if len(s) > 2 and s in text]


def test_a_woman_with_several_studies_is_listed_once_from_her_latest(runs, tiny_model):
    from osteo_batch.store import Store

    with Store(runs["work"] / "osteo.duckdb", read_only=True) as st:
        cands = st.rows("worklist", {"model_id": tiny_model.model_id, "as_of": __import__("datetime").date.today()})
        latest = dict(st.con.execute(
            "SELECT patient_id, max(study_date) FROM instances WHERE status = 'scored' GROUP BY 1").fetchall())
        several = {r[0] for r in st.con.execute(
            "SELECT patient_id FROM instances WHERE status = 'scored' GROUP BY 1 HAVING count(DISTINCT study_date) > 1").fetchall()}
    assert several, "the test cohort has follow-up studies"
    assert len(cands) == len({c["patient_id"] for c in cands}) == len(latest)
    assert all(c["study_date"] == latest[c["patient_id"]] for c in cands)


def test_a_shard_written_but_never_loaded_is_loaded_by_the_next_run(tmp_path, cohort_dir, tiny_model):
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.score import load_scores, score_shard
    from osteo_batch.scoring.tensors import Item

    model = load_model_dir(tiny_model.model_dir)
    items = [Item(str(cohort_dir.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort_dir.plans[:5]]
    res = score_shard(model, items, out_dir=tmp_path / "scores", run_id="crashed")  # the loader never ran
    with Store(tmp_path / "osteo.duckdb") as st:
        assert load_scores(st, tmp_path / "scores").scored == res.scored == 5
        assert load_scores(st, tmp_path / "scores").scored == 0
        assert st.con.execute("SELECT count(*) FROM scores").fetchall()[0][0] == 5


def test_the_flow_run_logs_carry_progress_and_no_patient_data(runs):
    import asyncio

    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            return [log.message for log in await client.read_logs()]

    messages = asyncio.run(fetch())
    progress = [m for m in messages if m.startswith("scoring: ")]
    scored = runs["first"]["score"]["scored"]
    assert any(m.startswith(f"scoring: {scored}/{scored} images (100%)") and "images/s" in m for m in progress), progress
    assert any(m.startswith("heat maps: ") for m in messages)
    ids = {r[0] for r in _q(runs["work"], "SELECT patient_id FROM instances WHERE patient_id IS NOT NULL")}
    text = "\n".join(messages)
    assert not [i for i in ids if i in text], "no patient ID in any log line"
