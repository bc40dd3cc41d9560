"""Known osteoporosis or treatment keeps patients off the list; a bad row is recorded, never its content.

Against the shared real run ``night1`` (see tests/followup_store.py), whose
known-conditions file names three women without a DXA, one of them on a row
with a bad date, plus a row with no patient ID.
"""

from __future__ import annotations

from followup_store import q as _q


def test_known_conditions_leave_patients_out_and_bad_rows_are_recorded(followup_night):
    s, summary = followup_night.settings, followup_night.summary
    wl = summary["worklist"]
    assert wl["known_conditions"] == {"loaded": 2, "rejected": 2}  # no patient ID; "yesterday" is no date
    listed = {r[0] for r in _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1'")}
    rows = _q(s, "SELECT patient_id FROM known_conditions ORDER BY 1")
    known = {r[0] for r in rows}
    scored = {r[0] for r in _q(s, "SELECT DISTINCT patient_id FROM instances WHERE status = 'scored'")}
    assert len(known) == 2 and known <= scored and not listed & known
    assert wl["excluded"]["known_osteoporosis_or_treatment"] == 2
    third = _without_dxa_from_store(s, known, followup_night.without)
    assert third in listed, "the row with a bad date was rejected, so that patient stays on the list"
    reasons = {r[0] for r in _q(s, "SELECT reason FROM dxa_rejected WHERE source LIKE 'conditions-%'")}
    assert reasons == {"empty patient_id", "since is not a YYYY-MM-DD date"}


def _without_dxa_from_store(s, known: set[str], without: list[str]) -> str:
    got = _q(s, "SELECT source FROM dxa_rejected WHERE reason = 'since is not a YYYY-MM-DD date'")
    assert got
    # the fixture's third patient: scored, no DXA, not in known_conditions
    (pid,) = [p for p in without[:3] if p not in known]
    return pid
