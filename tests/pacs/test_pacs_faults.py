"""A PACS on a bad night, for real: answers cut at its limit, a server that stops mid-run, an instance deleted
between query and retrieve. Nothing is lost, and the next night catches up."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import duckdb
import pytest

import dicom_factory
from cli_run import cli, one_line_error
from osteo_batch.pacs.config import PacsSettings
from osteo_batch.pacs.connect import connect
from osteo_batch.pacs.sweep import sweep_pacs
from osteo_batch.run.context import RunContext
from osteo_batch.run.shards import score_stage
from osteo_batch.run.stages import sweep_stage
from osteo_batch.settings import load_settings
from osteo_batch.store import Store

DAY0 = dt.date(2025, 3, 1)


def _studies(folder: Path, n: int, *, step_days: int = 1, prefix: str = "2.25.77") -> list[Path]:
    """``n`` one-image studies of eligible women, one a day from DAY0."""
    out = []
    for k in range(n):
        ds = dicom_factory.dataset(sop_instance_uid=f"{prefix}{k}1", study_instance_uid=f"{prefix}{k}2",
                                   series_instance_uid=f"{prefix}{k}3", patient_id=f"PF{k:03d}",
                                   study_date=(DAY0 + dt.timedelta(days=k * step_days)).strftime("%Y%m%d"))
        out.append(dicom_factory.write(ds, folder / f"s{k}.dcm"))
    return out


def _urls(o) -> dict[str, str]:
    return {"dicomweb": o.dicomweb_url, "dimse": f"dimse://{o.aet}@127.0.0.1:{o.dicom_port}"}


def _rows(store_path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
@pytest.mark.parametrize("result_limit", [None, 3])
def test_a_window_at_the_limit_is_split(fresh_orthanc, tmp_path, protocol, result_limit):
    """Orthanc answers at most 3 studies per query. With query_limit 3, or with a larger query limit and the
    PACS's limit declared ([pacs] result_limit), a 30-day window of 10 studies is split until none is cut."""
    o = fresh_orthanc(limit_find_results=3, limit_find_instances=3)
    assert o.upload(_studies(tmp_path / "in", 10))["accepted"] == 10
    pacs = PacsSettings(_urls(o)[protocol], since=DAY0, window_days=30, lookback_days=0,
                        query_limit=3 if result_limit is None else 500, result_limit=result_limit)
    client = connect(pacs)
    try:
        with Store(tmp_path / "osteo.duckdb") as st:
            res, out = sweep_pacs(st, client, pacs, run_id="r1", run_date=DAY0 + dt.timedelta(days=29))
    finally:
        client.close()
    assert out.studies_listed == 10 and res.counts.get("pending") == 10
    assert out.stopped is None and out.complete_through == (DAY0 + dt.timedelta(days=29)).isoformat()


def test_orthanc_stopped_mid_sweep_then_started_again(fresh_orthanc, tmp_path, caplog):
    """The PACS dies after the first window: that window is kept, the checkpoint stays there, the night goes
    on; with the PACS back, the next night picks up every study after it."""
    o = fresh_orthanc()
    o.upload(_studies(tmp_path / "in", 6, step_days=10))  # one study every 10 days: 6 windows of 10 days
    pacs = PacsSettings(o.dicomweb_url, since=DAY0, window_days=10, lookback_days=0, overlap_days=0)
    run_date = DAY0 + dt.timedelta(days=59)

    def kill_after_first(done: int, total: int) -> None:
        if done == 1:
            o.kill()

    with Store(tmp_path / "osteo.duckdb") as st:
        client = connect(pacs)
        res, out = sweep_pacs(st, client, pacs, run_id="r1", run_date=run_date, progress=kill_after_first)
        client.close()
        assert out.windows_done == 1 and out.stopped and "\n" not in out.stopped
        assert "2.25.77" not in out.stopped  # no UID in the message
        assert out.complete_through == (DAY0 + dt.timedelta(days=9)).isoformat()
        assert res.counts == {"pending": 1}
        o.start()
        client = connect(pacs)
        res, out = sweep_pacs(st, client, pacs, run_id="r2", run_date=run_date)
        client.close()
    assert out.stopped is None and res.counts == {"pending": 6}
    assert out.date_from == (DAY0 + dt.timedelta(days=9)).isoformat()  # resumed where the complete query ended
    assert "2.25.77" not in caplog.text and "PF0" not in caplog.text  # no UID or ID in any log record


def test_pacs_down_is_one_line(fresh_orthanc, tmp_path):
    o = fresh_orthanc()
    o.kill()
    for url in _urls(o).values():
        p = cli("sweep", "--workdir", tmp_path / url[:5], "--pacs", url, "--since", "2025-01-01")
        line = one_line_error(p)
        assert "127.0.0.1" in line


@pytest.fixture
def night(tiny_model, tmp_path, fresh_orthanc):
    """A work folder over a fresh Orthanc holding 4 eligible studies, and the run context of the tiny model."""
    o = fresh_orthanc()
    o.upload(_studies(tmp_path / "in", 4))
    s = load_settings(None, workdir=tmp_path / "work", model_dir=Path(tiny_model.model_dir), workers=0,
                      pacs_url=o.dicomweb_url, since=DAY0)
    return o, s


