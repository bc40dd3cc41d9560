"""The risk SR: valid by dciodvfy, derived UIDs, and every value read back from the content tree."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import replace

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage

import dicom_factory
from osteo_batch.errors import InternalError
from osteo_batch.results import DISCLAIMER
from osteo_batch.results.own import MANUFACTURER, SERIES_DESCRIPTION_SR, SR_MODEL_NAME
from osteo_batch.results.sr import SR_SERIES_NUMBER, ScoredResult, SRSourceError, build_sr, sr_series_uid, sr_uid

MODEL = "m-97f99f6bb40e048c"


@pytest.fixture()
def source(tmp_path):
    """The scored image's header as the archive gives it: read back from a file, without pixels."""
    path = dicom_factory.write(dicom_factory.dataset(), tmp_path / "src.dcm")
    return dcmread(path, stop_before_pixels=True)


def _result(source, **kw) -> ScoredResult:
    base = ScoredResult(sop_instance_uid=str(source.SOPInstanceUID), score=0.73, band="high", model_id=MODEL,
                        model_version="1.2.0", threshold=0.41, run_date=dt.date(2025, 6, 2))
    return replace(base, **kw)


def _written(sr, tmp_path, name="sr.dcm"):
    path = tmp_path / name
    sr.save_as(path, enforce_file_format=True)
    return path


def _dciodvfy(path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed: apt-get install dicom3tools")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).splitlines()


def _group(path):
    import highdicom as hd

    sr = hd.sr.ComprehensiveSR.from_dataset(dcmread(path))
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1
    return groups[0]


def _texts(group) -> dict[str, str]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
            for item in group[0].ContentSequence if item.ValueType == "TEXT"}


def test_sr_passes_dciodvfy_without_errors(source, tmp_path):
    path = _written(build_sr(source, _result(source)), tmp_path)
    lines = _dciodvfy(path)
    assert not [ln for ln in lines if ln.startswith("Error")], lines
    assert any("ComprehensiveSR" in ln for ln in lines), lines  # dciodvfy recognised the IOD it checked


def test_sr_from_a_sparse_header_still_validates(tmp_path):
    """Only the four UIDs: the Type 2 patient and study attributes come out empty, not missing."""
    bare = Dataset()
    bare.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    bare.SOPInstanceUID, bare.SeriesInstanceUID, bare.StudyInstanceUID = "2.25.11", "2.25.12", "2.25.13"
    bare.PatientSex = "U"  # not a value highdicom takes: left empty
    path = _written(build_sr(bare, _result(bare)), tmp_path)
    assert not [ln for ln in _dciodvfy(path) if ln.startswith("Error")]
    ds = dcmread(path)
    assert ds.PatientID == "" and ds.PatientName == "" and ds.PatientSex == ""
    assert "PatientSex" in bare and bare.PatientSex == "U" and "PatientID" not in bare  # the caller's header is untouched


def test_sr_uid_is_derived_from_image_and_model(source):
    a = build_sr(source, _result(source))
    b = build_sr(source, _result(source, score=0.2))
    assert a.SOPInstanceUID == b.SOPInstanceUID == sr_uid(source.SOPInstanceUID, MODEL)
    assert a.SeriesInstanceUID == sr_series_uid(source.StudyInstanceUID, MODEL)
    other = build_sr(source, _result(source, model_id="m-0123456789abcdef"))
    assert other.SOPInstanceUID != a.SOPInstanceUID and other.SeriesInstanceUID != a.SeriesInstanceUID
    assert sr_uid("2.25.1", MODEL) != sr_uid("2.25.2", MODEL)
    assert a.SOPInstanceUID.startswith("2.25.") and len(a.SOPInstanceUID) <= 64
    assert a.SOPInstanceUID not in (a.SeriesInstanceUID, source.SOPInstanceUID)


