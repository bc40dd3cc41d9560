"""What a compressed frame's own header says it decodes to, read from its marker segments.

Why our own parsers: a decoder allocates what the codestream claims, not
what the DICOM header says, and OpenJPEG allocates its per-tile and
per-component structures while it reads the header; so the claim must be
read before any decoder sees the frame. Each parser reads only the main
header (JPEG and JPEG-LS: SOI to the first SOS, ITU-T T.81 B.2 and T.87 C.2;
JPEG 2000 and HTJ2K: SIZ and COD, ISO 15444-1 A.5.1 and A.6.1; RLE: the
64-byte segment table, PS3.5 G.5) and raises ``ValueError`` on a header it
cannot follow. Judging a claim against the DICOM header is
:mod:`osteo_batch.dicom.frames`' job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: The start of a JP2 file (a signature box), which some encoders put in a JPEG 2000 frame.
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True)
class FrameClaim:
    """What a compressed frame's own header says it decodes to (what a decoder would allocate)."""

    rows: int
    columns: int
    samples: int  # components (JPEG Nf, JPEG 2000 Csiz); 1 for RLE
    bits: int  # the largest sample precision (JPEG P, JPEG 2000 Ssiz)
    signed: bool = False  # JPEG 2000 only
    levels: int = 0  # JPEG 2000 wavelet decomposition levels (COD)
    tiles: int = 1  # JPEG 2000 only
    segments: int = 0  # RLE only


def _u16(b: bytes, i: int) -> int:
    if i + 2 > len(b):
        raise ValueError("codestream ends inside a marker segment")
    return (b[i] << 8) | b[i + 1]


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # 0xF7: JPEG-LS SOF55