def test_orthanc_stopped_before_scoring_then_started_again(night):
    """Retrieval fails for every pending instance (recorded, the run goes on); the next night scores them all."""
    o, s = night
    ctx = RunContext.for_model(s, "n1")
    sweep_stage(ctx)
    o.kill()
    out = score_stage(ctx)
    assert out["scored"] == 0
    reasons = _rows(s.store_path, "SELECT decode_reason, count(*) FROM instances GROUP BY ALL")
    assert reasons == [("retrieve_failed", 4)]
    o.start()
    ctx = RunContext.for_model(s, "n2")
    sweep_stage(ctx)
    assert score_stage(ctx)["scored"] == 4
    assert _rows(s.store_path, "SELECT status, count(*) FROM instances GROUP BY ALL") == [("scored", 4)]


def test_instance_deleted_between_query_and_retrieve(night):
    o, s = night
    ctx = RunContext.for_model(s, "n1")
    sweep_stage(ctx)
    o.delete_instance("2.25.7721")
    out = score_stage(ctx)
    assert out["scored"] == 3
    assert _rows(s.store_path, "SELECT reason FROM instances WHERE sop_instance_uid = '2.25.7721'") == [
        ("retrieve_gone",)]
    # the next night: the PACS no longer lists it, so its row goes; nothing else changes
    ctx = RunContext.for_model(dataclasses.replace(s), "n2")
    sweep = sweep_stage(ctx)
    assert sweep["vanished"] == 1
    assert _rows(s.store_path, "SELECT status, count(*) FROM instances GROUP BY ALL") == [("scored", 3)]


def test_outside_the_query_hours_the_pacs_is_left_alone(night):
    """[pacs] hours: outside them no query and no retrieval; what waits stays pending for the next night."""
    o, s = night
    now = dt.datetime.now()
    later = f"{(now + dt.timedelta(hours=2)).strftime('%H:%M')}-{(now + dt.timedelta(hours=3)).strftime('%H:%M')}"
    closed = dataclasses.replace(s, pacs=dataclasses.replace(s.pacs, hours=later))
    out = sweep_stage(RunContext.for_model(closed, "n0"))
    assert out["pacs"]["windows_done"] == 0 and "hours" in out["pacs"]["stopped"]
    sweep_stage(RunContext.for_model(s, "n1"))  # open: indexed
    scored = score_stage(RunContext.for_model(closed, "n2"))
    assert scored["scored"] == 0
    assert _rows(s.store_path, "SELECT status, count(*) FROM instances GROUP BY ALL") == [("pending", 4)]


def test_results_kept_for_a_pacs_that_is_down(night):
    """SRs that could not be stored are not lost: the next results stage sends them."""
    from osteo_batch.run.results import results_stage

    o, s = night
    s = dataclasses.replace(s, send_results=True, allow_phantom_results=True)
    ctx = RunContext.for_model(s, "n1")
    sweep_stage(ctx)
    assert score_stage(ctx)["scored"] == 4
    o.kill()
    down = results_stage(ctx)["sr"]
    assert down["sent"] == 0 and down["failed"] == 4
    o.start()
    back = results_stage(RunContext.for_model(s, "n2"))["sr"]
    assert back["sent"] == 4 and back["failed"] == 0