def test_sr_sits_in_the_source_study_in_its_own_series(source):
    sr = build_sr(source, _result(source))
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert (sr.PatientID, str(sr.PatientName), sr.AccessionNumber) == (
        source.PatientID, str(source.PatientName), source.AccessionNumber)
    assert sr.SeriesNumber == SR_SERIES_NUMBER and sr.SeriesDescription == SERIES_DESCRIPTION_SR
    assert sr.Manufacturer == MANUFACTURER and sr.ManufacturerModelName == SR_MODEL_NAME
    assert MODEL in list(sr.SoftwareVersions)
    assert str(sr.ContentDate) == "20250602" and sr.CompletionFlag == "COMPLETE"


def test_sr_holds_score_band_model_threshold_and_disclaimer(source, tmp_path):
    group = _group(_written(build_sr(source, _result(source)), tmp_path))
    values = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
    assert values == {"Probability": (pytest.approx(0.73), "1"), "Threshold Value": (pytest.approx(0.41), "1")}
    (band,) = group.get_qualitative_evaluations()
    assert (band.value.value, band.value.scheme_designator, band.value.meaning) == ("15508007", "SCT", "High risk")
    texts = _texts(group)
    assert texts["Algorithm Name"] == MODEL and texts["Algorithm Version"] == "1.2.0"
    assert texts["Comment"] == DISCLAIMER
    assert "Supersedes" not in texts
    assert group.finding_type.meaning == "Osteoporosis"


def test_a_band_without_a_snomed_code_keeps_its_text(source, tmp_path):
    group = _group(_written(build_sr(source, _result(source, band="very high")), tmp_path))
    (band,) = group.get_qualitative_evaluations()
    assert (band.value.value, band.value.scheme_designator, band.value.meaning) == ("VERYHIGH", "99OSTEOB", "very high")


def test_sr_references_the_source_image(source, tmp_path):
    path = _written(build_sr(source, _result(source)), tmp_path)
    (image,) = _group(path).source_images
    assert image.referenced_sop_instance_uid == source.SOPInstanceUID
    assert image.referenced_sop_class_uid == source.SOPClassUID
    (study,) = dcmread(path).CurrentRequestedProcedureEvidenceSequence
    (series,) = study.ReferencedSeriesSequence
    assert (study.StudyInstanceUID, series.SeriesInstanceUID) == (source.StudyInstanceUID, source.SeriesInstanceUID)
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_supersedes_goes_in_predecessor_documents_and_a_text_item(source, tmp_path):
    old = sr_uid(source.SOPInstanceUID, "m-old")
    old_series = sr_series_uid(source.StudyInstanceUID, "m-old")
    path = _written(build_sr(source, _result(source, supersedes=old, supersedes_series_uid=old_series)), tmp_path)
    assert not [ln for ln in _dciodvfy(path) if ln.startswith("Error")]
    ds = dcmread(path)
    (study,) = ds.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    assert (study.StudyInstanceUID, series.SeriesInstanceUID) == (source.StudyInstanceUID, old_series)
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old
    assert _texts(_group(path))["Supersedes"] == old


def test_supersedes_without_its_series_is_a_text_item_only(source, tmp_path):
    path = _written(build_sr(source, _result(source, supersedes="2.25.777")), tmp_path)
    assert "PredecessorDocumentsSequence" not in dcmread(path)
    assert _texts(_group(path))["Supersedes"] == "2.25.777"


def test_a_header_without_its_uids_is_refused_without_patient_data(source):
    del source.SeriesInstanceUID
    with pytest.raises(SRSourceError, match=r"no SeriesInstanceUID") as e:
        build_sr(source, _result(source))
    assert e.value.code == "sr_source_incomplete"
    assert "TST001" not in e.value.line() and str(source.SOPInstanceUID) not in e.value.line()


def test_a_result_for_another_image_or_out_of_range_is_a_bug(source):
    with pytest.raises(InternalError, match="another image") as e:
        build_sr(source, _result(source, sop_instance_uid="2.25.4242"))
    assert "2.25.4242" not in str(e.value)
    with pytest.raises(InternalError, match=r"score must be a probability"):
        build_sr(source, _result(source, score=float("nan")))
    with pytest.raises(InternalError, match=r"threshold must be a probability"):
        build_sr(source, _result(source, threshold=1.5))
