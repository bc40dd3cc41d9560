"""Open a DICOM file with every byte accounted for: bounded inflation, complete structure, typed refusals.

The one way osteo-batch opens a DICOM file, for the header reader and the
pixel reader alike (:func:`open_dataset`). Three things a plain
``pydicom.dcmread(path, force=True)`` gets wrong on a hostile archive:

- **Deflate bombs.** pydicom inflates a Deflated Explicit VR Little Endian
  (1.2.840.10008.1.2.1.99) data set in one ``zlib.decompress`` call: a 2 MB
  file that inflates to 2 GiB takes 2 GiB. Here the data set is inflated as
  it is read, in chunks, and may grow only as far as the header justifies:
  :data:`HEADER_ALLOWANCE` for the elements before the pixels, then what
  Rows x Columns x Samples x Frames x Bits Allocated make (the rule
  ``pixels.check_codestream`` applies to a JPEG 2000 codestream). Beyond
  that, :class:`DatasetError` ``decompression_bomb``, before the bytes are
  held: at most about one chunk beyond what is read is ever in memory.
- **Partial transfers.** pydicom reads a file cut inside an element without
  a word (a short value) or drops the whole data set. Here the element
  structure is walked first (headers only, values skipped by seeking): a file
  that ends inside its meta, an element, a sequence or its Pixel Data is
  ``truncated`` if it began like DICOM (the ``DICM`` prefix, a File Meta
  group, or standard identifying tags), ``not_dicom`` if it was garbage from
  the start. A deflated data set whose stream is cut is ``truncated`` too.
  A file cut exactly between two elements before its Pixel Data cannot be
  told from one that lacks them (the header reader calls it
  ``no_pixel_data``).
- **Files that are not files.** The file is opened by
  :func:`osteo_batch.archive.walk.open_regular`: a FIFO or device is refused
  (``not_regular_file``), a path resolving outside the archive's roots is
  never opened (``outside_archive``).

The file is closed when :func:`open_dataset` returns: values left deferred
(``defer_size``) are located (offset and length) but can no longer be loaded.
Nothing here quotes a header value or a path in a message.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import BinaryIO

from osteo_batch.reasons import Reason

DEFLATED = "1.2.840.10008.1.2.1.99"
#: What a deflated data set may inflate to besides its pixels (every other element together).
HEADER_ALLOWANCE = 16 * 1024 * 1024
#: Refuse images whose header claims more than this many bytes of pixels (``image_too_large``).
MAX_PIXEL_BYTES = 512 * 1024 * 1024
#: Largest piece inflated at once.
_CHUNK = 1024 * 1024
#: Inflated bytes kept behind the read position, for pydicom's short backward seeks.
_KEEP = 1024 * 1024
_MAX_DEPTH = 32

_PIXEL_TAGS = {0x7FE00010, 0x7FE00009, 0x7FE00008}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
#: Tags any real data set has at least one of (a file without any is not DICOM).
IDENTIFYING = ("SOPInstanceUID", "SOPClassUID", "PatientID", "Modality", "StudyInstanceUID")


class DatasetError(Exception):
    """A file that cannot be opened as a data set; ``reason`` is a :class:`~osteo_batch.reasons.Reason` code.

    The message holds the reason and a short detail, never a header value or a path.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def pixel_bytes(rows: int | None, cols: int | None, bits: int | None, samples: int | None = 1,
                frames: int | None = 1) -> int:
    """Bytes of native pixel data a header justifies (0 when Rows, Columns or Bits Allocated are missing)."""
    if not rows or not cols or not bits or rows < 0 or cols < 0 or bits < 0:
        return 0
    samples = samples if samples and samples > 0 else 1
    frames = frames if frames and frames > 0 else 1
    return (rows * cols * samples * frames * bits + 7) // 8


