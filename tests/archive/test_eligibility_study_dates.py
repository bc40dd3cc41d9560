"""Study dates no program should trust: after the run date, before 1900, or not a date.

Real DICOM files written with pydicom, real DuckDB stores, a real nightly run.
Such files are ``ineligible:study_date``, re-derived every night against the run
date (today in the archive's time zone), counted in the run summary, and listed
for the PACS administrator in a CSV beside the run page, without names.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import warnings
from pathlib import Path

import pytest

from osteo_batch import pipeline
from osteo_batch.store import Store
from osteo_batch.archive.sweep import sweep

from dicom_factory import dataset, write

UTC = dt.timezone.utc
NAMES = ("Zubrowska^Henrietta", "Quillfeather^Ottilie", "Vandermolen^Philippa", "Okonkwo^Theodora")


def _file(archive: Path, name: str, i: int, *, study_date: str, birth_date: str = "19500101", accession: str | None = None,
          raw_study_date: str | None = None, patient_age: str | None = None, rows: int = 64, cols: int = 48) -> Path:
    """One eligible-looking frontal chest film of a woman, except for what is given."""
    ds = dataset(sop_instance_uid=f"2.25.77{i:04d}", study_instance_uid=f"2.25.88{i:04d}",
                 series_instance_uid=f"2.25.99{i:04d}", patient_id=f"SD{i:04d}", patient_name=NAMES[i % len(NAMES)],
                 accession=accession or f"ACC{i:04d}", study_date=study_date, birth_date=birth_date,
                 rows=rows, cols=cols)
    if raw_study_date is not None:  # a StudyDate that is no date, and no other date to fall back on
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns that it is no DA; archives hold such files
            ds.StudyDate = raw_study_date
        del ds.SeriesDate
    if patient_age is not None:
        ds.PatientAge = patient_age
    return write(ds, archive / name)


def _reasons(store: Store) -> dict[str, tuple[str, str | None]]:
    rows = store.con.execute("SELECT path, status, reason FROM instances").fetchall()
    return {Path(p).name: (s, r) for p, s, r in rows}


def test_a_study_date_after_the_run_date_is_ineligible_study_date(tmp_path):
    archive = tmp_path / "archive"
    _file(archive, "today", 1, study_date="20260301")
    _file(archive, "tomorrow", 2, study_date="20260302")
    _file(archive, "far-future", 3, study_date="29990101")
    with Store(tmp_path / "osteo.duckdb") as st:
        res = sweep(st, archive, run_id="r1", run_date=dt.date(2026, 3, 1))
        got = _reasons(st)
        eligible = st.scalar("eligible_count")
    assert got["today"] == ("pending", "awaiting_score"), "a study dated on the run date is fine"
    assert got["tomorrow"] == ("ineligible", "ineligible:study_date")
    assert got["far-future"] == ("ineligible", "ineligible:study_date")
    assert eligible == 1 and res.conserved()


def test_a_study_date_before_1900_is_ineligible_study_date(tmp_path):
    archive = tmp_path / "archive"
    _file(archive, "1899", 1, study_date="18991231", birth_date="18300101")
    _file(archive, "1900", 2, study_date="19000101", birth_date="18300101")
    with Store(tmp_path / "osteo.duckdb") as st:
        sweep(st, archive, run_id="r1", run_date=dt.date(2026, 3, 1))
        got = _reasons(st)
    assert got["1899"] == ("ineligible", "ineligible:study_date")
    assert got["1900"] == ("pending", "awaiting_score"), "1 January 1900 is the earliest date trusted"


def test_an_unparseable_study_date_is_ineligible_study_date_even_with_a_patient_age(tmp_path):
    archive = tmp_path / "archive"
    # PatientAge alone would make her eligible; her StudyDate is not a date, so nothing dated can be trusted
    _file(archive, "garbled", 1, study_date="20250601", raw_study_date="2025-13-45", patient_age="070Y")
    _file(archive, "fine", 2, study_date="20250601", patient_age="070Y")
    with Store(tmp_path / "osteo.duckdb") as st:
        sweep(st, archive, run_id="r1", run_date=dt.date(2026, 3, 1))
        got = _reasons(st)
    assert got["garbled"] == ("ineligible", "ineligible:study_date")
    assert got["fine"] == ("pending", "awaiting_score")


def test_the_study_date_check_is_made_again_every_night(tmp_path):
    """Neither the file nor the rules change; only the run date moves."""
    archive = tmp_path / "archive"
    _file(archive, "march", 1, study_date="20260315")
    # a man: when his date arrives, the rules' verdict (ineligible:sex) comes back, not "eligible"
    write(dataset(sop_instance_uid="2.25.770009", patient_id="SD0009", sex="M", study_date="20260315"),
          archive / "man-in-march")
    with Store(tmp_path / "osteo.duckdb") as st:
        sweep(st, archive, run_id="r1", run_date=dt.date(2026, 3, 1))
        first = _reasons(st)
        second_run = sweep(st, archive, run_id="r2", run_date=dt.date(2026, 3, 15))
        second = _reasons(st)
        back = sweep(st, archive, run_id="r3", run_date=dt.date(2026, 3, 14))  # e.g. a corrected time zone
        third = _reasons(st)
    assert first["march"] == ("ineligible", "ineligible:study_date")
    assert first["man-in-march"] == ("ineligible", "ineligible:study_date")
    assert second_run.read == 0, "nothing was read again: the verdict is re-derived from the store"
    assert second["march"] == ("pending", "awaiting_score"), "its day has come: eligible"
    assert second["man-in-march"] == ("ineligible", "ineligible:sex")
    assert back.read == 0 and third["march"] == ("ineligible", "ineligible:study_date")


def test_the_run_date_is_today_in_the_archive_time_zone(tmp_path):
    noon_utc = dt.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert pipeline.Settings(workdir=tmp_path, timezone="Pacific/Kiritimati").run_date(noon_utc) == dt.date(2026, 1, 2)
    assert pipeline.Settings(workdir=tmp_path, timezone="Pacific/Pago_Pago").run_date(
        dt.datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) == dt.date(2025, 12, 31)
    late = dt.datetime(2026, 3, 1, 23, 30, tzinfo=UTC)  # half past midnight in Berlin
    cfg = tmp_path / "site.toml"
    cfg.write_text('[archive]\ntimezone = "Europe/Berlin"\n')
    s = pipeline.load_settings(cfg, workdir=tmp_path / "w")
    assert s.timezone == "Europe/Berlin" and s.run_date(late) == dt.date(2026, 3, 2)
    assert pipeline.load_settings(None, workdir=tmp_path / "w").run_date(late) == late.astimezone().date()


@pytest.mark.parametrize("value", ['"Europe/Berln"', '"Berlin"', '""', '"../etc/passwd"', '5', '"Europe"'])
def test_a_bad_time_zone_is_a_one_line_error(tmp_path, value):
    cfg = tmp_path / "site.toml"
    cfg.write_text(f"[archive]\ntimezone = {value}\n")
    with pytest.raises(pipeline.SettingsError) as e:
        pipeline.load_settings(cfg, workdir=tmp_path / "w")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config file site.toml: [archive] timezone = ") and "Europe/Berlin" in msg
    cfg.write_text('[archive]\ntime_zone = "UTC"\n')
    with pytest.raises(pipeline.SettingsError, match=r"unknown \[archive\] key 'time_zone'"):
        pipeline.load_settings(cfg, workdir=tmp_path / "w")


def test_the_cli_says_a_bad_time_zone_in_one_line(tmp_path):
    from cli_run import cli, one_line_error

    cfg = tmp_path / "site.toml"
    cfg.write_text('[archive]\ntimezone = "Mars/Olympus_Mons"\n')
    line = one_line_error(cli("sweep", "--archive", tmp_path, "--config", cfg, "--workdir", tmp_path / "w"))
    assert "'Mars/Olympus_Mons' is not an IANA time zone name" in line


# ------------------------------------------------------------------ a nightly run


@pytest.fixture(scope="module")
def night(tiny_model, tmp_path_factory):
    """A nightly run (threshold 0: everyone scored is listed) over two good films and three untrusted dates."""
    root = tmp_path_factory.mktemp("study-dates")
    archive = root / "archive"
    _file(archive, "good-1", 1, study_date="20250601", rows=96, cols=80)
    _file(archive, "good-2", 2, study_date="20240301", rows=96, cols=80)
    _file(archive, "future", 3, study_date="29991231", accession="=SUM(A1:A9)", rows=96, cols=80)
    _file(archive, "ancient", 4, study_date="18880101", birth_date="18200101", rows=96, cols=80)
    _file(archive, "garbled", 5, study_date="20250601", raw_study_date="+20250601", patient_age="070Y",
          rows=96, cols=80)
    cfg = root / "site.toml"
    cfg.write_text('[archive]\ntimezone = "Europe/Berlin"\n')
    s = pipeline.load_settings(cfg, workdir=root / "work", archive=archive, model_dir=tiny_model.model_dir,
                               threshold=0.0, workers=1)
    summary = pipeline.run_nightly(s, "night-sd")
    return s, summary


def test_untrusted_study_dates_are_counted_in_the_run_summary(night, capsys):
    s, summary = night
    assert summary["instances"]["by_reason"]["ineligible:study_date"] == 3
    assert summary["instances"]["eligible"] == 2 and summary["score"]["scored"] == 2
    sw = summary["sweep"]
    assert sw["study_dates"] == {"after_run_date": 1, "before_1900": 1, "unparseable": 1}
    assert sw["timezone"] == "Europe/Berlin" and sw["run_date"] == s.run_date().isoformat()
    with Store(s.store_path, read_only=True) as st:
        stored = json.loads(st.con.execute("SELECT summary FROM runs WHERE run_id = 'night-sd'").fetchall()[0][0])
        listed = {r[0] for r in st.con.execute("SELECT patient_id FROM worklist_entries").fetchall()}
    assert stored["sweep"]["study_dates"] == sw["study_dates"]
    assert listed == {"SD0001", "SD0002"}, "untrusted dates stay off the worklist"

    from osteo_batch.run.summary import summary_markdown

    md = summary_markdown(summary)  # the Prefect artifact
    assert "untrusted study dates (ineligible:study_date" in md
    assert "): 3 (1 after_run_date, 1 before_1900, 1 unparseable)" in md
    assert "`run-night-sd-study-dates.csv`" in md and "| ineligible:study_date | 3 |" in md

    html = Path(summary["run_page"]).read_text()
    assert '<span id="study-dates">3 left out' in html
    assert 'href="run-night-sd-study-dates.csv"' in html

    from osteo_batch.cli.run import print_run

    print_run(summary)
    out = capsys.readouterr().out
    assert "       3  ineligible:study_date" in out
    assert "untrusted study dates: 3 left out (1 after_run_date, 1 before_1900, 1 unparseable)" in out
    assert "study dates for the PACS administrator: " in out and out.count("run-night-sd-study-dates.csv") == 1


def test_the_csv_lists_accessions_for_the_pacs_administrator_without_names(night):
    s, summary = night
    path = Path(summary["sweep"]["study_dates_csv"])
    assert path == s.workdir / "runs" / "run-night-sd-study-dates.csv"
    assert path.parent == Path(summary["run_page"]).parent, "beside the run page"
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    text = path.read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["accession_number", "study_date", "sop_instance_uid", "reason", "problem"]
    got = {r["sop_instance_uid"]: r for r in rows}
    assert set(got) == {"2.25.770003", "2.25.770004", "2.25.770005"}
    assert got["2.25.770003"] == {"accession_number": "'=SUM(A1:A9)", "study_date": "2999-12-31",
                                  "sop_instance_uid": "2.25.770003", "reason": "ineligible:study_date",
                                  "problem": "after_run_date"}, "a formula is quoted, as on the worklist CSV"
    assert got["2.25.770004"]["accession_number"] == "ACC0004" and got["2.25.770004"]["study_date"] == "1888-01-01"
    assert got["2.25.770004"]["problem"] == "before_1900"
    assert got["2.25.770005"]["study_date"] == "'+20250601" and got["2.25.770005"]["problem"] == "unparseable"
    for name in NAMES:
        for part in name.split("^"):
            assert part not in text, "no patient names"
    assert "SD000" not in text, "no patient IDs either"
