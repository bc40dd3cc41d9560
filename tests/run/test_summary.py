"""The run page counts everything a night did, stage by stage, and shows no patient.

Against the shared real run ``night1`` (see tests/followup_store.py).
"""

from __future__ import annotations

from pathlib import Path

from followup_store import q as _q


def test_run_summary_page_counts_everything(followup_night):
    s, summary = followup_night.settings, followup_night.summary
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
