"""DicomwebClient against a real Orthanc (DICOMweb plugin): QIDO-RS filters and limits, WADO-RS headers and
files as stored, STOW-RS, faults as typed one-line errors without UIDs, and nothing of the URLs in the logs."""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import threading

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

import dicom_factory
from osteo_batch.pacs.client import PacsError, PacsLimitError, RetrieveError, StudyQuery
from osteo_batch.pacs.credentials import Credentials
from osteo_batch.pacs.dicomweb import DicomwebClient, PacsUrlError, display_url

YEAR_2025 = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
ALL_YEARS = (dt.date(2020, 1, 1), dt.date(2026, 12, 31))


@pytest.fixture
def client(orthanc):
    with DicomwebClient(orthanc.dicomweb_url) as c:
        yield c


def uids(hits):
    return sorted(h.study_instance_uid for h in hits)


def test_find_studies_by_date_window(client, pacs_cohort):
    c = pacs_cohort
    assert uids(client.find_studies(StudyQuery(*YEAR_2025))) == [c.study_a, c.study_b]
    (hit,) = client.find_studies(StudyQuery(dt.date(2025, 6, 1), dt.date(2025, 6, 1)))
    assert (hit.study_instance_uid, hit.study_date, hit.n_instances) == (c.study_a, dt.date(2025, 6, 1), 3)
    assert client.find_studies(StudyQuery(dt.date(2023, 1, 1), dt.date(2023, 12, 31))) == []


def test_find_studies_by_modality_and_sex(client, pacs_cohort):
    c = pacs_cohort
    assert uids(client.find_studies(StudyQuery(*ALL_YEARS, modality="CR"))) == [c.study_b, c.study_c]
    assert uids(client.find_studies(StudyQuery(*ALL_YEARS, modality="DX"))) == [c.study_a]
    assert uids(client.find_studies(StudyQuery(*ALL_YEARS, sex="M"))) == [c.study_b]
    assert uids(client.find_studies(StudyQuery(*ALL_YEARS, sex="F", modality="CR"))) == [c.study_c]


def test_limit_truncates_visibly(client):
    assert len(client.find_studies(StudyQuery(*ALL_YEARS, limit=2))) == 2
    assert len(client.find_studies(StudyQuery(*ALL_YEARS, limit=1))) == 1


def test_orthanc_cuts_qido_silently_so_a_known_limit_raises(limited_orthanc):
    """Orthanc's LimitFindResults (2) cuts QIDO-RS without a Warning: 3 of 3 answers look complete."""
    with DicomwebClient(limited_orthanc.dicomweb_url) as c:
        assert len(c.find_studies(StudyQuery(*ALL_YEARS, limit=10))) < 3 + 1
    with DicomwebClient(limited_orthanc.dicomweb_url, result_limit=2) as c:
        with pytest.raises(PacsLimitError, match="PACS's own limit") as e:
            c.find_studies(StudyQuery(*ALL_YEARS, limit=10))
        assert e.value.code == "pacs_result_limit"
        assert len(c.find_studies(StudyQuery(*ALL_YEARS, limit=2))) == 2  # at our limit: the caller splits


def test_study_instances_are_headers_without_bulk_data(client, pacs_cohort):
    got = {ds.SOPInstanceUID: ds for ds in client.study_instances(pacs_cohort.study_a)}
    want = pacs_cohort.of(pacs_cohort.study_a)
    assert sorted(got) == sorted(i.sop for i in want)
    for i in want:
        ds = got[i.sop]
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (i.study, i.series)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
        assert (ds.Rows, ds.Columns, ds.BitsStored, ds.PatientSex, ds.ViewPosition) == (64, 64, 12, "F", "PA")
        assert "PixelData" not in ds
        # Orthanc lists native Pixel Data as a BulkDataURI and leaves encapsulated (JPEG 2000) Pixel Data out.
        assert ds.osteo_has_pixel_data is (None if i.transfer_syntax == JPEG2000Lossless else True)
    assert client.study_instances("2.25.999999") == []


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", JPEG2000Lossless])
def test_retrieve_writes_the_instance_as_stored(client, pacs_cohort, tmp_path, syntax):
    i = pacs_cohort.by_syntax(syntax)
    dest = tmp_path / "spool" / "x.dcm"
    client.retrieve(i.study, i.series, i.sop, dest)
    ds = pydicom.dcmread(dest)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert (ds.pixel_array == i.pixels).all()
    assert dest.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in dest.parent.iterdir()] == ["x.dcm"]  # no temporary file left


def test_retrieve_of_a_deleted_instance_is_gone(client, orthanc, make_instance, tmp_path):
    i = make_instance(sop="2.25.9801", study="2.25.9800", series="2.25.98001", study_date="20190101")
    assert orthanc.upload([i.path])["accepted"] == 1
    orthanc.delete_instance(i.sop)
    with pytest.raises(RetrieveError) as e:
        client.retrieve(i.study, i.series, i.sop, tmp_path / "gone.dcm")
    assert e.value.reason == "retrieve_gone"
    assert not (tmp_path / "gone.dcm").exists()


