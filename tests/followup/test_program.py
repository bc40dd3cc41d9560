"""The monthly program report: the month's numbers, trends and score drift, counts and shares only.

On a private copy of the shared real run ``night1`` (see tests/followup_store.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cli_run import cli, one_line_error
from followup_store import private_copy, q as _q


@pytest.fixture
def run(followup_night, tmp_path_factory):
    """``night1``'s settings over a copy of its work folder, and its summary."""
    return private_copy(followup_night, tmp_path_factory.mktemp("program")), followup_night.summary


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
