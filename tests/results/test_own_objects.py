"""Our own SRs and heat maps are known by what they hold; nobody else's object is taken for one."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import dcmread
from pydicom.uid import ComprehensiveSRStorage, ComputedRadiographyImageStorage, SecondaryCaptureImageStorage

import dicom_factory
from osteo_batch.dicom.headers import HEADER_KEYWORDS, read_header
from osteo_batch.reasons import Reason
from osteo_batch.results.own import (
    MANUFACTURER, SC_MODEL_NAME, SERIES_DESCRIPTION_SC, is_own_object, is_sc_class, is_sr_class,
)
from osteo_batch.results.sr import ScoredResult, build_sr


def _header(ds) -> dict[str, str]:
    """The keyword dict the sweep keeps: text values of the indexed keywords, absent ones left out."""
    return {kw: str(ds.get(kw)).strip() for kw in HEADER_KEYWORDS if ds.get(kw) not in (None, "")}


@pytest.fixture()
def our_sr(tmp_path):
    src = dicom_factory.dataset()
    result = ScoredResult(sop_instance_uid=src.SOPInstanceUID, score=0.6, band="moderate", model_id="m-97f99f6bb40e048c",
                          model_version="1", threshold=0.5, run_date=dt.date(2025, 6, 2))
    path = tmp_path / "sr.dcm"
    build_sr(src, result).save_as(path, enforce_file_format=True)
    return path


def test_our_sr_is_recognised_from_its_header(our_sr):
    assert is_own_object(_header(dcmread(our_sr, stop_before_pixels=True)))


def test_the_sweep_marks_our_sr_as_our_own(our_sr):
    """End to end through the header reader: the SR that came back is rejected as ours, not as 'not an image'."""
    assert read_header(our_sr).reason == Reason.OWN_OBJECT.value


def test_a_third_party_sr_is_not_ours(our_sr):
    header = _header(dcmread(our_sr, stop_before_pixels=True))
    assert not is_own_object({**header, "Manufacturer": "Acme CAD"})
    assert not is_own_object({k: v for k, v in header.items() if k != "Manufacturer"})


def test_an_image_is_never_ours_whatever_its_manufacturer():
    """A CR image saying Manufacturer "osteo-batch" is somebody's device (or our phantom): it is judged as an image."""
    cr = _header(dicom_factory.dataset(modality="CR"))
    assert cr["SOPClassUID"] == ComputedRadiographyImageStorage
    assert not is_own_object(cr)
    assert not is_own_object({**cr, "Manufacturer": MANUFACTURER})
    assert not is_own_object({**cr, "Manufacturer": MANUFACTURER, "ManufacturerModelName": SC_MODEL_NAME,
                              "SeriesDescription": SERIES_DESCRIPTION_SC})


def test_our_heat_map_capture_is_known_by_model_name_or_series_description():
    sc = {"SOPClassUID": SecondaryCaptureImageStorage, "Modality": "OT", "Manufacturer": MANUFACTURER}
    assert is_own_object({**sc, "ManufacturerModelName": SC_MODEL_NAME})
    assert is_own_object({**sc, "SeriesDescription": SERIES_DESCRIPTION_SC})
    assert not is_own_object(sc)  # an osteo-batch-branded capture we did not write
    assert not is_own_object({**sc, "Manufacturer": "Acme", "ManufacturerModelName": SC_MODEL_NAME})


def test_values_as_pydicom_or_the_header_reader_give_them():
    """Padding, UID objects and None (the header reader's 'absent') all read as the sweep means them."""
    assert is_own_object({"SOPClassUID": ComprehensiveSRStorage, "Manufacturer": "osteo-batch ", "Modality": None})
    assert not is_own_object({"SOPClassUID": None, "Manufacturer": MANUFACTURER})
    assert not is_own_object({})
    assert is_sr_class("1.2.840.10008.5.1.4.1.1.88.22") and not is_sr_class("1.2.840.10008.5.1.4.1.1.1")
    assert is_sc_class("1.2.840.10008.5.1.4.1.1.7.4") and not is_sc_class("1.2.840.10008.5.1.4.1.1.77.1")
