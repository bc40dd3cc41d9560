"""Step 1 of the pixel pipeline: the first frame's stored values, decoded from exactly the checked bytes.

Why reduced: the model needs a few hundred pixels a side, and a JPEG 2000
codestream holds its image at every power-of-two resolution; reading a
reduced level (OpenJPEG's resolution factor, from memory, see
:mod:`osteo_batch.dicom.j2k`) is over 10x faster than a full decode
(:func:`decode_reduced`). Other syntaxes decode in full and are averaged down
by the same power of two, so the display steps run on a small array; the two
reductions are then brought to one filter (:mod:`osteo_batch.dicom.reduce`), so
that a JPEG 2000 twin scores as its native original. The reduction stops while the longer side is still at least the model's input
size, so the final resize is always an antialiased downscale. Only the first
frame of a multi-frame image is decoded, and only after
:func:`osteo_batch.dicom.frames.check_frames` passed it.

Why not always through pydicom: for the reduced read, uncompressed 16-bit
pixels are read in place (:func:`_native_frame`) and RLE frames go straight
to pylibjpeg-rle (:func:`_rle_frame`), with pydicom's correction of unused
high bits; the same values as :func:`pydicom.pixels.pixel_array`, without
its copies and re-encapsulation (a third of the time on a 3000 px image).
Anything else, or anything unusual about those, goes through pydicom.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from osteo_batch.dicom.frames import J2K, RLE, Checked, check_frames, check_grey
from osteo_batch.dicom.j2k import geometry, read_reduced
from osteo_batch.dicom.quiet import reading
from osteo_batch.dicom.reduce import equalise_box, equalise_low_band
from osteo_batch.dicom.rejections import PixelError
from osteo_batch.reasons import Reason

#: Native syntaxes whose Pixel Data is little endian bytes once read (deflated ones are inflated by then).
_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}


def _pixel_module(ds, frame: bytes):
    """A data set of only ``ds``'s Image Pixel module and one encapsulated frame: ``frame``.

    The decoder is given exactly the bytes :func:`check_frames` checked,
    whatever the offset tables or fragments of the file would make of them.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate

    out = Dataset()
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    for elem in ds.group_dataset(0x0028):
        if elem.keyword != "NumberOfFrames":
            out.add(elem)
    out.PixelData = encapsulate([frame])
    out["PixelData"].VR = "OB"
    return out


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """A decoder's exceptions as rejections with reason codes (a bug's exception passes)."""
    try:
        with reading():
            yield
    except PixelError:
        raise
    except NotImplementedError as e:
        raise PixelError(Reason.UNSUPPORTED_TRANSFER_SYNTAX.value, str(e)[:200]) from None
    except MemoryError:
        raise PixelError(Reason.IMAGE_TOO_LARGE.value, "out of memory while decoding") from None
    except (ValueError, RuntimeError, AttributeError, KeyError, TypeError, OSError, EOFError, IndexError) as e:
        raise PixelError(Reason.DECODE_FAILED.value, type(e).__name__) from None
    except BaseException as e:
        if is_panic(e):  # a Rust decoder (pylibjpeg-rle) panicked on a malformed frame
            raise PixelError(Reason.DECODE_FAILED.value, "decoder panicked") from None
        raise


def _decode_checked(ds, checked: Checked) -> np.ndarray:
    from pydicom.pixels import pixel_array

    src = ds if checked.frame is None else _pixel_module(ds, checked.frame)
    with _decoding():
        return pixel_array(src, index=0, decoding_plugin=checked.plugin)


def is_panic(e: BaseException) -> bool:
    """A Rust panic surfacing in Python (pyo3's ``PanicException``, a ``BaseException``, not an ``Exception``).

    Uncaught it would pass every ``except Exception`` and end a DataLoader worker, and the night with it.
    """
    return type(e).__name__ == "PanicException"


def decode(ds) -> np.ndarray:
    """Stored pixel values of the first frame of ``ds``; raises :class:`PixelError` with a reason code."""
    check_grey(ds)
    with reading():
        return _decode_checked(ds, check_frames(ds))


def reduction_levels(rows: int, cols: int, size: int) -> int:
    """How many halvings keep the longer side at least ``size`` (the model's input)."""
    r, side = 0, max(rows, cols)
    while side >> (r + 1) >= size:
        r += 1
    return r


