"""The reduced decode's own reads of native and RLE pixels give pydicom's values, and numpy's block means.

Each file is written with pydicom; the reference is the previous release's
path, computed here: ``pydicom.pixels.pixel_array`` then numpy's float32
mean over k x k blocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from dicom_factory import dataset, write
from osteo_batch.dicom.decode import block_mean, decode_reduced, reduction_levels
from osteo_batch.dicom.pixels import read_dataset
from osteo_batch.dicom.reduce import equalise_box
from osteo_batch.dicom.rejections import PixelError


def _numpy_block_mean(arr: np.ndarray, k: int) -> np.ndarray:
    h, w = arr.shape[0] // k * k, arr.shape[1] // k * k
    return arr[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_block_mean_equals_numpys_mean_bit_for_bit(dtype, k):
    rng = np.random.default_rng(k)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, int(info.max) + 1, (k * 9 + 3, k * 7 + 1)).astype(dtype)
    a[: k * 2, : k * 2] = info.max  # blocks at the extremes: the largest sums
    a[-k * 2 - 3 :, : k * 2] = info.min
    got = block_mean(a, k)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _numpy_block_mean(a, k))
    if dtype == np.uint16:  # the unused high bits masked while summing, as pydicom masks them
        for mask in (0x0FFF, 0x03FF, 0xFFFF):
            np.testing.assert_array_equal(block_mean(a, k, mask=mask), _numpy_block_mean(a & mask, k))
    np.testing.assert_array_equal(block_mean(a.astype(np.int32), k), _numpy_block_mean(a.astype(np.int32), k))


def _reference(path, size: int) -> np.ndarray:
    """The previous release's reduced decode of a non-JPEG 2000 file, brought to the one reduction filter."""
    from pydicom.pixels import pixel_array

    ds = read_dataset(path)
    arr = pixel_array(ds, index=0)
    r = reduction_levels(int(ds.Rows), int(ds.Columns), size)
    return equalise_box(_numpy_block_mean(arr, 2**r), r)


def _with_garbage_high_bits(px: np.ndarray) -> np.ndarray:
    """12-bit values whose unused top bits hold noise, as some modalities store them."""
    rng = np.random.default_rng(5)
    return (px | (rng.integers(0, 16, px.shape).astype(np.uint16) << 12)).astype(np.uint16)


def _ramp(rows: int, cols: int) -> np.ndarray:
    from dicom_factory import ramp

    return ramp(rows, cols)


CASES = {
    "12-bit": dict(),
    "12-bit, noise in the unused bits": dict(garbage=True),
    "16-bit": dict(bits=16),
    "signed 12-bit, noise in the unused bits": dict(signed=True, garbage=True),
    "signed 16-bit": dict(signed=True, bits=16),
    "two frames": dict(frames=2),
    "odd sides": dict(rows=257, cols=203),
}


def _file(tmp_path, name: str, *, rle: bool, bits: int = 12, signed: bool = False, garbage: bool = False,
          frames: int = 1, rows: int = 260, cols: int = 198):
    px = _ramp(rows, cols)
    if bits == 16:
        px = (px.astype(np.uint32) * 16 + 7).astype(np.uint16)
    if garbage:
        px = _with_garbage_high_bits(px)
    ds = dataset(px, rows=rows, cols=cols)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
    data = px.astype("<u2").tobytes() * frames
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    if rle:
        from pydicom.uid import RLELossless

        ds.compress(RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    return write(ds, tmp_path / name.replace(" ", "_").replace(",", ""))


@pytest.mark.parametrize("rle", [False, True], ids=["native", "RLE"])
@pytest.mark.parametrize("case", list(CASES))
def test_reduced_native_and_rle_decodes_equal_pydicoms(tmp_path, case, rle):
    if rle and CASES[case].get("frames", 1) > 1:
        pytest.skip("the RLE encoder writes one frame")
    from osteo_batch.dicom.decode import _native_frame, _rle_frame
    from osteo_batch.dicom.frames import check_frames

    path = _file(tmp_path, case, rle=rle, **CASES[case])
    ds = read_dataset(path)
    assert (_rle_frame(ds, check_frames(ds)) if rle else _native_frame(ds)) is not None, "pydicom is not the reader"
    got = decode_reduced(ds, 64)
    ref = _reference(path, 64)
    assert got.shape == ref.shape and got.shape[0] <= 65
    np.testing.assert_array_equal(got, ref)


def test_a_damaged_rle_frame_is_a_rejection_not_a_crash(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    path = _file(tmp_path, "rle", rle=True)
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])  # the second segment cut short
    damaged = write(ds, tmp_path / "damaged")
    with pytest.raises(PixelError) as e:
        decode_reduced(read_dataset(damaged), 64)
    assert e.value.reason == "pixel_decode_failed"
