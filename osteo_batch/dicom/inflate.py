"""Inflate a deflated data set no further than its header justifies.

Why not pydicom's: pydicom inflates a Deflated Explicit VR Little Endian
(1.2.840.10008.1.2.1.99) data set in one ``zlib.decompress`` call, so a 2 MB
file that inflates to 2 GiB takes 2 GiB. Here the data set is inflated as it
is read, in chunks, and may grow only as far as the header justifies:
:data:`~osteo_batch.dicom.limits.HEADER_ALLOWANCE` for the elements before
the pixels, then what Rows x Columns x Samples x Frames x Bits Allocated make
(the rule :func:`osteo_batch.dicom.frames.check_frames` applies to a
compressed frame). Beyond that, :class:`~osteo_batch.dicom.rejections.DatasetError`
``decompression_bomb``, before the bytes are held: at most about one chunk
beyond what is read is ever in memory. A stream that is cut is ``truncated``.
Called by :func:`osteo_batch.dicom.dataset.open_dataset`, the one way a file is opened.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from osteo_batch.dicom.limits import HEADER_ALLOWANCE, MAX_PIXEL_BYTES, pixel_bytes
from osteo_batch.dicom.rejections import DatasetError
from osteo_batch.dicom.truncation import PIXEL_TAGS
from osteo_batch.reasons import Reason

DEFLATED = "1.2.840.10008.1.2.1.99"
#: Largest piece inflated at once.
_CHUNK = 1024 * 1024
#: Inflated bytes kept behind the read position, for pydicom's short backward seeks.
_KEEP = 1024 * 1024


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


def read_deflated(f: BinaryIO, preamble, file_meta, data_start: int, *, stop_before_pixels: bool,
                   defer_size: int | None):
    """Parse a deflated data set from its inflating stream, within what its header justifies."""
    from pydicom.dataset import FileDataset
    from pydicom.filereader import read_dataset

    def at_pixels(tag, vr, length) -> bool:
        return int(tag) in PIXEL_TAGS

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