def block_mean(arr: np.ndarray, k: int, *, mask: int | None = None) -> np.ndarray:
    """Average ``k`` x ``k`` blocks (the ragged edge, under ``k`` pixels, is dropped), in float32.

    ``mask``: the bits of an unsigned ``arr`` that hold the value (pydicom's
    correction of unused high bits, applied while summing rather than in a
    copy of the whole image). Integers of up to 16 bits are summed a row and
    a column of blocks at a time, in uint16 while the sum of a block cannot
    overflow it, else in float32: every partial sum is an integer below
    2**24, so exact, and so is the division by a power of two; the same
    values as numpy's ``mean(axis=(1, 3), dtype=float32)``, five to eight
    times faster.
    """
    h, w = arr.shape[0] // k * k, arr.shape[1] // k * k
    a = arr[:h, :w]
    m = None if mask is None else arr.dtype.type(mask)
    bound = 0
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        info = np.iinfo(arr.dtype)
        bound = int(mask) if mask is not None else max(-int(info.min), int(info.max))
    if not bound or k & (k - 1) or k * k * bound >= 1 << 24:
        return (a if m is None else a & m).reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)
    acc = np.uint16 if arr.dtype.kind == "u" and k * k * bound < 1 << 16 else np.float32
    rows = (a[0::k] if m is None else a[0::k] & m).astype(acc, copy=m is None)
    tmp = None if m is None else np.empty(rows.shape, arr.dtype)
    for i in range(1, k):
        rows += a[i::k] if m is None else np.bitwise_and(a[i::k], m, out=tmp)
    out = rows[:, 0::k].copy()
    for j in range(1, k):
        out += rows[:, j::k]
    out = out.astype(np.float32, copy=False)
    out *= np.float32(1.0 / (k * k))
    return out


def _stored(arr: np.ndarray, shift: int) -> tuple[np.ndarray, int | None]:
    """pydicom's correction for the ``shift`` bits above Bits Stored, as (array, mask for :func:`block_mean`).

    Unsigned values are masked while they are summed (the same as shifting
    the unused bits out and back); signed ones are shifted out and back here,
    which sign-extends them, in place when the array is ours.
    """
    if shift == 0:
        return arr, None
    if arr.dtype.kind == "u":
        return arr, (1 << (16 - shift)) - 1
    out = np.left_shift(arr, shift) if not arr.flags.writeable else np.left_shift(arr, shift, out=arr)
    return np.right_shift(out, shift, out=out), None


def _geometry16(ds) -> tuple[int, int, int, bool] | None:
    """(rows, columns, unused high bits, signed) of a 16-bit grey image, or None for anything else."""
    try:
        rows, cols, alloc, stored = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated), int(ds.BitsStored)
        signed = int(ds.get("PixelRepresentation", 0) or 0)
    except (AttributeError, TypeError, ValueError):
        return None
    if alloc != 16 or not 1 <= stored <= 16 or signed not in (0, 1):
        return None
    return rows, cols, 16 - stored, bool(signed)


def _native_frame(ds) -> tuple[np.ndarray, int | None] | None:
    """The first frame of little endian 16-bit native pixel data, read in place, and its :func:`_stored` mask.

    None: leave it to pydicom.
    """
    if str(ds.file_meta.TransferSyntaxUID) not in _LITTLE_ENDIAN:
        return None
    g = _geometry16(ds)
    px = ds.get("PixelData")
    if g is None or not isinstance(px, (bytes, bytearray)):
        return None
    rows, cols, shift, signed = g
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return None
    if len(px) not in (2 * rows * cols * frames, 2 * rows * cols * frames + 1):  # pydicom judges any other length
        return None
    arr = np.frombuffer(px, dtype="<i2" if signed else "<u2", count=rows * cols).reshape(rows, cols)
    arr.flags.writeable = False  # a bytearray's view: the caller's data set is left as it is
    return _stored(arr, shift)


