"""The display pipeline: twins stored differently reach the model as the same tensor."""

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from osteo_batch.dicom.decode import decode
from osteo_batch.dicom.display import DisplayOptions, to_display
from osteo_batch.dicom.pixels import load_image, pad_square, read_dataset
from osteo_batch.dicom.rejections import PixelError

from dicom_factory import dataset, ramp, write


def _img(path, size=32):
    """The full-resolution path: twins must decode to identical values (reduced reads are tested apart)."""
    return load_image(path, size, DisplayOptions(reduce=False))


def test_monochrome1_twin_equals_monochrome2(tmp_path):
    px = ramp()
    a = write(dataset(px), tmp_path / "m2")
    b = write(dataset((4095 - px).astype(np.uint16), photometric="MONOCHROME1"), tmp_path / "m1")
    # the window is symmetric for the inverted twin only if set from its own data; drop it for both
    for f in (a, b):
        import pydicom

        ds = pydicom.dcmread(f)
        del ds.WindowCenter, ds.WindowWidth
        ds.save_as(f)
    np.testing.assert_allclose(_img(a), _img(b), atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_twins_equal_native(tmp_path, syntax):
    px = ramp()
    native = write(dataset(px), tmp_path / "native")
    ds = dataset(px)
    ds.compress(syntax, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    comp = write(ds, tmp_path / "comp")
    np.testing.assert_array_equal(_img(native), _img(comp))


def test_implicit_vr_twin_equals_explicit(tmp_path):
    px = ramp()
    a = write(dataset(px), tmp_path / "explicit")
    ds = dataset(px)
    del ds.file_meta
    b = tmp_path / "implicit"
    ds.save_as(b, implicit_vr=True, little_endian=True, enforce_file_format=False)
    np.testing.assert_array_equal(_img(a), _img(b))


def test_bone_is_bright_and_range_is_unit(tmp_path):
    f = write(dataset(), tmp_path / "x")
    ds = read_dataset(f)
    out = to_display(decode(ds), ds)
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32


def test_broken_window_falls_back_to_data_window(tmp_path):
    ds = dataset()
    ds.WindowWidth = 0  # forbidden by the standard, seen in the wild
    f = write(ds, tmp_path / "x")
    img = _img(f)
    assert np.isfinite(img).all() and img.max() > img.min()


def test_colour_image_is_refused_with_reason(tmp_path):
    ds = dataset()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((64, 48, 3), np.uint8).tobytes()
    f = write(ds, tmp_path / "rgb")
    with pytest.raises(PixelError) as e:
        _img(f)
    assert e.value.reason == "pixel_decode_failed"


def test_pad_square_keeps_aspect():
    a = np.ones((4, 2), np.float32)
    p = pad_square(a)
    assert p.shape == (4, 4) and p[:, 0].sum() == 0 and p[:, 1:3].sum() == 8


def test_codestream_larger_than_the_header_is_refused_before_decoding(tmp_path):
    from pydicom.uid import JPEG2000Lossless

    big = ramp(256, 256)
    ds = dataset(big, rows=256, cols=256)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    ds.Rows, ds.Columns = 64, 48  # the header understates what the codestream holds
    f = write(ds, tmp_path / "bomb")
    with pytest.raises(PixelError) as e:
        _img(f)
    assert e.value.reason == "pixels_inconsistent_with_header" and "256x256" in e.value.detail


@pytest.mark.parametrize(
    "damage,reason",
    [
        ("slope_text", "pixel_decode_failed"),
        (lambda ds: setattr(ds, "SamplesPerPixel", [1, 1]), "pixel_decode_failed"),
        (lambda ds: setattr(ds, "RescaleSlope", 0), "blank_image"),
    ],
)
def test_damaged_values_reject_the_file_not_the_batch(tmp_path, damage, reason):
    from osteo_batch.scoring.tensors import DicomDataset, Item

    ds = dataset()
    if damage == "slope_text":
        ds.RescaleSlope = "9"
        f = write(ds, tmp_path / "damaged")
        element = b"\x28\x00\x53\x10DS\x02\x009 "  # (0028,1053) DS "9 " as written
        raw = f.read_bytes()
        assert raw.count(element) == 1
        f.write_bytes(raw.replace(element, element[:-2] + b"ab"))  # pydicom would refuse to write it
    else:
        damage(ds)
        f = write(ds, tmp_path / "damaged")
    with pytest.raises(PixelError) as e:
        _img(f)
    assert e.value.reason == reason
    good = write(dataset(sop_instance_uid="2.25.9"), tmp_path / "good")
    items = [Item(str(f), "2.25.1001", "P"), Item(str(good), "2.25.9", "P")]
    out = [DicomDataset(items, 16)[i] for i in range(2)]
    assert out[0][1] is None and out[0][2] == reason
    assert out[1][1] is not None


def test_a_file_that_vanished_is_unreadable_and_retried_not_junk(tmp_path):
    with pytest.raises(PixelError) as e:
        _img(tmp_path / "gone")
    assert e.value.reason == "unreadable"
