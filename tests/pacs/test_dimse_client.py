"""DimseClient against a real Orthanc: C-FIND filters, our limit and Orthanc's, IMAGE-level keys (series by
series when cut short), C-GET as stored, C-STORE, faults as typed one-line errors, and silent logs."""

from __future__ import annotations

import datetime as dt
import logging

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

import dicom_factory
from osteo_batch.pacs.client import INSTANCE_KEYWORDS, PacsError, PacsLimitError, RetrieveError, StudyQuery
from osteo_batch.pacs.dimse import RETRIEVE_SOP_CLASSES, DimseClient, decodable_transfer_syntaxes

YEAR_2025 = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
ALL_YEARS = (dt.date(2020, 1, 1), dt.date(2026, 12, 31))


def dimse(o, **kw) -> DimseClient:
    return DimseClient("127.0.0.1", o.dicom_port, o.aet, **kw)


@pytest.fixture
def client(orthanc):
    with dimse(orthanc, timeout_s=10) as c:
        yield c


def uids(hits):
    return sorted(h.study_instance_uid for h in hits)


def test_echo_and_display_url(client, orthanc):
    client.echo()
    assert client.display_url == f"dicom://127.0.0.1:{orthanc.dicom_port}/ORTHANC"


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


def test_our_limit_cancels_and_truncates_visibly(client):
    assert len(client.find_studies(StudyQuery(*ALL_YEARS, limit=2))) == 2
    assert len(client.find_studies(StudyQuery(*ALL_YEARS, limit=1))) == 1
    assert len(client.find_studies(StudyQuery(*ALL_YEARS, limit=3))) == 3  # the association is fine after a cancel


def test_orthanc_limit_below_ours_raises(limited_orthanc):
    """Orthanc honours LimitFindResults for C-FIND and ends a cut answer with status 0xFE00 (Cancel)."""
    with dimse(limited_orthanc) as c:
        with pytest.raises(PacsLimitError, match="PACS's own limit of 2 answers, below the 10") as e:
            c.find_studies(StudyQuery(*ALL_YEARS, limit=10))
        assert e.value.returned == 2 and "2.25." not in e.value.line()
        assert len(c.find_studies(StudyQuery(*ALL_YEARS, limit=2))) == 2  # at our limit: the caller splits


def test_study_instances_have_the_keywords(client, pacs_cohort):
    got = {ds.SOPInstanceUID: ds for ds in client.study_instances(pacs_cohort.study_a)}
    want = pacs_cohort.of(pacs_cohort.study_a)
    assert sorted(got) == sorted(i.sop for i in want)
    for i in want:
        ds = got[i.sop]
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID) == (i.study, i.series,
                                                                              "1.2.840.10008.5.1.4.1.1.1.1")
        assert (ds.Rows, ds.Columns, ds.BitsStored, ds.PatientSex, ds.Modality, ds.ViewPosition) == (
            64, 64, 12, "F", "DX", "PA")
        assert (ds.PatientID, ds.StudyDate, ds.PhotometricInterpretation) == ("PA", "20250601", "MONOCHROME2")
        assert "QueryRetrieveLevel" not in ds and "AcquisitionDate" not in ds  # no empty (unknown) values
        assert ds.osteo_has_pixel_data is None
        assert set(e.keyword for e in ds) <= set(INSTANCE_KEYWORDS) | {"SpecificCharacterSet"}
    assert client.study_instances("2.25.999999") == []


def test_study_instances_series_by_series_past_orthanc_limit(limited_orthanc, pacs_cohort):
    """LimitFindInstances 2 cuts the study's 3 instances (status 0xFE00); its 2 series hold 2 and 1."""
    with dimse(limited_orthanc) as c:
        got = sorted(ds.SOPInstanceUID for ds in c.study_instances(pacs_cohort.study_a))
    assert got == sorted(i.sop for i in pacs_cohort.of(pacs_cohort.study_a))


def test_known_result_limit_splits_by_series_too(client, pacs_cohort):
    """For a PACS that cuts without saying so: reaching ``result_limit`` counts as cut."""
    c = DimseClient("127.0.0.1", client.port, client.called_aet, result_limit=3)
    assert len(c.study_instances(pacs_cohort.study_a)) == 3
    c = DimseClient("127.0.0.1", client.port, client.called_aet, result_limit=2)
    with pytest.raises(PacsLimitError, match="a series holds more instances"):
        c.study_instances(pacs_cohort.study_a)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", JPEG2000Lossless])