def _rle_frame(ds, checked: Checked) -> tuple[np.ndarray, int | None] | None:
    """A checked 16-bit RLE frame decoded by pylibjpeg-rle as pydicom would call it, and its :func:`_stored` mask.

    None: leave it to pydicom.
    """
    g = _geometry16(ds)
    if checked.plugin != "pylibjpeg" or checked.frame is None or g is None:
        return None
    rows, cols, shift, signed = g
    from rle.rle import decode_frame

    with _decoding():
        buf = decode_frame(checked.frame, rows * cols, 16, "<")
        arr = np.frombuffer(buf, dtype="<i2" if signed else "<u2").reshape(rows, cols)
    return _stored(arr, shift)


def _reduced_j2k(ds, checked: Checked, r: int, reader: str) -> np.ndarray | None:
    """Level ``r`` of a checked JPEG 2000 frame, or None where only a full decode is right.

    The codestream must agree with the header about bit depth and sign
    (pydicom's full decode corrects a disagreement), have one component and
    at most 16 bits.
    """
    p = checked.claim
    if p is None or checked.frame is None:
        return None
    signed = bool(int(ds.get("PixelRepresentation", 0) or 0))
    if p.bits != int(ds.BitsStored) or p.signed != signed or p.levels == 0 or p.samples != 1 or p.bits > 16:
        return None
    level = min(r, p.levels)
    try:
        with reading():
            arr = read_reduced(checked.frame, level, p, reader)
    except MemoryError:
        raise PixelError(Reason.IMAGE_TOO_LARGE.value, "out of memory while decoding") from None
    except Exception as e:
        raise PixelError(Reason.DECODE_FAILED.value, f"reduced JPEG 2000 decode: {type(e).__name__}") from None
    if arr is not None and arr.ndim != 2:
        raise PixelError(Reason.DECODE_FAILED.value, "reduced JPEG 2000 decode gave more than one component")
    if arr is None:
        return None
    # read_reduced parsed the same header; a lossy codestream's 9/7 low band needs its own equaliser
    return equalise_low_band(arr, level, reversible=geometry(checked.frame).reversible)


def decode_reduced(ds, size: int, *, j2k: str = "auto") -> np.ndarray:
    """Stored values at the coarsest power-of-two resolution whose longer side is >= ``size``.

    JPEG 2000 reads the reduced level from the codestream (``j2k`` names the
    reader, see :data:`osteo_batch.dicom.j2k.READERS`); everything else (and
    a J2K whose codestream disagrees with the header about bit depth or sign,
    which pydicom's full decode corrects) decodes in full and is averaged down.
    Both are brought to one reduction filter (:mod:`osteo_batch.dicom.reduce`),
    in float32, rounded back to the stored integers when a Modality or VOI
    LUT has to index them. Frames are checked first (:func:`check_frames`),
    whichever way they are decoded.
    """
    check_grey(ds)
    with reading():
        checked = check_frames(ds)
    r = reduction_levels(int(ds.Rows), int(ds.Columns), size)
    if r == 0:
        return _decode_checked(ds, checked)
    ts = str(ds.file_meta.TransferSyntaxUID)
    out = _reduced_j2k(ds, checked, r, j2k) if ts in J2K else None
    dtype = np.dtype(np.int16 if int(ds.get("PixelRepresentation", 0) or 0) else np.uint16)  # the readers'
    if out is None:
        fast = _native_frame(ds) if checked.frame is None else _rle_frame(ds, checked) if ts == RLE else None
        arr, mask = fast if fast is not None else (_decode_checked(ds, checked), None)
        if arr.ndim == 3:  # multi-frame: the first frame, as to_display would take
            arr = arr[0]
        dtype = arr.dtype
        out = equalise_box(block_mean(arr, 2**r, mask=mask), r)
    if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:  # a LUT is indexed by stored integers
        return _stored_integers(out, dtype, int(ds.BitsStored))
    return out


def _stored_integers(out: np.ndarray, dtype: np.dtype, bits: int) -> np.ndarray:
    """A filtered reduction rounded back to the ``bits``-bit stored integers a LUT indexes.

    Clipped to the stored range: the filters overshoot at a hard edge, and a
    value cast out of its type's range would wrap (0 to 65535).
    """
    info = np.iinfo(dtype)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if info.min < 0 else (0, (1 << bits) - 1)
    return np.clip(np.rint(out), max(lo, info.min), min(hi, info.max)).astype(dtype)