def test_credentials_reach_the_pacs_and_nothing_else(fresh_orthanc, tmp_path):
    """DICOMweb basic auth from the environment: the sweep works, and the password is nowhere we write."""
    import os
    import subprocess
    import sys

    secret = "s3cret-pw-91"
    o = fresh_orthanc(extra={"AuthenticationEnabled": True, "RegisteredUsers": {"osteo": secret}})
    o.upload(_studies(tmp_path / "in", 2))
    work = tmp_path / "work"
    env = {**os.environ, "OSTEO_PACS_CREDENTIALS": f"basic osteo:{secret}"}
    exe = str(Path(sys.executable).parent / "osteo-batch")
    p = subprocess.run([exe, "sweep", "--workdir", str(work), "--pacs", o.dicomweb_url, "--since", "2025-01-01"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "2 instances" in p.stdout
    assert secret not in p.stdout + p.stderr
    for f in work.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f.name
    # without them: refused, in one line, and the password is not what it names
    env.pop("OSTEO_PACS_CREDENTIALS")
    line = one_line_error(subprocess.run([exe, "sweep", "--workdir", str(tmp_path / "w2"), "--pacs", o.dicomweb_url,
                                          "--since", "2025-01-01"], capture_output=True, text=True, env=env,
                                         timeout=300))
    assert "401" in line or "credentials" in line


def test_a_pacs_that_never_answers_times_out_per_instance(tiny_model, silent_port, tmp_path):
    """A hung PACS (it accepts the connection, then says nothing): each instance is retrieve_timeout, in time."""
    import time

    import pyarrow.parquet as pq

    from osteo_batch.models.model import load_model_dir
    from osteo_batch.pacs.sweep import instance_uri
    from osteo_batch.scoring.score import ScoreOptions, score_shard
    from osteo_batch.scoring.tensors import Item

    pacs = PacsSettings(f"http://127.0.0.1:{silent_port}/dicom-web", timeout_s=1, parallel=2)
    items = [Item(instance_uri(pacs.display, f"2.25.1{k}", f"2.25.2{k}", f"2.25.3{k}"), f"2.25.3{k}", f"P{k}")
             for k in range(3)]
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    t = time.monotonic()
    res = score_shard(load_model_dir(tiny_model.model_dir), items, out_dir=tmp_path / "scores", run_id="hung",
                      opts=ScoreOptions(workers=0, pacs=pacs, spool_dir=str(spool)))
    assert time.monotonic() - t < 30
    assert res.scored == 0 and res.rejected == 3
    reasons = [r for f in res.parts for r in pq.read_table(f)["decode_reason"].to_pylist()]
    assert reasons == ["retrieve_timeout"] * 3


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_a_full_day_is_split_by_study_time(fresh_orthanc, tmp_path, protocol):
    """Six studies on one day and a PACS that answers 3 at most: the day is asked for by StudyTime ranges."""
    o = fresh_orthanc(limit_find_results=3, limit_find_instances=3)
    paths = []
    for k in range(6):
        ds = dicom_factory.dataset(sop_instance_uid=f"2.25.88{k}1", study_instance_uid=f"2.25.88{k}2",
                                   series_instance_uid=f"2.25.88{k}3", patient_id=f"PT{k:03d}",
                                   study_date=DAY0.strftime("%Y%m%d"))
        ds.StudyTime = f"{2 + 3 * k:02d}1500"
        paths.append(dicom_factory.write(ds, tmp_path / "in" / f"t{k}.dcm"))
    assert o.upload(paths)["accepted"] == 6
    pacs = PacsSettings(_urls(o)[protocol], since=DAY0, window_days=1, lookback_days=0, query_limit=3)
    client = connect(pacs)
    try:
        with Store(tmp_path / "osteo.duckdb") as st:
            res, out = sweep_pacs(st, client, pacs, run_id="r1", run_date=DAY0)
    finally:
        client.close()
    assert out.stopped is None and out.studies_listed == 6 and res.counts == {"pending": 6}


def test_a_folder_and_a_pacs_in_one_work_folder(night, tmp_path):
    """Each run plans and explains only its own source's rows; the other's wait, untouched."""
    o, s = night
    ctx = RunContext.for_model(s, "pacs-1")
    sweep_stage(ctx)
    score_stage(ctx)
    folder = tmp_path / "folder"
    _studies(folder, 2, prefix="2.25.66")
    fs = dataclasses.replace(s, pacs=None, archive=folder)
    fctx = RunContext.for_model(fs, "folder-1")
    sweep_stage(fctx)
    assert score_stage(fctx)["scored"] == 2  # the folder's two; no PACS row is retrieved or re-scored
    rows = _rows(s.store_path, "SELECT starts_with(path, 'http') AS pacs, status, count(*) FROM instances "
                               "GROUP BY ALL ORDER BY 1")
    assert rows == [(False, "scored", 2), (True, "scored", 4)]


def test_rules_that_widen_the_filters_ask_the_backlog_again(fresh_orthanc, tmp_path):
    """Night 1 asks for women only (the shipped rules); rules without a sex condition make night 2 ask again
    from the start, so the older studies of men are listed too, not only tonight's look-back."""
    from osteo_batch.archive.eligibility import parse_rules

    o = fresh_orthanc()
    women = _studies(tmp_path / "w", 2)
    men = []
    for k in range(2):
        ds = dicom_factory.dataset(sop_instance_uid=f"2.25.55{k}1", study_instance_uid=f"2.25.55{k}2",
                                   series_instance_uid=f"2.25.55{k}3", patient_id=f"PM{k:03d}", sex="M",
                                   study_date=DAY0.strftime("%Y%m%d"))
        men.append(dicom_factory.write(ds, tmp_path / "m" / f"m{k}.dcm"))
    o.upload(women + men)
    pacs = PacsSettings(o.dicomweb_url, since=DAY0, lookback_days=3, overlap_days=0)
    any_sex = parse_rules({"rule": [{"name": "all", "condition": [
        {"name": "modality", "keyword": "Modality", "in": ["CR", "DX"]}]}]}, "test")
    today = DAY0 + dt.timedelta(days=400)
    with Store(tmp_path / "osteo.duckdb") as st:
        client = connect(pacs)
        try:
            first, _ = sweep_pacs(st, client, pacs, run_id="r1", run_date=today)
            second, out = sweep_pacs(st, client, dataclasses.replace(pacs, since=None), run_id="r2", run_date=today,
                                     rules=any_sex)
        finally:
            client.close()
    assert first.files == 2 and second.files == 4
    assert out.date_from == DAY0.isoformat()