def jpeg_claim(frame: bytes) -> FrameClaim:
    """The frame header of a JPEG or JPEG-LS codestream (ITU-T T.81 B.2, T.87 C.2).

    Walks the marker segments from SOI to the first scan (SOS), where every
    frame parameter has been declared. A height of 0 (left to a DNL marker)
    claims 0 rows and so disagrees with any header. JPEG-LS may give oversize
    dimensions in an LSE segment (ID 4); the larger of the two claims counts.
    """
    if frame[:2] != b"\xff\xd8":
        raise ValueError("no SOI marker")
    n, pos, sof, lse = len(frame), 2, None, (0, 0)
    while True:
        if pos >= n or frame[pos] != 0xFF:
            raise ValueError("expected a marker")
        while pos < n and frame[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise ValueError("codestream ends at a marker")
        m = frame[pos]
        pos += 1
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # TEM, RSTn: no length
            continue
        if m == 0xD9:
            raise ValueError("EOI before any scan")
        length = _u16(frame, pos)
        if length < 2 or pos + length > n:
            raise ValueError("marker segment runs past the codestream")
        seg = frame[pos + 2 : pos + length]
        if m in _SOF:
            if sof is not None:
                raise ValueError("two frame headers")
            if len(seg) < 6:
                raise ValueError("short frame header")
            sof = (seg[0], _u16(seg, 1), _u16(seg, 3), seg[5])  # P, Y, X, Nf
        elif m == 0xDE:
            raise ValueError("hierarchical JPEG (DHP), which no DICOM JPEG syntax allows")
        elif m == 0xF8 and len(seg) >= 2 and seg[0] == 4:  # LSE, oversize image dimension
            w = seg[1]
            if w not in (2, 3, 4) or len(seg) < 2 + 2 * w:
                raise ValueError("bad LSE oversize dimension segment")
            lse = (int.from_bytes(seg[2 : 2 + w], "big"), int.from_bytes(seg[2 + w : 2 + 2 * w], "big"))
        elif m == 0xDA:
            break
        pos += length
    if sof is None:
        raise ValueError("no frame header before the first scan")
    p, y, x, nf = sof
    return FrameClaim(rows=max(y, lse[0]), columns=max(x, lse[1]), samples=nf, bits=p)


def j2k_claim(frame: bytes) -> FrameClaim:
    """The SIZ and COD marker segments of a JPEG 2000 (or HTJ2K) codestream (ISO 15444-1 A.5.1, A.6.1).

    Parsed here rather than by OpenJPEG, because OpenJPEG allocates its
    per-tile and per-component structures while it reads the header. A JP2
    file in a frame is followed to its contiguous codestream box.
    """
    start = 0
    if frame.startswith(JP2_SIGNATURE):
        start = -1
        pos = 0
        while pos + 8 <= len(frame):
            lbox, tbox, hdr = struct.unpack(">I", frame[pos : pos + 4])[0], frame[pos + 4 : pos + 8], 8
            if lbox == 1:
                if pos + 16 > len(frame):
                    break
                lbox, hdr = struct.unpack(">Q", frame[pos + 8 : pos + 16])[0], 16
            elif lbox == 0:
                lbox = len(frame) - pos
            if tbox == b"jp2c":
                start = pos + hdr
                break
            if lbox < hdr:
                raise ValueError("bad JP2 box length")
            pos += lbox
        if start < 0:
            raise ValueError("JP2 file without a codestream box")
    if frame[start : start + 4] != b"\xff\x4f\xff\x51":
        raise ValueError("no SOC and SIZ markers")
    lsiz = _u16(frame, start + 4)
    if lsiz < 41 or start + 4 + lsiz > len(frame):
        raise ValueError("SIZ segment runs past the codestream")
    _rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz = struct.unpack(">HIIIIIIIIH", frame[start + 6 : start + 42])
    if csiz == 0 or lsiz != 38 + 3 * csiz:
        raise ValueError("SIZ length disagrees with its component count")
    comps = [frame[start + 42 + 3 * k : start + 45 + 3 * k] for k in range(csiz)]
    if xsiz <= xo or ysiz <= yo or xt == 0 or yt == 0 or xto > xo or yto > yo or any(c[1] == 0 or c[2] == 0 for c in comps):
        raise ValueError("SIZ describes no image")
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    levels, pos = 0, start + 4 + lsiz
    while pos + 4 <= len(frame):  # the rest of the main header, to the first tile (SOT)
        m = _u16(frame, pos)
        if m in (0xFF90, 0xFFD9) or m >> 8 != 0xFF:
            break
        if m == 0xFF52 and pos + 9 < len(frame):  # COD: Lcod, Scod, order, layers (2), MCT, then levels
            levels = frame[pos + 9]
        pos += 2 + _u16(frame, pos + 2)
    return FrameClaim(rows=ysiz - yo, columns=xsiz - xo, samples=csiz, bits=max((c[0] & 0x7F) + 1 for c in comps),
                      signed=bool(comps[0][0] & 0x80), levels=levels, tiles=tiles)


def rle_claim(frame: bytes) -> FrameClaim:
    """The RLE header (PS3.5 G.5): segment count and offsets, which must run in order inside the frame.

    An RLE frame does not state its rows and columns; a decoder takes them
    from the DICOM header, so only the segments are claimed (rows and columns
    are 0 here).
    """
    if len(frame) < 64:
        raise ValueError("RLE frame shorter than its header")
    nseg, *offsets = struct.unpack("<16I", frame[:64])
    if not 1 <= nseg <= 15:
        raise ValueError("RLE header with no or more than 15 segments")
    offs = offsets[:nseg]
    if offs[0] != 64 or any(b <= a for a, b in zip(offs, offs[1:])) or offs[-1] >= len(frame):
        raise ValueError("RLE segment offsets out of order or past the frame")
    return FrameClaim(rows=0, columns=0, samples=1, bits=8, segments=nseg)


def rle_decoded_length(segment: bytes, limit: int) -> int:
    """Bytes the PackBits segment decodes to, counted up to just past ``limit`` (then it stops)."""
    n = pos = 0
    end = len(segment)
    while pos < end and n <= limit:
        h = segment[pos]
        if h < 128:  # literal run of h + 1 bytes
            n += h + 1
            pos += h + 2
        elif h > 128:  # one byte repeated 257 - h times
            n += 257 - h
            pos += 2
        else:  # 128: no operation
            pos += 1
    return n
