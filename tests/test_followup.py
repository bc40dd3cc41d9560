"""Referral tracking, exclusions, outcome matching and the program report, against real stores and runs."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from osteo_batch import pipeline
from osteo_batch.store import Store
from osteo_batch.followup.exclusions import Exclusions, exclusion_for

from cli_run import cli, one_line_error

TODAY = dt.date(2026, 11, 25)
_WITHOUT: list[str] = []


# ------------------------------------------------------------------ exclusions (pure)


@pytest.mark.parametrize("candidate,expected", [
    ({"last_dxa_date": TODAY - dt.timedelta(days=700), "last_dxa_t_min": -1.5}, "recent_dxa"),
    ({"last_dxa_date": TODAY - dt.timedelta(days=800), "last_dxa_t_min": -1.5}, None),
    ({"last_dxa_date": TODAY - dt.timedelta(days=400), "last_dxa_t_min": -2.2}, None),  # near the line: 1 year
    ({"last_dxa_date": TODAY - dt.timedelta(days=300), "last_dxa_t_min": -2.2}, "recent_dxa"),
    ({"last_dxa_date": TODAY - dt.timedelta(days=400), "last_dxa_t_min": -2.5}, "recent_dxa"),  # osteoporosis: 2 years
    ({"known_condition": "denosumab"}, "known_osteoporosis_or_treatment"),
    ({"referral_status": "referred", "referral_at": dt.datetime(2026, 8, 1, 9)}, "already_referred"),
    ({"referral_status": "referred", "referral_at": dt.datetime(2026, 4, 1, 9)}, None),  # 238 days > 180
    ({"referral_status": "declined", "referral_at": dt.datetime(2026, 1, 5, 9)}, "already_declined"),
    ({"referral_status": "unreachable", "referral_at": dt.datetime(2026, 8, 1, 9)}, None),  # 116 days > 90
    ({"referral_status": "unreachable", "referral_at": dt.datetime(2026, 10, 1, 9)}, "already_unreachable"),
    ({"referral_status": "dxa-done", "referral_at": dt.datetime(2026, 3, 1, 9)}, "dxa_done"),
    ({"referral_status": "contacted", "referral_at": dt.datetime(2026, 11, 20, 9)}, None),  # in progress: listed
    ({}, None),
])
def test_exclusion_rules(candidate, expected):
    assert exclusion_for(candidate, Exclusions(), TODAY) == expected


def test_exclusion_windows_are_configurable(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[worklist]\ndxa_lookback_days = 365\nunreachable_days = 200\nknown_conditions = "known.csv"\n'
                   '[sites]\n"Seoul Demo Hospital" = "Seoul"\n')
    s = pipeline.load_settings(cfg, workdir=tmp_path)
    rules = s.exclusions()
    assert rules.dxa_days == 365 and rules.referral_days["unreachable"] == 200
    assert s.known_conditions_csv == tmp_path / "known.csv" and s.sites == {"Seoul Demo Hospital": "Seoul"}
    assert exclusion_for({"last_dxa_date": TODAY - dt.timedelta(days=500), "last_dxa_t_min": -1.5}, rules, TODAY) is None
    cfg.write_text("[worklist]\nreferal_days = 3\n")
    with pytest.raises(pipeline.SettingsError, match="unknown \\[worklist\\] key 'referal_days'"):
        pipeline.load_settings(cfg, workdir=tmp_path)


# ------------------------------------------------------------------ a run to follow up


@pytest.fixture(scope="module")
def run(cohort_dir, tiny_model, tmp_path_factory):
    """A nightly run over the small cohort, listing everyone scored (threshold 0), with known conditions."""
    root = tmp_path_factory.mktemp("followup")
    known = root / "known.csv"
    _WITHOUT[:] = _without_dxa(cohort_dir)
    a, b, c = _WITHOUT[:3]
    known.write_text(f"patient_id,condition,since\n{a},alendronate,2025-01-02\n{b},osteoporosis,\n"
                     f",osteoporosis,\n{c},denosumab,yesterday\n")
    cfg = root / "run.toml"
    cfg.write_text(f'[worklist]\nknown_conditions = "{known}"\n[sites]\n"Riverside Clinic" = "Riverside"\n')
    s = pipeline.load_settings(cfg, workdir=root / "work", archive=cohort_dir.archive, model_dir=tiny_model.model_dir,
                               dxa_csv=cohort_dir.dxa_csv, threshold=0.0, workers=1)
    summary = pipeline.run_nightly(s, "night1")
    return s, summary


def _without_dxa(cohort_dir) -> list[str]:
    """Eligible women of the cohort with no DXA on file (so only a known condition can leave them out)."""
    import csv

    with open(cohort_dir.dxa_csv, newline="") as f:
        with_dxa = {r["patient_id"] for r in csv.DictReader(f)}
    pids = []
    for p in cohort_dir.plans:
        age = (dt.date.fromisoformat(p.study_date[:4] + "-" + p.study_date[4:6] + "-" + p.study_date[6:])
               - dt.date.fromisoformat(p.birth_date[:4] + "-" + p.birth_date[4:6] + "-" + p.birth_date[6:])).days / 365.25
        if p.sex == "F" and p.view in ("PA", "AP") and age >= 51 and p.patient_id not in with_dxa \
                and p.patient_id not in pids:
            pids.append(p.patient_id)
    assert len(pids) >= 3, "the cohort has women without a DXA"
    return pids


def _q(s, sql, params=None):
    with Store(s.store_path, read_only=True) as st:
        return st.con.execute(sql, params or []).fetchall()


def test_known_conditions_leave_patients_out_and_bad_rows_are_recorded(run):
    s, summary = run
    wl = summary["worklist"]
    assert wl["known_conditions"] == {"loaded": 2, "rejected": 2}  # no patient ID; "yesterday" is no date
    listed = {r[0] for r in _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1'")}
    rows = _q(s, "SELECT patient_id FROM known_conditions ORDER BY 1")
    known = {r[0] for r in rows}
    scored = {r[0] for r in _q(s, "SELECT DISTINCT patient_id FROM instances WHERE status = 'scored'")}
    assert len(known) == 2 and known <= scored and not listed & known
    assert wl["excluded"]["known_osteoporosis_or_treatment"] == 2
    third = _without_dxa_from_store(s, known)
    assert third in listed, "the row with a bad date was rejected, so that patient stays on the list"
    reasons = {r[0] for r in _q(s, "SELECT reason FROM dxa_rejected WHERE source LIKE 'conditions-%'")}
    assert reasons == {"empty patient_id", "since is not a YYYY-MM-DD date"}


def _without_dxa_from_store(s, known: set[str]) -> str:
    got = _q(s, "SELECT source FROM dxa_rejected WHERE reason = 'since is not a YYYY-MM-DD date'")
    assert got
    # the fixture's third patient: scored, no DXA, not in known_conditions
    (pid,) = [p for p in _WITHOUT[:3] if p not in known]
    return pid


def _recent(s) -> set[str]:
    """Patients the DXA rule removes first (it is checked before known conditions)."""
    rows = _q(s, """SELECT patient_id, max_by(least(t_lumbar_spine, t_femoral_neck, t_total_hip), exam_date),
                           max(exam_date) FROM dxa WHERE exam_date <= current_date GROUP BY 1""")
    today = dt.date.today()
    return {p for p, t, d in rows if (today - d).days <= (365 if t is not None and -2.49 <= t <= -2.0 else 730)}


def test_every_site_gets_its_own_page_and_csv(run):
    s, summary = run
    wl = summary["worklist"]
    pages = sorted((s.workdir / "worklists").glob("worklist-night1-site-*.html"))
    assert len(pages) == wl["site_pages"] == 2
    sites = dict(_q(s, "SELECT site, count(*) FROM worklist_entries WHERE run_id = 'night1' GROUP BY 1"))
    assert set(sites) == {"Seoul Demo Hospital", "Riverside"}, "InstitutionName, or its configured mapping"
    for page in pages:
        html = page.read_text()
        site = "Riverside" if "riverside" in page.name else "Seoul Demo Hospital"
        assert html.count('<tr data-rank=') == sites[site]
        assert "DXA confirms osteoporosis" in html
        csv_rows = page.with_suffix(".csv").read_text().strip().splitlines()
        assert len(csv_rows) == 1 + sites[site] and csv_rows[0].startswith("rank,patient_id,name,age")
        assert oct(page.stat().st_mode & 0o777) == "0o600"
    all_csv = Path(wl["csv"]).read_text().strip().splitlines()
    assert len(all_csv) == 1 + wl["listed"] == 1 + sum(sites.values())


def test_run_summary_page_counts_everything(run):
    s, summary = run
    page = Path(summary["run_page"])
    assert page.name == "run-night1.html" and oct(page.stat().st_mode & 0o777) == "0o600"
    html = page.read_text()
    inst = summary["instances"]
    assert inst["eligible"] >= inst["by_status"]["scored"] > 0
    for label, n in (("Eligible images", inst["eligible"]), ("Flagged patients", summary["worklist"]["flagged"])):
        assert f"<span>{label}</span><span>{n}" in html
    for stage in ("dxa", "sweep", "score", "explain", "worklist"):
        assert f"<td>{stage}</td>" in html
    names = {r[0] for r in _q(s, "SELECT patient_name FROM instances WHERE patient_name IS NOT NULL")}
    assert not any(n in html for n in names), "no patient data on the run page"


# ------------------------------------------------------------------ referrals


HOLD = textwrap.dedent("""
    import sys, time
    from osteo_batch.store import Store
    with Store(sys.argv[1]) as st:          # what a nightly run does: hold the store for writing
        st.con.execute("SELECT 1").fetchall()
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_referrals_are_append_only_and_the_next_list_reflects_them(run, tmp_path):
    s, _ = run
    pid = _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1' ORDER BY score DESC LIMIT 1")[0][0]
    for status, note in (("contacted", "left a message"), ("referred", "DXA booked for 2 Dec")):
        p = cli("refer", pid, "--status", status, "--note", note, "--by", "coordinator-a", "--workdir", s.workdir)
        assert p.returncode == 0 and p.stdout.startswith(f"recorded: {status} for {pid} by coordinator-a"), p.stderr
    rows = _q(s, "SELECT status, note, by_user FROM referrals WHERE patient_id = ? ORDER BY acted_at, recorded_at",
              [pid])
    assert rows == [("contacted", "left a message", "coordinator-a"), ("referred", "DXA booked for 2 Dec", "coordinator-a")]
    out = pipeline.worklist_stage(pipeline.RunContext.for_model(s, "night2"))
    assert out["excluded"].get("already_referred", 0) >= 1
    listed = {r[0] for r in _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night2'")}
    assert pid not in listed, "referred within 180 days: off tonight's list"
    assert "unrecognized" in one_line_error(cli("refer", pid, "--status", "referred", "--bogus", "--workdir", s.workdir))
    assert "invalid choice" in one_line_error(cli("refer", pid, "--status", "phoned", "--workdir", s.workdir))
    assert "no store" in one_line_error(cli("refer", pid, "--status", "referred", "--workdir", tmp_path / "none"))


def test_referrals_made_while_a_run_holds_the_store_are_queued_not_lost(run):
    s, _ = run
    pids = [r[0] for r in _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1' "
                                "ORDER BY score LIMIT 3")]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(s.store_path), "20"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        outs = [cli("refer", pid, "--status", "unreachable", "--note", "no answer", "--wait", "1",
                    "--workdir", s.workdir) for pid in pids]
    finally:
        holder.kill()
        holder.wait()
    for p in outs:
        assert p.returncode == 0 and p.stdout.startswith("queued: the store is held by a running nightly run"), p.stderr
    queue = sorted((s.workdir / "referral-queue").glob("*.json"))
    assert len(queue) == 3 and all(oct(f.stat().st_mode & 0o777) == "0o600" for f in queue)
    assert not any(pid in f.name for f in queue for pid in pids), "queue file names carry no patient ID"
    assert _q(s, "SELECT count(*) FROM referrals WHERE status = 'unreachable'")[0][0] == 0

    out = pipeline.worklist_stage(pipeline.RunContext.for_model(s, "night3"))  # the next night records them first, then lists
    assert out["referrals_from_queue"] == 3 and not list((s.workdir / "referral-queue").glob("*.json"))
    got = _q(s, "SELECT patient_id, note FROM referrals WHERE status = 'unreachable' ORDER BY patient_id")
    assert got == sorted((pid, "no answer") for pid in pids)
    assert out["excluded"].get("already_unreachable", 0) >= 3
    assert pipeline.worklist_stage(pipeline.RunContext.for_model(s, "night4"))["referrals_from_queue"] == 0, "recorded once"


