"""Every site gets its own worklist page and CSV beside the full list, named by site and private (0600).

Against the shared real run ``night1`` (see tests/followup_store.py), which
maps the InstitutionName "Riverside Clinic" to the site "Riverside".
"""

from __future__ import annotations

from pathlib import Path

from followup_store import q as _q


def test_every_site_gets_its_own_page_and_csv(followup_night):
    s, summary = followup_night.settings, followup_night.summary
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
