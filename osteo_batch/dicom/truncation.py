"""Is the file complete? The element structure walked from the first byte to the pixels, values skipped.

Why walk before parsing: pydicom reads a file cut inside an element without
a word (a short value) or drops the whole data set, so a partial transfer
would look like a damaged or an empty file. Here only element headers are
read, every value is skipped by seeking, and the walk says whether the data
ended inside the File Meta group, an element, a sequence or the Pixel Data
(``truncated``) or reached its end (``complete``). What follows the Pixel
Data cannot make the image partial, so the walk stops there. A structure
that stops making sense before the end is not called truncated: pydicom
gives the verdict on it (:func:`osteo_batch.dicom.dataset.open_dataset`).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from osteo_batch.errors import InternalError

COMPLETE, TRUNCATED = "complete", "truncated"
#: Pixel Data, Float Pixel Data, Double Float Pixel Data: the image, where the walk ends.
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_MAX_DEPTH = 32
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class _End(InternalError):
    """The data ended inside an element or a sequence (caught by the walk: never escapes it)."""

    code = "walk_reached_the_end"


class _Damaged(InternalError):
    """The structure stops making sense (not the end of the file): leave the verdict to pydicom.

    Caught by the walk: never escapes it.
    """

    code = "walk_lost_the_structure"


class FileSource:
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


def walk_meta(src: FileSource) -> tuple[str, bool]:
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
        return TRUNCATED, True
    if declared_end is not None and declared_end > src.size:
        return TRUNCATED, True
    return COMPLETE, saw


def walk_dataset(src: FileSource, implicit: bool, little: bool) -> str:
    """Walk the top-level data set at ``src`` to its end or through its Pixel Data: complete or truncated."""
    try:
        _walk(src, implicit, little, 0)
    except _End:
        return TRUNCATED
    except _Damaged:
        pass
    return COMPLETE


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
        if depth == 0 and tag in PIXEL_TAGS:
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