def test_refer_waits_for_a_store_that_frees_up_and_says_it_recorded(run):
    s, _ = run
    pid = _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1' ORDER BY score LIMIT 1 OFFSET 5")[0][0]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(s.store_path), "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = cli("refer", pid, "--status", "contacted", "--wait", "60", "--workdir", s.workdir)
    finally:
        holder.wait(timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("recorded: contacted"), p.stdout + p.stderr
    assert "a nightly run holds the store; waiting up to 60 s" in p.stderr


# ------------------------------------------------------------------ outcomes


def test_outcomes_match_dxa_to_flags_exactly_as_counted_by_hand(run, tmp_path):
    """Known outcomes for the flagged women; uptake, yield and time to DXA as the tests count them."""
    from osteo_batch.followup import outcomes
    from osteo_batch.followup.referrals import new_referral, record

    s, _ = run
    flag_day = dt.date.today() - dt.timedelta(days=400)  # old enough to be out of follow-up
    with pipeline.open_store(s) as st:
        from osteo_batch.models.model import load_model_dir
        from osteo_batch.worklist import write_worklist

        m = load_model_dir(s.model_dir)
        write_worklist(st, workdir=tmp_path, run={"run_id": "0-early"}, model_id=m.model_id, threshold=0.0,
                       bands=m.config.bands, as_of=flag_day, sites=s.sites)
        flagged = st.con.execute("SELECT patient_id, site FROM worklist_entries WHERE run_id = '0-early' "
                                 "ORDER BY patient_id").fetchall()
    assert len(flagged) >= 12
    # the plan: (days after the flag, lowest T-score) for the first patients; the rest never come
    plan = [(30, -2.7), (45, -2.6), (60, -1.8), (75, -1.2), (90, -0.4), (120, 0.3), (400, -3.0)]
    rows = ["patient_id,exam_date,t_lumbar_spine,t_femoral_neck,t_total_hip"]
    for (pid, _), (days, t) in zip(flagged, plan):
        rows.append(f"{pid},{flag_day + dt.timedelta(days=days)},{t},{t + 0.4:.1f},")
    rows.append(f"{flagged[8][0]},{flag_day - dt.timedelta(days=30)},-2.9,,")  # before the flag: not an outcome
    new_dxa = tmp_path / "dxa-new.csv"
    new_dxa.write_text("\n".join(rows) + "\n")
    acted = [flagged[i][0] for i in (0, 2, 4, 9, 10)]  # coordinators reached these
    with pipeline.open_store(s) as st:
        record(st, [new_referral(p, "contacted", by_user="t", acted_at=dt.datetime.combine(flag_day, dt.time(10)))
                    for p in acted])

    p = cli("outcomes", "--workdir", s.workdir, "--dxa", new_dxa, "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)

    # by hand: every patient first flagged by 0-early counts in its group
    with Store(s.store_path, read_only=True) as st:
        first = dict(st.con.execute("SELECT patient_id, min(flagged_on) FROM worklist_entries GROUP BY 1").fetchall())
        # earlier tests in this module recorded actions too (today): each counts as acted on
        acted_all = {r[0] for r in st.con.execute(
            "SELECT DISTINCT patient_id FROM referrals WHERE CAST(acted_at AS DATE) >= ?", [flag_day]).fetchall()}
        dxa = st.con.execute("SELECT patient_id, exam_date, least(t_lumbar_spine, t_femoral_neck, t_total_hip) "
                             "FROM dxa ORDER BY exam_date").fetchall()
    mine = [pid for pid, _ in flagged if first[pid] == flag_day]
    assert mine == [pid for pid, _ in flagged], "everyone the early run listed was first flagged by it"
    # by hand: each patient's first DXA from the flag day to 365 days after it (the cohort's own DXAs count too)
    outcome: dict[str, tuple[int, float]] = {}
    for pid, day, t in dxa:
        if pid in mine and flag_day <= day <= flag_day + dt.timedelta(days=365) and pid not in outcome:
            outcome[pid] = ((day - flag_day).days, t)
    planted = dict(zip([pid for pid, _ in flagged], plan))
    for pid, (days, t) in planted.items():
        if days > 365:
            assert outcome.get(pid, (None, None))[0] != days, "a DXA 400 days after the flag is not an outcome"
    n, tested = len(mine), len(outcome)
    acted_mine = acted_all & set(mine)
    assert set(acted) <= acted_mine and tested >= 6
    low = sum(t <= -1.0 for _, t in outcome.values())
    osteo = sum(t <= -2.5 for _, t in outcome.values())
    early = next(o for o in res["by_run"] if o["key"] == "0-early")
    assert early["flagged"] == n and early["tested"] == tested and early["in_follow_up"] == 0
    assert early["uptake"] == pytest.approx(tested / n)
    assert early["acted_on"] == len(acted_mine)
    assert early["tested_acted_on"] == len(acted_mine & set(outcome))
    assert early["uptake_acted_on"] == pytest.approx(len(acted_mine & set(outcome)) / len(acted_mine))
    assert early["yield_low_bone_mass"] == pytest.approx(low / tested)
    assert early["yield_osteoporosis"] == pytest.approx(osteo / tested)
    assert early["median_days_to_dxa"] == pytest.approx(statistics.median(d for d, _ in outcome.values()))
    month = next(o for o in res["by_month"] if o["key"] == flag_day.strftime("%Y-%m"))
    assert month["flagged"] == n and month["tested"] == tested
    by_site = {o["key"]: o for o in res["by_site"]}
    for site in {site for _, site in flagged}:
        want = [pid for pid, st_ in flagged if st_ == site and first[pid] == flag_day]
        assert by_site[site]["flagged"] >= len(want)
    assert sum(o["flagged"] for o in res["by_site"]) == res["overall"]["flagged"] == len(first)
    assert sum(o["tested"] for o in res["by_site"]) == res["overall"]["tested"] >= tested
    # the same numbers from the library
    with Store(s.store_path, read_only=True) as st:
        lib = outcomes.compute(st)
    assert lib.to_json()["by_run"] == res["by_run"]
    # as known 50 days after the flag: only the DXAs done by then, the rest still in follow-up
    with Store(s.store_path, read_only=True) as st:
        then = outcomes.compute(st, as_of=flag_day + dt.timedelta(days=50))
    early_then = next(o for o in then.by_run if o.key == "0-early")
    by_then = sum(d <= 50 for d, _ in outcome.values())
    assert early_then.tested == by_then < tested and early_then.in_follow_up == n - by_then
    assert not any(o.key.startswith("night") for o in then.by_run), "runs after that day are not known yet"


def test_program_report_shows_the_months_numbers_trends_and_drift(run, tmp_path):
    s, _ = run
    for bad in ("2026-13", "../../etc", "Nov"):
        assert "not a month; use YYYY-MM" in one_line_error(cli("report", "--workdir", s.workdir, "--month", bad))
    assert not (s.workdir / "program").exists() or not list((s.workdir / "program").glob("*etc*"))
    p = cli("report", "--workdir", s.workdir, "--month", (dt.date.today() - dt.timedelta(days=400)).strftime("%Y-%m"))
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip().rsplit("report: ", 1)[1])
    assert path.parent.name == "program" and oct(path.stat().st_mode & 0o777) == "0o600"
    html = path.read_text()
    assert html.count("data:image/png;base64,") == 4, "uptake, yield, time to DXA, score drift"
    assert 'id="by-month"' in html and 'id="by-site"' in html and 'id="drift"' in html
    assert "DXA confirms osteoporosis" in html
    names = {r[0] for r in _q(s, "SELECT patient_name FROM instances WHERE patient_name IS NOT NULL")}
    ids = {r[0] for r in _q(s, "SELECT patient_id FROM instances WHERE patient_id IS NOT NULL")}
    assert not any(x in html for x in names | ids), "counts and shares only"
