"""Step 1 of the pixel pipeline: the first frame's stored values, decoded from exactly the checked bytes.

Why reduced: the model needs a few hundred pixels a side, and a JPEG 2000
codestream holds its image at every power-of-two resolution; reading a
reduced level (through OpenJPEG's resolution factor, via glymur) is over 10x
faster than a full decode (:func:`decode_reduced`). Other syntaxes decode in
full and are averaged down by the same power of two, so the display steps run
on a small array. The reduction stops while the longer side is still at
least the model's input size, so the final resize is always an antialiased
downscale. Only the first frame of a multi-frame image is decoded, and only
after :func:`osteo_batch.dicom.frames.check_frames` passed it.
"""

from __future__ import annotations

import os

import numpy as np

from osteo_batch.dicom.frames import J2K, Checked, check_frames, check_grey
from osteo_batch.dicom.quiet import reading
from osteo_batch.dicom.rejections import PixelError
from osteo_batch.reasons import Reason


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


def _decode_checked(ds, checked: Checked) -> np.ndarray:
    from pydicom.pixels import pixel_array

    src = ds if checked.frame is None else _pixel_module(ds, checked.frame)
    try:
        with reading():
            return pixel_array(src, index=0, decoding_plugin=checked.plugin)
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


def block_mean(arr: np.ndarray, k: int) -> np.ndarray:
    """Average ``k`` x ``k`` blocks (the ragged edge, under ``k`` pixels, is dropped)."""
    h, w = arr.shape[0] // k * k, arr.shape[1] // k * k
    return arr[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)


def _j2k_read_reduced(frame: bytes, r: int) -> np.ndarray:
    """Decode a J2K codestream at resolution level ``r`` with OpenJPEG (through glymur).

    glymur reads from a file, so the frame goes to a private temporary file
    (in /dev/shm when there is one: memory, not disk), deleted on return.
    """
    import tempfile

    import glymur

    glymur.set_option("lib.num_threads", 1)  # the DataLoader workers are the parallelism
    tmpdir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.NamedTemporaryFile(suffix=".j2k", dir=tmpdir) as f:
        f.write(frame)
        f.flush()
        step = 2**r
        with reading():
            return glymur.Jp2k(f.name)[::step, ::step]


def _have_glymur() -> bool:
    try:
        import glymur

        return bool(glymur.version.openjpeg_version) and glymur.lib.openjp2.OPENJP2 is not None
    except Exception:  # not installed, or no libopenjp2: full decodes still work
        return False


def decode_reduced(ds, size: int) -> np.ndarray:
    """Stored values at the coarsest power-of-two resolution whose longer side is >= ``size``.

    JPEG 2000 reads the reduced level from the codestream; everything else
    (and a J2K whose codestream disagrees with the header about bit depth or
    sign, which pydicom's full decode corrects) decodes in full and is
    averaged down (in float32; rounded back to the stored integers when a
    Modality or VOI LUT has to index them). Frames are checked first
    (:func:`check_frames`), whichever way they are decoded.
    """
    check_grey(ds)
    with reading():
        checked = check_frames(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    r = reduction_levels(rows, cols, size)
    if r == 0:
        return _decode_checked(ds, checked)
    p = checked.claim
    if str(ds.file_meta.TransferSyntaxUID) in J2K and p is not None and checked.frame is not None:
        signed = bool(int(ds.get("PixelRepresentation", 0) or 0))
        if p.bits == int(ds.BitsStored) and p.signed == signed and p.levels > 0 and p.samples == 1 and _have_glymur():
            r = min(r, p.levels)
            try:
                arr = _j2k_read_reduced(checked.frame, r)
            except MemoryError:
                raise PixelError(Reason.IMAGE_TOO_LARGE.value, "out of memory while decoding") from None
            except Exception as e:
                raise PixelError(Reason.DECODE_FAILED.value, f"reduced JPEG 2000 decode: {type(e).__name__}") from None
            if arr.ndim != 2:
                raise PixelError(Reason.DECODE_FAILED.value, "reduced JPEG 2000 decode gave more than one component")
            return arr.astype(np.int16 if signed else np.uint16, copy=False)
    arr = _decode_checked(ds, checked)
    if arr.ndim == 3:  # multi-frame: the first frame, as to_display would take
        arr = arr[0]
    out = block_mean(arr, 2**r)
    if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:  # a LUT is indexed by stored integers
        return np.rint(out).astype(arr.dtype)
    return out
