"""The heat-map Secondary Capture: valid by dciodvfy, its pixels intact, and known as ours when it comes back."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import SecondaryCaptureImageStorage

import dicom_factory
from osteo_batch.dicom.headers import read_header
from osteo_batch.errors import InternalError
from osteo_batch.reasons import Reason
from osteo_batch.results.heatmap import SC_SERIES_NUMBER, build_heatmap_sc, sc_series_uid, sc_uid
from osteo_batch.results.own import MANUFACTURER, SC_MODEL_NAME, SERIES_DESCRIPTION_SC
from osteo_batch.results.sr import ScoredResult, sr_series_uid, sr_uid

MODEL = "m-97f99f6bb40e048c"


@pytest.fixture()
def source(tmp_path):
    path = dicom_factory.write(dicom_factory.dataset(), tmp_path / "src.dcm")
    return dcmread(path, stop_before_pixels=True)


def _result(source, model_id=MODEL) -> ScoredResult:
    return ScoredResult(sop_instance_uid=str(source.SOPInstanceUID), score=0.7, band="high", model_id=model_id,
                        model_version="1", threshold=0.4, run_date=dt.date(2025, 6, 2))


def _rgb(rows=40, cols=30) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:cols]
    return np.stack([x * 8 % 256, y * 6 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_heat_map_passes_dciodvfy_and_keeps_its_pixels(source, tmp_path):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed: apt-get install dicom3tools")
    path = tmp_path / "sc.dcm"
    build_heatmap_sc(source, _rgb(), _result(source)).save_as(path, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    assert not [ln for ln in lines if ln.startswith("Error")], lines
    ds = dcmread(path)
    assert np.array_equal(ds.pixel_array, _rgb())
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.PhotometricInterpretation == "RGB"


def test_heat_map_sits_in_the_study_in_its_own_series_and_names_its_source(source):
    sc = build_heatmap_sc(source, _rgb(), _result(source))
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.PatientID == source.PatientID
    assert sc.SOPInstanceUID == sc_uid(source.SOPInstanceUID, MODEL)
    assert sc.SeriesInstanceUID == sc_series_uid(source.StudyInstanceUID, MODEL)
    assert sc.SOPInstanceUID != sr_uid(source.SOPInstanceUID, MODEL)
    assert sc.SeriesInstanceUID != sr_series_uid(source.StudyInstanceUID, MODEL)
    assert sc_uid(source.SOPInstanceUID, "m-other") != sc.SOPInstanceUID
    assert (sc.SeriesNumber, sc.SeriesDescription) == (SC_SERIES_NUMBER, SERIES_DESCRIPTION_SC)
    assert (sc.Manufacturer, sc.ManufacturerModelName) == (MANUFACTURER, SC_MODEL_NAME)
    (ref,) = sc.SourceImageSequence
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)


def test_the_sweep_knows_our_heat_map(source, tmp_path):
    path = tmp_path / "sc.dcm"
    build_heatmap_sc(source, _rgb(), _result(source)).save_as(path, enforce_file_format=True)
    assert read_header(path).reason == Reason.OWN_OBJECT.value


def test_a_heat_map_that_is_not_rgb_uint8_is_a_bug(source):
    with pytest.raises(InternalError, match=r"rows x columns x 3 uint8 array, got float64 of shape \(40, 30, 3\)"):
        build_heatmap_sc(source, _rgb().astype(float), _result(source))
    with pytest.raises(InternalError, match=r"got uint8 of shape \(40, 30\)"):
        build_heatmap_sc(source, _rgb()[..., 0], _result(source))