def open_dataset(path: str | os.PathLike, roots: tuple[str, ...] | None = None, *,
                 stop_before_pixels: bool = False, defer_size: int | None = None):
    """Read ``path`` (a stored archive path, see ``osteo_batch.archive.walk.db_path``) as a pydicom ``FileDataset``.

    ``roots`` (``osteo_batch.archive.walk.real_roots``): refuse a file that
    resolves outside them. ``stop_before_pixels`` and ``defer_size`` are
    pydicom's; either way the whole file is checked to be complete and, when
    deflated, bounded. Raises :class:`DatasetError` with reason
    ``empty_file``, ``unreadable``, ``not_regular_file``, ``outside_archive``,
    ``not_dicom``, ``truncated`` or ``decompression_bomb``; nothing else.
    Call it inside :func:`osteo_batch.dicom.quiet.reading` to count what
    pydicom warns; it silences pydicom itself either way.
    """
    from osteo_batch.archive.walk import NotRegularFileError, OutsideArchiveError, open_regular
    from osteo_batch.dicom.quiet import silence_pydicom

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
    meta_state, saw_meta = _walk_meta(_FileSource(f, start, size))
    began = preamble is not None or saw_meta  # DICM, or a File Meta group
    if meta_state == _TRUNCATED:
        raise DatasetError(Reason.TRUNCATED.value, "file ends inside its File Meta group")
    f.seek(start)
    file_meta = _read_file_meta_info(f)
    data_start = f.tell()
    ts = str(file_meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
    if began and data_start >= size:
        raise DatasetError(Reason.TRUNCATED.value, "file ends before its data set")
    if ts == DEFLATED:
        return _read_deflated(f, preamble, file_meta, data_start, stop_before_pixels=stop_before_pixels,
                              defer_size=defer_size)

    implicit, little = _encoding(f, data_start, size, ts)
    state = _walk_dataset(_FileSource(f, data_start, size=size), implicit, little)
    if state == _TRUNCATED:
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


# -- the structure walk -------------------------------------------------------------------------

_COMPLETE, _TRUNCATED = "complete", "truncated"


class _End(Exception):
    """The data ended inside an element or a sequence."""


class _Damaged(Exception):
    """The structure stops making sense (not the end of the file): leave the verdict to pydicom."""


class _FileSource:
    """Element headers read from a file; values skipped by seeking, never read."""

    def __init__(self, f: BinaryIO, pos: int, size: int):
        self.f, self.size = f, size
        f.seek(pos)
        self.pos = pos

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        self.pos += len(b)
        return b

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _End
        self.pos += n
        self.f.seek(self.pos)


def _walk_meta(src: _FileSource) -> tuple[str, bool]:
    """Walk the File Meta group (0002,eeee) at ``src``: (state, whether there is one).

    Truncated only once a group 0002 tag was seen: a file too short to hold
    one was never a File Meta group.
    """
    declared_end = None
    saw = False
    try:
        while declared_end is None or src.pos < declared_end:
            head = src.read(8)
            if len(head) < 4:
                if saw and head:
                    raise _End
                break
            group, elem = struct.unpack("<HH", head[:4])
            if group != 2:
                break
            saw = True
            if len(head) < 8:
                raise _End
            vr = head[4:6]
            if vr in _LONG_VRS:
                ext = src.read(4)
                if len(ext) < 4:
                    raise _End
                length = struct.unpack("<L", ext)[0]
            elif not (b"AA" <= vr <= b"ZZ"):
                length = struct.unpack("<L", head[4:8])[0]
            else:
                length = struct.unpack("<H", head[6:8])[0]
            if elem == 0 and length == 4:
                v = src.read(4)
                if len(v) < 4:
                    raise _End
                declared_end = src.pos + struct.unpack("<L", v)[0]
            elif length == 0xFFFFFFFF:
                break  # not a meta element any reader could use: the data set's problem
            else:
                src.skip(length)
    except _End:
        return _TRUNCATED, True
    if declared_end is not None and declared_end > src.size:
        return _TRUNCATED, True
    return _COMPLETE, saw


def _walk_dataset(src, implicit: bool, little: bool) -> str:
    """Walk the top-level data set at ``src`` to its end or through its Pixel Data: complete or truncated."""
    try:
        _walk(src, implicit, little, 0)
    except _End:
        return _TRUNCATED
    except _Damaged:
        pass
    return _COMPLETE


def _walk(src, implicit: bool, little: bool, depth: int) -> None:
    """Walk elements to the end of the data (top level) or to an Item Delimitation (nested)."""
    if depth > _MAX_DEPTH:
        raise _Damaged
    e = "<" if little else ">"
    n = 0
    while True:
        head = src.read(8)
        if len(head) < 8:
            if head or depth:  # part of an element header, or the end inside an item
                raise _End
            if n == 0 and depth == 0:
                raise _End  # a data set without a single element
            return
        n += 1
        group, elem = struct.unpack(e + "HH", head[:4])
        tag = group << 16 | elem
        if tag in (_ITEM_END, _SEQ_END):
            if depth:
                return
            raise _Damaged
        if implicit:
            length = struct.unpack(e + "L", head[4:8])[0]
        else:
            vr = head[4:6]
            if vr in _LONG_VRS:
                ext = src.read(4)
                if len(ext) < 4:
                    raise _End
                length = struct.unpack(e + "L", ext)[0]
            elif not (b"AA" <= vr <= b"ZZ"):  # pydicom assumes a switch to implicit VR
                length = struct.unpack(e + "L", head[4:8])[0]
            else:
                length = struct.unpack(e + "H", head[6:8])[0]
        if length == 0xFFFFFFFF:
            _walk_items(src, implicit, little, depth + 1)
        else:
            src.skip(length)
        if depth == 0 and tag in _PIXEL_TAGS:
            return  # the image is complete; what follows cannot make it partial


def _walk_items(src, implicit: bool, little: bool, depth: int) -> None:
    """Walk the items of an undefined-length element (a sequence or encapsulated pixel data)."""
    if depth > _MAX_DEPTH:
        raise _Damaged
    e = "<" if little else ">"
    while True:
        head = src.read(8)
        if len(head) < 8:
            raise _End
        group, elem, length = struct.unpack(e + "HHL", head)
        tag = group << 16 | elem
        if tag == _SEQ_END:
            return
        if tag != _ITEM:
            raise _Damaged
        if length == 0xFFFFFFFF:
            _walk(src, implicit, little, depth + 1)
        else:
            src.skip(length)


# -- deflated data sets -------------------------------------------------------------------------


class _Inflated(io.RawIOBase):
    """The inflated data set of a deflated file, as a seekable stream that never grows past ``cap``.

    Inflated on demand, ``_CHUNK`` at a time; only the bytes being read and
    ``_KEEP`` behind them are held. A forward seek inflates and discards; a
    seek back beyond what is kept starts the stream again (bounded, as ever).
    """

    def __init__(self, raw: BinaryIO, start: int, cap: int):
        super().__init__()
        self._raw, self._start, self.cap = raw, start, cap
        self._restart()

    def _restart(self) -> None:
        self._raw.seek(self._start)
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._pos = 0

    @property
    def complete(self) -> bool:
        """The deflate stream reached its final block (a cut file never does)."""
        return self._z.eof

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("an inflating stream has no known end")
        if offset < self._base:
            self._restart()
        self._pos = max(0, offset)
        return self._pos

    def _more(self) -> bytes:
        """The next inflated bytes; b"" at the end of the stream or of the input."""
        z = self._z
        while not z.eof:
            data = z.unconsumed_tail or self._raw.read(64 * 1024)
            try:
                out = z.decompress(data, _CHUNK)
            except zlib.error:
                raise DatasetError(Reason.NOT_DICOM.value, "deflated data set is damaged") from None
            if out:
                end = self._base + len(self._buf) + len(out)
                if end > self.cap:
                    raise DatasetError(
                        Reason.DECOMPRESSION_BOMB.value,
                        f"deflated data set inflates past {self.cap} bytes, more than its header justifies")
                return out
            if not data:
                return b""  # the input ended before the stream did
        return b""

    def _fill(self, want: int) -> None:
        """Inflate until ``want`` bytes of the stream are available (or it ends), dropping what lies far behind."""
        while self._base + len(self._buf) < want:
            out = self._more()
            if not out:
                return
            end = self._base + len(self._buf) + len(out)
            if end <= self._pos - _KEEP:  # skipped over: never held
                self._buf.clear()
                self._base = end
            else:
                self._buf += out

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self.cap - self._pos)
        self._fill(self._pos + n)
        i = max(0, self._pos - self._base)
        chunk = bytes(self._buf[i : i + n])
        self._pos += len(chunk)
        drop = self._pos - _KEEP - self._base
        if drop > _KEEP:
            del self._buf[:drop]
            self._base += drop
        return chunk

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Inflate to the end of the stream, holding nothing."""
        self._pos = max(self._pos, self._base + len(self._buf))
        self._buf.clear()
        self._base = self._pos
        while True:
            out = self._more()
            if not out:
                return
            self._base += len(out)
            self._pos = self._base


def _justified(ds) -> int:
    def num(keyword: str) -> int | None:
        try:
            v = ds.get(keyword)
            return int(v) if v not in (None, "") else None
        except (TypeError, ValueError, OverflowError):
            return None

    claimed = pixel_bytes(num("Rows"), num("Columns"), num("BitsAllocated"), num("SamplesPerPixel"),
                          num("NumberOfFrames"))
    return min(claimed, MAX_PIXEL_BYTES)


def _read_deflated(f: BinaryIO, preamble, file_meta, data_start: int, *, stop_before_pixels: bool,
                   defer_size: int | None):
    """Parse a deflated data set from its inflating stream, within what its header justifies."""
    from pydicom.dataset import FileDataset
    from pydicom.filereader import read_dataset

    def at_pixels(tag, vr, length) -> bool:
        return int(tag) in _PIXEL_TAGS

    stream = _Inflated(f, data_start, HEADER_ALLOWANCE)
    try:
        ds = read_dataset(stream, False, True, stop_when=at_pixels, defer_size=defer_size)
        stream.cap = HEADER_ALLOWANCE + _justified(ds)
        if not stop_before_pixels:
            rest = read_dataset(stream, False, True, defer_size=defer_size)
            for tag in rest.keys():
                ds[tag] = rest.get_item(tag, keep_deferred=True)
    except DatasetError:
        raise
    except Exception:  # a short value where the stream was cut, or damage: which one?
        stream.cap = max(stream.cap, HEADER_ALLOWANCE + MAX_PIXEL_BYTES)  # the header could not say
        stream.drain()
        if not stream.complete:
            raise DatasetError(Reason.TRUNCATED.value, "deflated data set ends early") from None
        raise
    stream.drain()
    if not stream.complete:
        raise DatasetError(Reason.TRUNCATED.value, "deflated data set ends early")
    if len(ds) == 0:
        raise DatasetError(Reason.TRUNCATED.value, "deflated data set is empty")
    out = FileDataset(None, ds, preamble, file_meta, False, True)
    out.set_original_encoding(False, True, ds._character_set)
    return out
