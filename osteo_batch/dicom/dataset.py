"""Open a DICOM file with every byte accounted for: bounded inflation, complete structure, typed refusals.

The one way osteo-batch opens a DICOM file, for the header reader and the
pixel reader alike (:func:`open_dataset`). Three things a plain
``pydicom.dcmread(path, force=True)`` gets wrong on a hostile archive:

- **Deflate bombs.** A deflated data set is inflated as it is read, no
  further than its header justifies (:mod:`osteo_batch.dicom.inflate`):
  beyond that, ``decompression_bomb``.
- **Partial transfers.** The element structure is walked first
  (:mod:`osteo_batch.dicom.truncation`, headers only, values skipped by
  seeking): a file that ends inside its meta, an element, a sequence or its
  Pixel Data is ``truncated`` if it began like DICOM (the ``DICM`` prefix, a
  File Meta group, or standard identifying tags), ``not_dicom`` if it was
  garbage from the start. A deflated data set whose stream is cut is
  ``truncated`` too. A file cut exactly between two elements before its
  Pixel Data cannot be told from one that lacks them (the header reader
  calls it ``no_pixel_data``).
- **Files that are not files.** The file is opened by
  :func:`osteo_batch.archive.walk.open_regular`: a FIFO or device is refused
  (``not_regular_file``), a path resolving outside the archive's roots is
  never opened (``outside_archive``).

The file is closed when :func:`open_dataset` returns: values left deferred
(``defer_size``) are located (offset and length) but can no longer be loaded.
Nothing here quotes a header value or a path in a message.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from osteo_batch.dicom.inflate import DEFLATED, read_deflated
from osteo_batch.dicom.quiet import silence_pydicom
from osteo_batch.dicom.rejections import DatasetError
from osteo_batch.dicom.truncation import TRUNCATED, FileSource, walk_dataset, walk_meta
from osteo_batch.reasons import Reason

#: Tags any real data set has at least one of (a file without any is not DICOM).
IDENTIFYING = ("SOPInstanceUID", "SOPClassUID", "PatientID", "Modality", "StudyInstanceUID")


def open_dataset(path: str | os.PathLike, roots: tuple[str, ...] | None = None, *,
                 stop_before_pixels: bool = False, defer_size: int | None = None):
    """Read ``path`` (a stored archive path, see ``osteo_batch.archive.walk.db_path``) as a pydicom ``FileDataset``.

    ``roots`` (``osteo_batch.archive.walk.real_roots``): refuse a file that
    resolves outside them. ``stop_before_pixels`` and ``defer_size`` are
    pydicom's; either way the whole file is checked to be complete and, when
    deflated, bounded. Raises :class:`DatasetError` with reason
    ``empty_file``, ``unreadable``, ``not_regular_file``, ``outside_archive``,
    ``not_dicom``, ``truncated``, ``decompression_bomb`` or (out of memory)
    ``image_too_large``; nothing else.
    Call it inside :func:`osteo_batch.dicom.quiet.reading` to count what
    pydicom warns; it silences pydicom itself either way.
    """
    from osteo_batch.archive.walk import NotRegularFileError, OutsideArchiveError, open_regular

    silence_pydicom()
    stored = os.fspath(path)
    try:
        f = open_regular(stored, roots)
    except NotRegularFileError:
        raise DatasetError(Reason.NOT_REGULAR_FILE.value, "not a regular file") from None
    except OutsideArchiveError:
        raise DatasetError(Reason.OUTSIDE_ARCHIVE.value, "resolves outside the archive") from None
    except OSError as e:
        raise DatasetError(Reason.UNREADABLE.value, type(e).__name__) from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise DatasetError(Reason.EMPTY_FILE.value, "zero bytes")
            return _read(f, size, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
        except DatasetError:
            raise
        except MemoryError:
            raise DatasetError(Reason.IMAGE_TOO_LARGE.value, "out of memory while reading") from None
        except OSError as e:  # pydicom raises a bare OSError ("No tag to read") on damaged data: no errno
            raise DatasetError(Reason.UNREADABLE.value if e.errno is not None else Reason.NOT_DICOM.value,
                               type(e).__name__) from None
        except RecursionError:
            raise DatasetError(Reason.NOT_DICOM.value, "nested too deep") from None
        except Exception as e:  # pydicom raises a wide range on garbage input
            raise DatasetError(Reason.NOT_DICOM.value, type(e).__name__) from None


def _read(f: BinaryIO, size: int, *, stop_before_pixels: bool, defer_size: int | None):
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    preamble = read_preamble(f, True)
    start = f.tell()  # 132 after a DICM prefix, else 0
    meta_state, saw_meta = walk_meta(FileSource(f, start, size))
    began = preamble is not None or saw_meta  # DICM, or a File Meta group
    if meta_state == TRUNCATED:
        raise DatasetError(Reason.TRUNCATED.value, "file ends inside its File Meta group")
    f.seek(start)
    file_meta = _read_file_meta_info(f)
    data_start = f.tell()
    ts = str(file_meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
    if began and data_start >= size:
        raise DatasetError(Reason.TRUNCATED.value, "file ends before its data set")
    if ts == DEFLATED:
        return read_deflated(f, preamble, file_meta, data_start, stop_before_pixels=stop_before_pixels,
                             defer_size=defer_size)

    implicit, little = _encoding(f, data_start, size, ts)
    state = walk_dataset(FileSource(f, data_start, size=size), implicit, little)
    if state == TRUNCATED:
        if not began and not _identifying(f):
            raise DatasetError(Reason.NOT_DICOM.value, "no data set")
        raise DatasetError(Reason.TRUNCATED.value, "file ends inside an element")
    f.seek(0)
    ds = pydicom.dcmread(f, defer_size=defer_size, stop_before_pixels=stop_before_pixels, force=True)
    _detach(ds)
    px = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
    tell, length = getattr(px, "value_tell", None), getattr(px, "length", None)
    if tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > size:
        raise DatasetError(Reason.TRUNCATED.value, "pixel data runs past the end of the file")
    return ds


def _identifying(f: BinaryIO) -> bool:
    """Whether what a cut file holds has a tag every real data set has (else it was never DICOM)."""
    import pydicom

    f.seek(0)
    try:
        head = pydicom.dcmread(f, stop_before_pixels=True, force=True, defer_size=1024)
        return len(head) > 0 and any(k in head for k in IDENTIFYING)
    except Exception:  # garbage pydicom cannot even start on
        return False


def _detach(ds) -> None:
    """Forget the (closed) file, so a deferred value raises instead of reading whatever reuses its descriptor."""
    ds.filename = None
    ds.buffer = None
    ds.fileobj_type = None


def _encoding(f: BinaryIO, data_start: int, size: int, ts: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) as pydicom will read the data set (it trusts the first element over the meta)."""
    from pydicom.uid import UID

    f.seek(data_start)
    head = f.read(6)
    if len(head) < 6:
        return True, True
    looks_explicit = 0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B
    if ts:
        try:
            uid = UID(ts)
            little = uid.is_little_endian if uid.is_transfer_syntax else True
        except Exception:
            little = True
    else:  # no meta: pydicom's guess (a big endian group 0x0008 reads as 0x0800)
        little = not (looks_explicit and struct.unpack("<H", head[:2])[0] >= 1024)
    return (not looks_explicit), little