def test_store_makes_it_findable_and_is_idempotent(client, orthanc):
    ds = dicom_factory.dataset(sop_instance_uid="2.25.9701", study_instance_uid="2.25.9700",
                               series_instance_uid="2.25.97001", study_date="20190301")
    before = orthanc.instance_count()
    client.store([ds])
    client.store([ds])
    assert orthanc.instance_count() == before + 1
    (hit,) = client.find_studies(StudyQuery(dt.date(2019, 3, 1), dt.date(2019, 3, 1)))
    assert hit.study_instance_uid == "2.25.9700"


def test_stopped_pacs_is_a_one_line_pacs_error_without_uids(fresh_orthanc, pacs_cohort, tmp_path):
    o = fresh_orthanc(dicomweb=True)
    i = pacs_cohort.instances[0]
    o.upload([i.path])
    c = DicomwebClient(o.dicomweb_url, timeout_s=5)
    o.kill()  # the PACS crashed
    for call in (c.echo, lambda: c.find_studies(StudyQuery(*ALL_YEARS)), lambda: c.study_instances(i.study),
                 lambda: c.store([pydicom.dcmread(i.path)])):
        with pytest.raises(PacsError, match="could not be reached") as e:
            call()
        msg = e.value.line()
        assert "\n" not in msg and "2.25." not in msg and o.dicomweb_url in msg
        assert e.value.code == "pacs_unreachable"
    with pytest.raises(RetrieveError) as r:
        c.retrieve(i.study, i.series, i.sop, tmp_path / "x.dcm")
    assert r.value.reason == "retrieve_failed" and "2.25." not in str(r.value)
    o.start()  # the PACS came back: same port, same storage
    assert uids(c.find_studies(StudyQuery(*ALL_YEARS))) == [i.study]


def test_basic_and_bearer_credentials_reach_the_pacs(fresh_orthanc):
    o = fresh_orthanc(extra={"AuthenticationEnabled": True, "RegisteredUsers": {"alice": "s3cr:et"}})
    with DicomwebClient(o.dicomweb_url, Credentials(username="alice", password="s3cr:et")) as c:
        c.echo()
    for wrong in (Credentials(username="alice", password="nope"), Credentials(token="abc"), None):
        with DicomwebClient(o.dicomweb_url, wrong) as c:
            with pytest.raises(PacsError, match="answered HTTP 401") as e:
                c.echo()
            assert "nope" not in e.value.line() and "s3cr" not in e.value.line()


def test_credentials_never_in_the_url():
    with pytest.raises(PacsUrlError, match="holds credentials") as e:
        DicomwebClient("http://alice:s3cret@127.0.0.1:1/dicom-web")
    assert "s3cret" not in e.value.line() and "alice" not in e.value.line()
    assert display_url("https://u:p@pacs.example:8443/dicom-web/") == "https://pacs.example:8443/dicom-web"
    with pytest.raises(PacsUrlError):
        DicomwebClient("ftp://127.0.0.1/dicom-web")


def test_a_hung_pacs_times_out(silent_port, tmp_path):
    c = DicomwebClient(f"http://127.0.0.1:{silent_port}/dicom-web", timeout_s=0.3)
    with pytest.raises(PacsError, match="did not answer within 0.3 s"):
        c.find_studies(StudyQuery(*ALL_YEARS))
    with pytest.raises(RetrieveError) as e:
        c.retrieve("2.25.1", "2.25.2", "2.25.3", tmp_path / "x.dcm")
    assert e.value.reason == "retrieve_timeout"


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_http_5xx_is_a_pacs_error_and_a_failed_retrieve(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        c = DicomwebClient(f"http://127.0.0.1:{server.server_port}/dicom-web", timeout_s=5)
        with pytest.raises(PacsError, match="answered HTTP 503"):  # at once: the library's retries are off
            c.find_studies(StudyQuery(*ALL_YEARS))
        with pytest.raises(RetrieveError) as e:
            c.retrieve("2.25.1", "2.25.2", "2.25.3", tmp_path / "x.dcm")
        assert (e.value.reason, e.value.detail) == ("retrieve_failed", "HTTP 503")
    finally:
        server.shutdown()
        server.server_close()


def test_no_uid_reaches_the_logs(client, pacs_cohort, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    i = pacs_cohort.by_syntax(JPEG2000Lossless)
    client.find_studies(StudyQuery(*ALL_YEARS))
    client.study_instances(i.study)
    client.retrieve(i.study, i.series, i.sop, tmp_path / "x.dcm")
    text = caplog.text + "".join(capfd.readouterr())
    assert "2.25.9" not in text and "/studies/" not in text