def test_retrieve_writes_the_instance_as_stored(client, pacs_cohort, tmp_path, syntax):
    i = pacs_cohort.by_syntax(syntax)
    dest = tmp_path / "spool" / "x.dcm"
    client.retrieve(i.study, i.series, i.sop, dest)
    ds = pydicom.dcmread(dest)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPInstanceUID == i.sop
    assert (ds.pixel_array == i.pixels).all()
    assert dest.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in dest.parent.iterdir()] == ["x.dcm"]


def test_retrieve_contexts_fit_one_association():
    syntaxes = decodable_transfer_syntaxes()
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201"} <= set(syntaxes)
    assert 1 + len(RETRIEVE_SOP_CLASSES) * len(syntaxes) <= 128


def test_retrieve_of_a_deleted_instance_is_gone(client, orthanc, make_instance, tmp_path):
    i = make_instance(sop="2.25.9811", study="2.25.9810", series="2.25.98101", study_date="20190101")
    assert orthanc.upload([i.path])["accepted"] == 1
    orthanc.delete_instance(i.sop)
    with pytest.raises(RetrieveError) as e:
        client.retrieve(i.study, i.series, i.sop, tmp_path / "gone.dcm")
    assert e.value.reason == "retrieve_gone" and "2.25." not in str(e.value)
    assert not (tmp_path / "gone.dcm").exists()


def test_store_makes_it_findable_and_is_idempotent(client, orthanc):
    ds = dicom_factory.dataset(sop_instance_uid="2.25.9711", study_instance_uid="2.25.9710",
                               series_instance_uid="2.25.97101", study_date="20190401")
    before = orthanc.instance_count()
    client.store([ds])
    client.store([ds])
    assert orthanc.instance_count() == before + 1
    (hit,) = client.find_studies(StudyQuery(dt.date(2019, 4, 1), dt.date(2019, 4, 1)))
    assert hit.study_instance_uid == "2.25.9710"


def test_refused_and_stopped_pacs_are_one_line_pacs_errors_without_uids(fresh_orthanc, pacs_cohort, tmp_path):
    o = fresh_orthanc(dicomweb=False, extra={"DicomCheckCalledAet": True})
    i = pacs_cohort.instances[0]
    o.upload([i.path])
    with pytest.raises(PacsError, match="rejected the association"):
        DimseClient("127.0.0.1", o.dicom_port, "NOT_ORTHANC", timeout_s=5).echo()
    c = dimse(o, timeout_s=5)
    c.echo()
    o.kill()  # the PACS crashed
    for call in (c.echo, lambda: c.find_studies(StudyQuery(*ALL_YEARS)), lambda: c.study_instances(i.study),
                 lambda: c.store([pydicom.dcmread(i.path)])):
        with pytest.raises(PacsError, match="could not be reached") as e:
            call()
        msg = e.value.line()
        assert "\n" not in msg and "2.25." not in msg and c.display_url in msg
    with pytest.raises(RetrieveError) as r:
        c.retrieve(i.study, i.series, i.sop, tmp_path / "x.dcm")
    assert r.value.reason == "retrieve_failed"
    o.start()  # the PACS came back: same port, same storage
    assert uids(c.find_studies(StudyQuery(*ALL_YEARS))) == [i.study]


def test_a_hung_pacs_times_out(silent_port, tmp_path):
    c = DimseClient("127.0.0.1", silent_port, "ORTHANC", timeout_s=0.3)
    with pytest.raises(PacsError, match="did not answer within 0.3 s"):
        c.find_studies(StudyQuery(*ALL_YEARS))
    with pytest.raises(RetrieveError) as e:
        c.retrieve("2.25.1", "2.25.2", "2.25.3", tmp_path / "x.dcm")
    assert e.value.reason == "retrieve_timeout"


def test_no_identifier_reaches_the_logs(client, pacs_cohort, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    i = pacs_cohort.by_syntax(JPEG2000Lossless)
    client.find_studies(StudyQuery(*ALL_YEARS))
    client.study_instances(i.study)
    client.retrieve(i.study, i.series, i.sop, tmp_path / "x.dcm")
    text = caplog.text + "".join(capfd.readouterr())
    assert "2.25.9" not in text and "PA" not in text.split()
