"""The pixel pipeline: stored values to the image a radiologist's viewer shows.

The standard's order, each step a pure function of (array, dataset), each in
the module its name says:

0. open the file as the header reader does (:func:`read_dataset`, through
   :func:`osteo_batch.dicom.dataset.open_dataset`): only regular files inside
   the archive, complete, deflated data inflated no further than the header
   justifies;
1. decode (:mod:`osteo_batch.dicom.decode`: pydicom with the pylibjpeg plugins,
   a JPEG 2000 read from memory at the reduced resolution the model needs,
   :mod:`osteo_batch.dicom.j2k`), only once the first frame passed
   :func:`osteo_batch.dicom.frames.check_frames`;
2. modality LUT or rescale slope/intercept, 3. VOI LUT or window centre/width
   (falling back to a percentile window), 4. MONOCHROME1 inversion, so bone is
   always bright (:mod:`osteo_batch.dicom.display`);
5. pad to a square (aspect kept, anatomy not cropped) and resize with
   antialiasing to the model's input size (:func:`pad_square`, :func:`resize`).

Multi-frame images use their first frame, and only it is decoded; colour
images are refused (no chest radiograph is stored in colour, so one is a
secondary capture or a screenshot), PALETTE COLOR included. Every refusal is
a :class:`~osteo_batch.dicom.rejections.PixelError` with a reason code.

pydicom is silenced while a file is read or decoded
(:func:`osteo_batch.dicom.quiet.reading`): it words some warnings with the
offending value (a UID, a date, a name), and a decoding worker's stderr is
the night's log, where no patient data may appear.
"""

from __future__ import annotations

import os
import stat

import numpy as np

from osteo_batch.dicom.dataset import open_dataset
from osteo_batch.dicom.decode import decode, decode_reduced
from osteo_batch.dicom.display import DisplayOptions, to_display
from osteo_batch.dicom.limits import FILE_SLACK, MAX_PIXEL_BYTES
from osteo_batch.dicom.quiet import reading
from osteo_batch.dicom.rejections import DatasetError, PixelError
from osteo_batch.reasons import Reason


def pad_square(arr: np.ndarray) -> np.ndarray:
    """Pad with black to a square, centred, so resizing keeps the aspect."""
    h, w = arr.shape
    n = max(h, w)
    out = np.zeros((n, n), dtype=arr.dtype)
    y0, x0 = (n - h) // 2, (n - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = arr
    return out


def resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of a float image to ``size`` x ``size``."""
    from PIL import Image

    img = Image.fromarray(arr.astype(np.float32, copy=False), mode="F")
    return np.asarray(img.resize((size, size), Image.BILINEAR))


def read_dataset(path: str | os.PathLike, roots: "tuple[str, ...] | None" = None):
    """The data set of the archive file ``path`` (a stored path, see :func:`osteo_batch.archive.walk.db_path`).

    Opened as the header reader opens it (:func:`osteo_batch.dicom.dataset.open_dataset`):
    only a regular file (a FIFO or device put in a file's place between the
    sweep and scoring would block a decoding worker forever), never a file
    that resolves outside ``roots`` (:func:`osteo_batch.archive.walk.real_roots`),
    complete, and a deflated data set inflated no further than its header
    justifies. A file that grew past anything an image the sweep accepts
    could need is refused before it is read into memory.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    from osteo_batch.archive.walk import fs_path

    try:
        st = os.stat(fs_path(os.fspath(path)))
    except OSError:
        st = None  # vanished, or a link out of the archive: open_dataset says which
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > MAX_PIXEL_BYTES + FILE_SLACK:
        raise PixelError(Reason.IMAGE_TOO_LARGE.value, f"{st.st_size} bytes: more than any image the sweep accepts")
    try:
        with reading():
            ds = open_dataset(path, roots or None)
    except DatasetError as e:
        raise PixelError(e.reason, e.detail) from None
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # no meta header (older archives): the syntax is how the file parsed
        implicit, little = ds.original_encoding
        ds.file_meta = meta if meta is not None else FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def load_image(path: str | os.PathLike, size: int, opts: DisplayOptions = DisplayOptions(), *,
               roots: "tuple[str, ...] | None" = None, sop_instance_uid: str | None = None) -> np.ndarray:
    """Path to a ``size`` x ``size`` float32 image in [0, 1], bone bright.

    Every failure is a :class:`PixelError` with a reason code: a damaged value
    in any tag the pipeline reads (Rescale Slope ``abc``, a two-valued Samples
    per Pixel) rejects this one file, never the batch.

    ``roots`` bounds where the file may resolve (see :func:`read_dataset`).
    ``sop_instance_uid`` is the identity the sweep indexed at ``path``: a
    file rewritten since then with another instance is refused (``unreadable``,
    read again at the next sweep, which sees it changed), because its score
    would be filed under the other instance, and its patient.
    """
    ds = read_dataset(path, roots)
    if sop_instance_uid is not None and str(ds.get("SOPInstanceUID", "") or "").strip() != sop_instance_uid:
        raise PixelError(Reason.UNREADABLE.value, "changed since the sweep: it holds another SOP Instance UID")
    try:
        with reading():
            arr = decode_reduced(ds, size, j2k=opts.j2k) if opts.reduce else decode(ds)
            disp = to_display(arr, ds, opts)
    except PixelError:
        raise
    except MemoryError:
        raise PixelError(Reason.IMAGE_TOO_LARGE.value, "out of memory while decoding") from None
    except Exception as e:
        raise PixelError(Reason.DECODE_FAILED.value, type(e).__name__) from None
    if disp.ndim != 2:
        raise PixelError(Reason.DECODE_FAILED.value, f"decoded to {disp.ndim} dimensions, not one grey frame")
    if not np.isfinite(disp).all() or float(disp.max()) <= float(disp.min()):
        raise PixelError(Reason.BLANK_IMAGE.value, "no contrast after the display pipeline")
    return resize(pad_square(disp), size)
