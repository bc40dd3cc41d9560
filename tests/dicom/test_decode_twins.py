"""Every transfer syntax reaches the model as the same tensor; every character set decodes.

The reference files are pydicom's own test data (shipped with pydicom, read
offline): one MR image stored in each syntax. They are not chest radiographs,
but decoding does not care, and they are independent of our writer.
"""

import numpy as np
import pytest
from pydicom.data import get_charset_files, get_testdata_file

from osteo_batch.dicom.headers import read_header
from osteo_batch.dicom.pixels import load_image
from osteo_batch.worklist import display_name

from pydicom_twins import REFERENCE, TWINS


def _file(name):
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom test file {name} is missing"
    return path


@pytest.mark.parametrize("twin", TWINS)
def test_twin_reaches_the_model_as_the_same_tensor(twin):
    ref = load_image(_file(REFERENCE), 48)
    assert read_header(_file(twin)).reason is None
    np.testing.assert_array_equal(load_image(_file(twin), 48), ref)


def test_deflated_twin(tmp_path):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(_file(REFERENCE))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    twin = tmp_path / "deflated"
    ds.save_as(twin)
    assert pydicom.dcmread(twin).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert read_header(twin).reason is None
    np.testing.assert_array_equal(load_image(twin, 48), load_image(_file(REFERENCE), 48))


@pytest.mark.parametrize(
    "name",
    [
        "JPEG-LL.dcm",  # JPEG lossless, process 14 SV1, 16-bit (pydicom-data)
        "JPGLosslessP14SV1_1s_1f_8b.dcm",  # the same process, 8-bit
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_lossless_file_equals_its_decompressed_twin(tmp_path, name):
    """No encoder for JPEG lossless exists in Python, so the twin is made the other
    way round: decompress the reference file to native and compare."""
    import pydicom

    src = _file(name)
    ds = pydicom.dcmread(src)
    ds.decompress()
    twin = tmp_path / "native"
    ds.save_as(twin)
    assert not pydicom.dcmread(twin).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(load_image(twin, 48), load_image(src, 48))


@pytest.mark.parametrize(
    "name",
    [
        "image_dfl.dcm",  # deflated explicit VR little endian
        "JPGExtended.dcm",  # JPEG extended, 12-bit (libjpeg)
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline (colour: refused at decode, see below)
    ],
)
def test_other_syntaxes_are_readable(name):
    r = read_header(_file(name))
    assert r.reason is None, r.reason


def test_colour_jpeg_is_refused_with_a_reason_not_an_exception():
    from osteo_batch.dicom.rejections import PixelError

    with pytest.raises(PixelError) as e:
        load_image(_file("SC_rgb_jpeg_dcmtk.dcm"), 32)
    assert e.value.reason == "pixel_decode_failed"


def test_grey_syntaxes_decode_to_unit_range():
    for name in ("image_dfl.dcm", "JPGExtended.dcm"):
        img = load_image(_file(name), 32)
        assert img.shape == (32, 32) and img.min() >= 0 and img.max() <= 1 and img.max() > img.min()


@pytest.mark.parametrize(
    "name,expected",
    [
        ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),  # ISO 2022 IR 149 (Korean)
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # ISO 2022 IR 87 (Japanese)
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),  # ISO_IR 192 (UTF-8)
        ("chrFren.dcm", "Buc^Jérôme"),  # ISO_IR 100 (Latin-1)
        ("chrRuss.dcm", "Люкceмбypг"),  # ISO_IR 144 (Cyrillic)
        ("chrGreek.dcm", "Διονυσιος"),  # ISO_IR 126
    ],
)
def test_patient_names_in_every_character_set(name, expected):
    r = read_header(get_charset_files(name)[0])
    assert r.fields["patient_name"] == expected


def test_display_name_shows_every_representation():
    assert display_name("Hong^Gildong=洪^吉洞=홍^길동") == "Hong, Gildong (洪吉洞, 홍길동)"
    assert display_name("Buc^Jérôme") == "Buc, Jérôme"
    assert display_name("=김^희중") == "김희중"
    assert display_name("김미영") == "김미영"
    assert display_name(None) == ""
