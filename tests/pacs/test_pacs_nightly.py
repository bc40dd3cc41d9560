"""The same synthetic archive, from a folder and from a real Orthanc over DICOMweb and DIMSE: same verdicts, same scores.

Orthanc refuses empty and non-DICOM files and keeps one copy of a repeated
SOP Instance UID, so those are compared by count; every instance it accepted
must get the status and reason its file got, and the same score within 1e-6.
Then a second night adds nothing, and a study uploaded after the first night
is the only one the second night scores.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from osteo_batch.pacs.config import PacsSettings
from osteo_batch.run.nightly import run_nightly
from osteo_batch.settings import load_settings

pytestmark = pytest.mark.slow


def _verdicts(store: Path, leave_out: frozenset[str] = frozenset()) -> dict[str, tuple[str, str | None]]:
    """(status, reason) per SOP Instance UID, but for copies of a UID and the files in ``leave_out``."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute("SELECT path, sop_instance_uid, status, reason FROM instances "
                           "WHERE sop_instance_uid IS NOT NULL AND status <> 'duplicate'").fetchall()
    finally:
        con.close()
    out: dict[str, tuple[str, str | None]] = {}
    for path, u, s, r in rows:
        if path in leave_out:
            continue
        assert u not in out, "two rows hold one UID"
        out[u] = (s, r)
    return out


def _scores(store: Path) -> dict[str, float]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return dict(con.execute("SELECT sop_instance_uid, score FROM scores").fetchall())
    finally:
        con.close()


def _count(store: Path, sql: str) -> int:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()[0][0]
    finally:
        con.close()


def _since(cohort) -> dt.date:
    return min(dt.date.fromisoformat(f"{p.study_date[:4]}-{p.study_date[4:6]}-{p.study_date[6:]}")
               for p in cohort.plans)


@pytest.fixture(scope="module")
def cohort_orthanc(cohort_dir, tmp_path_factory):
    """An Orthanc of this module's own (DICOMweb and DIMSE), holding nothing but what the tests upload."""
    from orthanc_server import Orthanc

    with Orthanc() as o:
        yield o


