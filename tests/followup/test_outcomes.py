"""Outcome matching: DXAs matched to flags, and uptake, yield and time to DXA counted exactly as by hand.

On a private copy of the shared real run ``night1`` (see tests/followup_store.py),
to which the test adds an early run, DXAs and coordinators' actions.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics

import pytest

from osteo_batch import pipeline
from osteo_batch.store import Store

from cli_run import cli
from followup_store import private_copy


@pytest.fixture
def run(followup_night, tmp_path_factory):
    """``night1``'s settings over a copy of its work folder, and its summary."""
    return private_copy(followup_night, tmp_path_factory.mktemp("outcomes")), followup_night.summary


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
        # any other action in the store (from the day of the flag on) counts as acted on too
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

