"""An estimate of a PACS backlog (a real Orthanc over DICOMweb): retrieved into a temporary spool, nothing kept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from osteo_batch.store import Store

def _hours(start_h: float, length_h: float) -> str:
    """[pacs] hours of ``length_h`` starting ``start_h`` hours from now (local time)."""
    now = dt.datetime.now()
    a, b = now + dt.timedelta(hours=start_h), now + dt.timedelta(hours=start_h + length_h)
    return f"{a:%H:%M}-{b:%H:%M}"


def test_outside_the_pacs_hours_the_estimate_retrieves_nothing(tmp_path, tiny_model):
    from osteo_batch.estimate.run import OutsidePacsHoursError, run_estimate
    from osteo_batch.pacs.config import PacsSettings
    from osteo_batch.settings import load_settings

    pacs = PacsSettings("http://127.0.0.1:9/dicom-web", since=dt.date(2024, 1, 1), hours=_hours(2, 3))
    s = load_settings(None, workdir=tmp_path / "work", model_dir=tiny_model.model_dir, pacs=pacs)
    with pytest.raises(OutsidePacsHoursError, match=r"may be queried only at \d\d:\d\d-\d\d:\d\d"):
        run_estimate(s)
    assert not s.store_path.exists()


@pytest.mark.slow  # an Orthanc, an upload and a sample retrieved over HTTP
def test_a_pacs_estimate_retrieves_its_sample_into_a_spool_of_its_own(cohort_dir, tiny_model, tmp_path):
    from orthanc_server import Orthanc

    from osteo_batch.estimate.run import run_estimate
    from osteo_batch.estimate.table import render
    from osteo_batch.pacs.config import PacsSettings
    from osteo_batch.settings import load_settings

    since = min(dt.date.fromisoformat(f"{p.study_date[:4]}-{p.study_date[4:6]}-{p.study_date[6:]}")
                for p in cohort_dir.plans)
    with Orthanc() as orthanc:
        orthanc.upload(sorted(p for p in Path(cohort_dir.archive).rglob("*") if p.is_file()))
        pacs = PacsSettings(orthanc.dicomweb_url, since=since, spool_max=5, hours=_hours(-1, 10.5))
        s = load_settings(None, workdir=tmp_path / "work", model_dir=tiny_model.model_dir, workers=1, batch_size=4,
                          pacs=pacs)
        est = run_estimate(s, sample=10, heatmaps=3, cores=4, shards=2)
    m, p = est.measured, est.projection
    assert est.source_kind == "dicomweb" and m.sample_size == 10 and m.scored == 10
    assert m.heatmaps is not None and m.heatmap_s > 0 and m.decode_core_ips > 0
    assert p.window_hours == 10.5, "the window is [pacs] hours' length when no --window-hours is given"
    with Store(s.store_path, read_only=True) as st:
        mean = st.con.execute("SELECT avg(size) FROM instances WHERE status = 'pending'").fetchall()[0][0]
        assert st.scalar("count_scores") == 0
        row = st.con.execute("SELECT source_kind, spool_bytes, backlog FROM estimates").fetchall()
    assert row == [("dicomweb", int(5 * mean), m.backlog)] and p.spool_bytes == int(5 * mean)
    text = render(est)
    assert "([pacs] spool_max × the mean instance)" in text and "127.0.0.1" not in text
    work = s.workdir
    assert not list(work.glob("estimate-tmp-*")) and not (work / "spool").exists() and not (work / "scores").exists()