@pytest.fixture(scope="module")
def pacs_nights(cohort_dir, tiny_model, tmp_path_factory, cohort_orthanc):
    """One Orthanc holding the cohort; a night from the folder, one over DICOMweb, one over DIMSE."""
    orthanc = cohort_orthanc
    files = sorted(p for p in Path(cohort_dir.archive).rglob("*") if p.is_file())
    refused_paths = [str(f) for f in files if orthanc.upload([f])["refused"]]
    root = tmp_path_factory.mktemp("pacs-nights")
    model = Path(tiny_model.model_dir)
    since = _since(cohort_dir)
    out = {"orthanc": orthanc, "refused_paths": refused_paths, "plans": cohort_dir.plans, "files": len(files), "model": model, "since": since, "root": root}
    for name, kw in {
        "folder": {"archive": cohort_dir.archive},
        "dicomweb": {"pacs": PacsSettings(orthanc.dicomweb_url, since=since)},
        "dimse": {"pacs": PacsSettings(f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", since=since)},
    }.items():
        s = load_settings(None, workdir=root / name, model_dir=model, workers=1, precision="fp32", **kw)  # score for score
        out[name] = {"settings": s, "summary": run_nightly(s, f"night1-{name}")}
    return out


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_same_verdicts_and_scores_as_the_folder(pacs_nights, protocol):
    folder = pacs_nights["folder"]["settings"].store_path
    pacs = pacs_nights[protocol]["settings"].store_path
    refused_paths = frozenset(pacs_nights["refused_paths"])
    want, got = _verdicts(folder, refused_paths), _verdicts(pacs)
    refused = len(refused_paths)
    assert refused >= 1  # the cohort's empty and non-DICOM files
    # the PACS is asked only for what the rules could take (PatientSex F, Modality CR or DX): what it does
    # not list is exactly the folder's files that fail those, and every instance it lists has one row
    con = duckdb.connect(str(folder), read_only=True)
    try:
        filtered_out = {u for (u,) in con.execute(
            "SELECT sop_instance_uid FROM instances WHERE sop_instance_uid IS NOT NULL AND status <> 'duplicate' "
            "AND (sex IS DISTINCT FROM 'F' OR modality NOT IN ('CR', 'DX'))").fetchall()}
    finally:
        con.close()
    assert filtered_out and all(want[u][0] == "ineligible" for u in filtered_out)
    assert set(got) == set(want) - filtered_out
    assert len(got) == pacs_nights["orthanc"].instance_count() - len(filtered_out)
    assert _count(pacs, "SELECT count(*) FROM instances") == len(got)  # one row each, no copies
    diff = {u: (want[u], got[u]) for u in got if want[u] != got[u]}
    assert not diff, diff
    # the folder's rows Orthanc could not hold: files it refused (empty, not DICOM, ...) and copies of a UID
    n_folder_rows = _count(folder, "SELECT count(*) FROM instances")
    n_dupes = _count(folder, "SELECT count(*) FROM instances WHERE status = 'duplicate'")
    assert n_folder_rows == pacs_nights["orthanc"].instance_count() + n_dupes + refused
    # and the same header fields, names in Hangul included (UTF-8 over DIMSE too)
    cols = "patient_id, patient_name, sex, birth_date, age, study_date, accession_number, modality, view, body_part"
    fields = {}
    for name, store in (("folder", folder), ("pacs", pacs)):
        con = duckdb.connect(str(store), read_only=True)
        try:
            fields[name] = {r[0]: r[1:] for r in con.execute(
                f"SELECT sop_instance_uid, {cols} FROM instances WHERE status <> 'duplicate' "
                "AND read_reason IS NULL").fetchall()}
        finally:
            con.close()
    assert fields["pacs"] and all(fields["pacs"][u] == fields["folder"][u] for u in fields["pacs"])
    fs, ps = _scores(folder), _scores(pacs)
    assert ps and set(ps) == {u for u, (s, _) in got.items() if s == "scored"}
    worst = max(abs(fs[u] - ps[u]) for u in ps)
    assert worst <= 1e-6, worst
    # nothing retrieved is left behind: scored files went, flagged ones went after their heat map
    spool = pacs_nights[protocol]["settings"].workdir / "spool"
    assert not [p for p in spool.iterdir() if p.suffix in (".dcm", ".err")]
    assert oct(spool.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_heat_maps_for_the_flagged(pacs_nights, protocol):
    want = pacs_nights["folder"]["summary"]["explain"]
    got = pacs_nights[protocol]["summary"]["explain"]
    assert got["explained"] == want["explained"] and got["failed"] == 0


def test_run_page_says_what_the_pacs_was_asked(pacs_nights):
    summary = pacs_nights["dimse"]["summary"]
    html = Path(summary["run_page"]).read_text()
    assert 'id="pacs"' in html and summary["sweep"]["pacs"]["source"] in html
    assert 'id="results-fhir"' in html


def test_uri_rows_hold_no_patient_data(pacs_nights, cohort_dir):
    store = pacs_nights["dicomweb"]["settings"].store_path
    con = duckdb.connect(str(store), read_only=True)
    try:
        paths = [r[0] for r in con.execute("SELECT path FROM instances").fetchall()]
    finally:
        con.close()
    assert all(p.startswith(pacs_nights["orthanc"].dicomweb_url + "/studies/") for p in paths)
    ids = {p.patient_id for p in cohort_dir.plans} | {p.accession for p in cohort_dir.plans}
    assert not [p for p in paths if any(i in p for i in ids)]


def test_second_night_adds_only_the_new_study(pacs_nights, tmp_path):  # before any SR is sent
    """Night 2 over DICOMweb: nothing new is scored; then a new study arrives and is the only one scored."""
    import pydicom
    from pydicom.uid import generate_uid

    s = pacs_nights["dicomweb"]["settings"]
    held = _count(s.store_path, "SELECT count(*) FROM instances")
    again = run_nightly(s, "night2-dicomweb")
    assert again["score"]["scored"] == 0
    # tonight asked only for the last weeks (look-back), so the older rows were not listed: none vanished
    assert again["sweep"]["pacs"]["date_from"] > pacs_nights["since"].isoformat()
    assert again["sweep"]["vanished"] == 0 and _count(s.store_path, "SELECT count(*) FROM instances") == held
    assert again["sweep"]["pacs"]["studies_fetched"] == 0  # every study listed with its count: no metadata asked
    # a new study of an eligible woman, dated yesterday (inside tonight's look-back)
    store = s.store_path
    con = duckdb.connect(str(store), read_only=True)
    try:
        scored_path = con.execute("SELECT path FROM instances WHERE status = 'scored' LIMIT 1").fetchall()[0][0]
    finally:
        con.close()
    from osteo_batch.pacs.connect import connect
    from osteo_batch.pacs.sweep import uri_uids

    client = connect(s.pacs)
    try:
        client.retrieve(*uri_uids(scored_path), tmp_path / "template.dcm")
    finally:
        client.close()
    ds = pydicom.dcmread(tmp_path / "template.dcm")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d")
    new = tmp_path / "new.dcm"
    ds.save_as(new, enforce_file_format=True)
    assert pacs_nights["orthanc"].upload([new])["accepted"] == 1
    third = run_nightly(s, "night3-dicomweb")
    assert third["score"]["scored"] == 1
    assert third["sweep"]["pacs"]["studies_fetched"] == 1
    assert ds.SOPInstanceUID in _scores(store)
    pacs_nights.setdefault("new", []).append(ds.SOPInstanceUID)


def _sr_count(orthanc) -> int:
    from dicomweb_client.api import DICOMwebClient

    return len(DICOMwebClient(orthanc.dicomweb_url).search_for_instances(search_filters={"Modality": "SR"}))


def test_fhir_bundle_of_the_night(pacs_nights):
    import json
    import stat

    from fhir.resources.R4B.bundle import Bundle

    s, summary = pacs_nights["dicomweb"]["settings"], pacs_nights["dicomweb"]["summary"]
    path = Path(summary["results"]["fhir_bundle"])
    assert path == s.workdir / "fhir" / "bundle-night1-dicomweb.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    bundle = Bundle.model_validate(json.loads(path.read_text()))
    ras = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "RiskAssessment"]
    assert bundle.type == "transaction" and len(ras) == summary["score"]["scored"] > 0
    con = duckdb.connect(str(s.store_path), read_only=True)
    try:
        night1 = {u for (u,) in con.execute("SELECT sop_instance_uid FROM scores WHERE run_id = 'night1-dicomweb'")
                  .fetchall()}
    finally:
        con.close()
    assert {r.identifier[0].value.split("/")[0] for r in ras} == night1


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_results_back_as_sr(pacs_nights, protocol, tmp_path):
    """SRs stored on Orthanc (STOW-RS / C-STORE), found by QIDO-RS, valid by dciodvfy, one per image and model."""
    import dataclasses
    import subprocess

    import duckdb as db

    from osteo_batch.run.context import RunContext
    from osteo_batch.run.results import PhantomResultsError, results_stage

    s = pacs_nights[protocol]["settings"]
    orthanc = pacs_nights["orthanc"]
    n_scored = len(_scores(s.store_path))
    ctx = RunContext.for_model(dataclasses.replace(s, send_results=True), f"sr-{protocol}")
    with pytest.raises(PhantomResultsError):  # the tiny model is trained on phantoms
        results_stage(ctx)
    ctx = RunContext.for_model(dataclasses.replace(s, send_results=True, allow_phantom_results=True), f"sr-{protocol}")
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        out = results_stage(ctx)["sr"]
    names = {p.patient_name for p in pacs_nights["plans"]}
    assert not [w for w in said if any(n in str(w.message) for n in names)]  # no name in a warning
    assert out["sent"] == n_scored and out["failed"] == 0
    sent = pacs_nights.setdefault("sent", set())
    sent |= set(_scores(s.store_path))
    assert _sr_count(orthanc) == len(sent)  # DIMSE after DICOMweb: the same UIDs, so still one per image
    # one of them, as Orthanc holds it, is a valid Comprehensive SR that names its image
    con = db.connect(str(s.store_path), read_only=True)
    try:
        sop, sr_uid = con.execute("SELECT r.sop_instance_uid, r.sr_instance_uid FROM results_sent r JOIN instances i "
                                  "USING (sop_instance_uid) ORDER BY regexp_matches(i.patient_name, '[가-힣]') DESC, 1 LIMIT 1"
                                  ).fetchall()[0]
        study, series, want_name = con.execute("SELECT study_instance_uid, series_instance_uid, patient_name "
                                               "FROM instances WHERE sop_instance_uid = ?", [sop]).fetchall()[0]
    finally:
        con.close()
    from dicomweb_client.api import DICOMwebClient

    web = DICOMwebClient(orthanc.dicomweb_url)
    found = web.search_for_instances(study, search_filters={"SOPInstanceUID": sr_uid})
    assert len(found) == 1
    sr = web.retrieve_instance(study, found[0]["0020000E"]["Value"][0], sr_uid)
    f = tmp_path / "sr.dcm"
    sr.save_as(f, enforce_file_format=True)
    check = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
    errors = [l for l in (check.stdout + check.stderr).splitlines() if l.startswith("Error")]
    assert not errors, errors
    assert str(sr.PatientName) == want_name  # the name as the image has it (UTF-8), not replacement characters
    assert sop in str(sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                      .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    # sent again (the record of it lost): still one SR per image and model on the PACS
    con = db.connect(str(s.store_path))
    try:
        con.execute("DELETE FROM results_sent")
    finally:
        con.close()
    again = results_stage(ctx)["sr"]
    assert again["sent"] == n_scored and _sr_count(orthanc) == len(sent)


def test_rerun_does_not_score_our_srs(pacs_nights, tmp_path):
    """A night from scratch over the PACS that now holds our SRs: each is listed, recognised by content
    (osteo_batch_result) and never scored; the images are scored as before."""
    n_sr = _sr_count(pacs_nights["orthanc"])
    assert n_sr > 0
    first = pacs_nights["dimse"]["settings"]
    s = load_settings(None, workdir=tmp_path / "again", model_dir=pacs_nights["model"], workers=1, pacs=first.pacs)
    summary = run_nightly(s, "again-dimse")
    assert summary["instances"]["by_reason"].get("osteo_batch_result") == n_sr
    folder_scored = len(_scores(pacs_nights["folder"]["settings"].store_path))
    assert summary["score"]["scored"] == folder_scored + len(pacs_nights.get("new", ()))
    sr_rows = _count(s.store_path, "SELECT count(*) FROM instances i JOIN scores s USING (sop_instance_uid) "
                                   "WHERE i.reason = 'osteo_batch_result'")
    assert sr_rows == 0
