"""A refused file is a typed error whose code is its reason, and it crosses a process pool as itself."""

from __future__ import annotations

import pickle

import pytest

from dicom_factory import dataset, write
from osteo_batch.errors import InternalError, OsteoError, UserError, is_user_error
from osteo_batch.dicom.dataset import open_dataset
from osteo_batch.dicom.pixels import load_image
from osteo_batch.dicom.rejections import DatasetError, PixelError, Rejection


def test_an_empty_file_is_a_dataset_error_whose_code_is_the_reason(tmp_path):
    (tmp_path / "IM1").write_bytes(b"")
    with pytest.raises(DatasetError, match="^empty_file: zero bytes$") as e:
        open_dataset(tmp_path / "IM1")
    assert e.value.code == e.value.reason == "empty_file" and e.value.detail == "zero bytes"
    assert isinstance(e.value, InternalError) and not is_user_error(e.value), "a rejection is recorded, not the user's"


def test_a_pixel_error_keeps_its_value_error_base(tmp_path):
    ds = dataset()
    ds.Rows = 20000
    with pytest.raises(ValueError) as e:  # callers that caught ValueError still do
        load_image(write(ds, tmp_path / "IM1"), 16)
    assert isinstance(e.value, PixelError) and e.value.code == "image_too_large"
    assert isinstance(e.value, OsteoError) and not isinstance(e.value, UserError)


@pytest.mark.parametrize("cls", [DatasetError, PixelError])
def test_a_rejection_pickles_as_itself(cls):
    back = pickle.loads(pickle.dumps(cls("truncated", "file ends inside an element")))
    assert type(back) is cls and isinstance(back, Rejection)
    assert (back.reason, back.detail, back.code, str(back)) == (
        "truncated", "file ends inside an element", "truncated", "truncated: file ends inside an element")
