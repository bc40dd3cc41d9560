"""Each reason code has a file that triggers it; valid files give their fields."""

import datetime as dt

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from osteo_batch.dicom.headers import age_at_study, read_header
from osteo_batch.reasons import Reason

from dicom_factory import dataset, write


def test_valid_file_gives_fields(tmp_path):
    f = write(dataset(patient_name="Kim^Mi-young"), tmp_path / "a" / "IM1")
    r = read_header(f)
    assert r.reason is None
    assert r.fields["sop_instance_uid"] == "2.25.1001"
    assert r.fields["patient_name"] == "Kim^Mi-young"
    assert r.fields["age"] == 65.0
    assert r.fields["study_date"] == dt.date(2025, 6, 1)
    assert r.fields["view"] == "PA" and r.fields["modality"] == "DX"
    assert r.header["PatientSex"] == "F"


def test_korean_utf8_name_is_decoded(tmp_path):
    f = write(dataset(patient_name="김미영"), tmp_path / "IM")
    assert read_header(f).fields["patient_name"] == "김미영"


def test_file_without_preamble_or_meta_is_read_by_content(tmp_path):
    ds = dataset()
    del ds.file_meta
    ds.preamble = None
    f = tmp_path / "noext"
    ds.save_as(f, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert f.read_bytes()[128:132] != b"DICM"
    r = read_header(f)
    assert r.reason is None and r.fields["sop_instance_uid"] == "2.25.1001"


@pytest.mark.parametrize(
    "name,make,reason",
    [
        ("empty", lambda p: p.write_bytes(b""), Reason.EMPTY_FILE),
        ("text", lambda p: p.write_text("PACS export log\n" * 20), Reason.NOT_DICOM),
        ("random", lambda p: p.write_bytes(bytes(range(256)) * 40), Reason.NOT_DICOM),
    ],
)
def test_junk_is_rejected_with_reason(tmp_path, name, make, reason):
    f = tmp_path / name
    make(f)
    assert read_header(f).reason == reason.value


def test_truncated_native_file(tmp_path):
    f = write(dataset(rows=200, cols=200, pixels=None), tmp_path / "IM")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 5000])
    assert read_header(f).reason == Reason.TRUNCATED.value


def test_truncated_compressed_file(tmp_path):
    ds = dataset(rows=200, cols=200)
    ds.compress(RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    f = write(ds, tmp_path / "IM")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    assert read_header(f).reason == Reason.TRUNCATED.value


def test_no_pixel_data(tmp_path):
    ds = dataset()
    del ds.PixelData
    assert read_header(write(ds, tmp_path / "IM")).reason == Reason.NO_PIXEL_DATA.value


def test_header_claiming_more_pixels_than_stored(tmp_path):
    ds = dataset(rows=64, cols=48)
    ds.Rows = 640  # the element holds 64x48 pixels; the header claims ten times more
    assert read_header(write(ds, tmp_path / "IM")).reason == Reason.PIXELS_INCONSISTENT.value


def test_absurd_size_is_refused_before_allocation(tmp_path):
    ds = dataset()
    ds.Rows, ds.Columns = 60000, 60000
    assert read_header(write(ds, tmp_path / "IM")).reason == Reason.IMAGE_TOO_LARGE.value


def test_structured_report_is_not_an_image(tmp_path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    meta.MediaStorageSOPInstanceUID = "2.25.77"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = "2.25.77"
    ds.PatientID = "X"
    ds.Modality = "SR"
    assert read_header(write(ds, tmp_path / "SR")).reason == Reason.NOT_IMAGE.value


def test_missing_sop_instance_uid(tmp_path):
    ds = dataset()
    del ds.SOPInstanceUID
    assert read_header(write(ds, tmp_path / "IM", enforce_file_format=False)).reason == Reason.MISSING_SOP_INSTANCE_UID.value


def test_age_from_birth_date_or_patient_age():
    assert age_at_study(dt.date(1960, 6, 2), dt.date(2025, 6, 1), None) == 64.0
    assert age_at_study(dt.date(1960, 6, 1), dt.date(2025, 6, 1), None) == 65.0
    assert age_at_study(None, dt.date(2025, 6, 1), "071Y") == 71.0
    assert age_at_study(None, None, "018M") == pytest.approx(1.5)
    assert age_at_study(None, None, "garbage") is None
