"""Hostile headers: deflate bombs, partial transfers, byte-flip mutants, UIDs that run into names, duplicates.

What each group attacks (``osteo_batch.dicom.dataset``, ``.inflate``, ``.truncation``,
``osteo_batch.dicom.headers``):

- ``hdr-bomb-*``: Deflated Explicit VR Little Endian files of a few kB to
  2 MB that inflate to 64 MiB, 1 GiB or 2 GiB (trailing padding, a Pixel Data
  element that claims far more than Rows x Columns, a private element before
  the image attributes). Written streamingly: one MiB of zeros is deflated
  once (after a full flush, which resets the compressor's history) and its
  bytes repeated, so a 1 GiB bomb costs 1 MB and a few ms to write. Each must
  be ``decompression_bomb`` without the reader ever holding the inflated bytes.
- ``hdr-cut-*``: real files (native, JPEG 2000, RLE, deflated, no File Meta)
  cut inside the meta, inside an element header or value, inside Pixel Data
  or a fragment, before the sequence delimiter: ``truncated``. Files garbage
  from their first byte: ``not_dicom``.
- ``hdr-flip-*``: a fixed seed of byte flips in the headers of a few valid
  files: any outcome, but one row each, no crash and nothing printed.
- ``hdr-ui-runon-*``: a UID element whose length runs over the following
  elements into Patient Name (pydicom's warning used to print the name).
- ``hdr-dup-*``: two copies of one SOP Instance UID, the one with a damaged
  header byte first in path order: the intact copy must be kept (scored),
  the damaged one is ``duplicate_sop_instance_uid``.

Every file holds planted patient data (:func:`cases.planted`), each its own
SOP Instance UID (``2.25.66xxx``) unless it is a duplicate on purpose.
"""

from __future__ import annotations

import copy
import functools
import io
import random
import struct
import zlib
from pathlib import Path

from cases import Case, planted
from dicom_factory import dataset

REJECTED = "rejected"
BOMB = frozenset({"decompression_bomb"})
TRUNCATED = frozenset({"truncated"})
NOT_DICOM = frozenset({"not_dicom"})
NO_UID = frozenset({"missing_sop_instance_uid"})
DUPLICATE = frozenset({"duplicate_sop_instance_uid"})

DEFLATED = "1.2.840.10008.1.2.1.99"
MIB = 1024 * 1024


def uid(n: int) -> str:
    return f"2.25.{66000 + n}"


def planted_dataset(token: str, n: int, **kw):
    """An eligible 64x48 image (the factory's) with planted data and SOP Instance UID ``uid(n)``."""
    ds = planted(dataset(sop_instance_uid=uid(n), **kw), token)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def encode(ds, *, syntax: str | None = None, implicit_no_meta: bool = False) -> bytes:
    """The file bytes of ``ds`` (in ``syntax`` when given; compressed syntaxes via ``ds.compress``)."""
    from pydicom.uid import ImplicitVRLittleEndian

    ds = copy.deepcopy(ds)
    if syntax in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"):
        ds.compress(syntax, generate_instance_uid=False)
    elif syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    if implicit_no_meta:
        del ds.file_meta
        ds.preamble = None
        ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    else:
        if syntax == ImplicitVRLittleEndian:
            ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=True)
        else:
            ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def offsets(data: bytes) -> dict[str, tuple[int, int]]:
    """(element start, value end) of some elements of an uncompressed-data-set file, by keyword."""
    import pydicom
    from pydicom.datadict import keyword_for_tag

    ds = pydicom.dcmread(io.BytesIO(data), force=True, defer_size=16)
    out: dict[str, tuple[int, int]] = {}
    implicit = ds.original_encoding[0]
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if not hasattr(raw, "length"):  # converted while reading (Specific Character Set)
            continue
        vr = getattr(raw, "VR", None)
        head = 8 if implicit or vr not in {"OB", "OW", "OD", "OF", "OL", "OV", "SQ", "UN", "UC", "UR", "UT"} else 12
        length = raw.length if raw.length != 0xFFFFFFFF else 0
        out[keyword_for_tag(tag) or str(tag)] = (raw.value_tell - head, raw.value_tell + length)
    return out


def meta_end(data: bytes) -> int:
    """Where the File Meta group of a file with a DICM prefix ends."""
    return 132 + 12 + struct.unpack("<L", data[140:144])[0]


def _file(name: str, data: bytes):
    def write_(a: Path, o: Path) -> list[str]:
        (a / name).write_bytes(data)
        return [name]

    return write_


# -- deflate bombs -------------------------------------------------------------------------------


def _element(tag: int, vr: bytes, length: int) -> bytes:
    """An Explicit VR Little Endian element header with a 4-byte length (OB and the like)."""
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + b"\0\0" + struct.pack("<L", length)


def write_deflated(path: Path, meta: bytes, before: bytes, zeros: int, after: bytes = b"") -> int:
    """Write a deflated file: ``meta`` as is, then deflate(``before`` + ``zeros`` zero bytes + ``after``).

    Streamed: each MiB of zeros deflates to the same bytes once the compressor
    was fully flushed before it, so they are computed once and repeated; the
    file costs about ``zeros / 1000`` bytes and no memory. Returns the file size.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    with open(path, "wb") as f:
        f.write(meta)
        f.write(c.compress(before) + c.flush(zlib.Z_FULL_FLUSH))
        full, rest = divmod(zeros, MIB)
        if full:
            block = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
            f.write(block)
            if full > 1:
                again = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
                assert again == block, "a fully flushed compressor must repeat itself"
                f.write(again)
                for _ in range(full - 2):
                    f.write(block)
        f.write(c.compress(bytes(rest) + after) + c.flush(zlib.Z_FINISH))
        return f.tell()


@functools.lru_cache(maxsize=None)
def _deflated_parts(token: str, n: int) -> tuple[bytes, bytes, dict[str, tuple[int, int]]]:
    """(File Meta bytes naming the deflated syntax, the data set to deflate, element offsets in it)."""
    ds = planted_dataset(token, n)
    deflated = encode(ds, syntax=DEFLATED)
    plain = encode(ds)  # Explicit VR Little Endian: the inflated form of a deflated data set
    base = meta_end(plain)
    where = {k: (s - base, e - base) for k, (s, e) in offsets(plain).items() if s >= base}
    return deflated[: meta_end(deflated)], plain[base:], where


def _bomb(name: str, n: int, where: str, size: int) -> Case:
    def write_(a: Path, o: Path) -> list[str]:
        meta, body, off = _deflated_parts(name.upper().replace("-", ""), n)
        if where == "trailing":  # a complete image, then (FFFC,FFFC) Data Set Trailing Padding
            write_deflated(a / name, meta, body + _element(0xFFFCFFFC, b"OB", size), size)
        elif where == "pixels":  # Pixel Data that claims far more than 64 x 48 x 16 bits
            start = off["PixelData"][0]
            write_deflated(a / name, meta, body[:start] + _element(0x7FE00010, b"OW", size), size)
        elif where == "private":  # before the image attributes: no Rows or Columns known yet
            start = off["PatientName"][0]
            creator = struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", 10) + b"OSTEOBOMB "
            write_deflated(a / name, meta, body[:start] + creator + _element(0x00091000, b"OB", size), size,
                           body[start:])
        else:
            raise ValueError(where)
        return [name]

    return Case(name, write_, REJECTED, BOMB)


def _deflated_valid(a: Path, o: Path) -> list[str]:
    meta, body, _ = _deflated_parts("HDRDEFLATEOK", 1)
    write_deflated(a / "hdr-deflated-valid", meta, body, 0)
    return ["hdr-deflated-valid"]


BOMBS = [
    _bomb("hdr-bomb-trailing-64m", 2, "trailing", 64 * MIB),
    _bomb("hdr-bomb-trailing-1g", 3, "trailing", 1024 * MIB),
    _bomb("hdr-bomb-trailing-2g", 4, "trailing", 2048 * MIB),
    _bomb("hdr-bomb-pixels-64m", 5, "pixels", 64 * MIB),
    _bomb("hdr-bomb-pixels-1g", 6, "pixels", 1024 * MIB),
    _bomb("hdr-bomb-private-64m", 7, "private", 64 * MIB),
    _bomb("hdr-bomb-private-1g", 8, "private", 1024 * MIB),
    Case("hdr-deflated-valid", _deflated_valid, "scored", None, stage="score"),
]


# -- partial transfers ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def base_file(kind: str, n: int) -> bytes:
    """A valid planted file: native, j2k, rle, deflated or nometa (implicit VR, no preamble or meta)."""
    ds = planted_dataset(f"HDRCUT{kind.upper()}", n)
    if kind == "native":
        return encode(ds)
    if kind == "j2k":
        return encode(ds, syntax="1.2.840.10008.1.2.4.90")
    if kind == "rle":
        return encode(ds, syntax="1.2.840.10008.1.2.5")
    if kind == "deflated":
        return encode(ds, syntax=DEFLATED)
    if kind == "nometa":
        return encode(ds, implicit_no_meta=True)
    raise ValueError(kind)


BASE_N = {"native": 10, "j2k": 11, "rle": 12, "deflated": 13, "nometa": 14}


def cut_points(kind: str) -> dict[str, int]:
    """Named cut offsets of ``base_file(kind)``, each inside something (never between two elements)."""
    data = base_file(kind, BASE_N[kind])
    n = len(data)
    if kind == "nometa":
        off = offsets(data)
        return {"in-name": off["PatientName"][0] + 12, "in-pixel-header": off["PixelData"][0] + 5,
                "in-pixels": (off["PixelData"][0] + n) // 2, "last-byte": n - 1}
    m = meta_end(data)
    cuts = {"after-dicm": 133, "in-meta-length": 142, "in-meta-ts": m - 6, "meta-only": m}
    if kind == "deflated":  # the stream's last byte (pydicom pads the file to an even length)
        z = zlib.decompressobj(-zlib.MAX_WBITS)
        z.decompress(data[m:])
        end = n - len(z.unused_data)
        cuts.update({"in-deflate-start": m + 3, "in-deflate-middle": (m + end) // 2, "last-byte": end - 1})
        return cuts
    off = offsets(data)
    cuts.update({
        "in-sop-uid": off["SOPInstanceUID"][0] + 11,
        "in-name": off["PatientName"][0] + 12,
        "in-rows-header": off["Rows"][0] + 3,
        "in-pixel-header": off["PixelData"][0] + 9,
    })
    if kind == "native":
        cuts.update({"in-pixels": (off["PixelData"][0] + n) // 2, "last-byte": n - 1})
    else:  # encapsulated: fragments, then the Sequence Delimitation Item (8 bytes)
        cuts.update({"in-offset-table": off["PixelData"][0] + 12 + 4, "in-fragment": (off["PixelData"][0] + n) // 2,
                     "before-delimiter": n - 8, "in-delimiter": n - 3})
    return cuts


def _cut(kind: str, label: str, at: int) -> Case:
    name = f"hdr-cut-{kind}-{label}"

    def write_(a: Path, o: Path) -> list[str]:
        (a / name).write_bytes(base_file(kind, BASE_N[kind])[:at])
        return [name]

    return Case(name, write_, REJECTED, TRUNCATED)


def _garbage(name: str, data_fn) -> Case:
    def write_(a: Path, o: Path) -> list[str]:
        (a / name).write_bytes(data_fn())
        return [name]

    return Case(name, write_, REJECTED, NOT_DICOM)


CUTS = [_cut(kind, label, at) for kind in ("native", "j2k", "rle", "deflated", "nometa")
        for label, at in cut_points(kind).items()]
GARBAGE = [
    _garbage("hdr-garbage-random", lambda: random.Random(66).randbytes(4096)),
    _garbage("hdr-garbage-preamble-only", lambda: bytes(128)),
    _garbage("hdr-garbage-cut-in-dicm", lambda: bytes(128) + b"DI"),
    _garbage("hdr-garbage-text", lambda: b"PACS export log: ZQXPLANTTEXT^Jane 19580214\n" * 40),
]


# -- byte-flip mutants ---------------------------------------------------------------------------


def _mutant(kind: str, i: int, rng: random.Random) -> Case:
    name = f"hdr-flip-{kind}-{i}"
    n = 100 + 10 * list(BASE_N).index(kind) + i
    ds = planted_dataset(f"HDRFLIP{kind.upper()}{i}", n)
    data = bytearray(encode(ds, syntax={"native": None, "j2k": "1.2.840.10008.1.2.4.90", "deflated": DEFLATED}[kind]))
    lo = 132
    hi = len(data) if kind == "deflated" else offsets(bytes(data))["PixelData"][0] + 12
    for _ in range(rng.randint(1, 4)):
        j = rng.randrange(lo, hi)
        data[j] ^= 1 << rng.randrange(8)
    return Case(name, _file(name, bytes(data)), None, None)


def _mutants() -> list[Case]:
    rng = random.Random(20260611)
    return [_mutant(kind, i, rng) for kind in ("native", "j2k", "deflated") for i in range(6)]


# -- UIDs that run into Patient Name ---------------------------------------------------------------


def _runon(name: str, n: int, keyword: str, *, implicit: bool = False, to: str = "end") -> bytes:
    """A file whose ``keyword`` UID element's length is stretched over the elements after it, into Patient Name."""
    from pydicom.uid import ImplicitVRLittleEndian

    ds = planted_dataset(name.upper().replace("-", ""), n)
    data = bytearray(encode(ds, syntax=ImplicitVRLittleEndian if implicit else None))
    off = offsets(bytes(data))
    start, _ = off[keyword]
    value = start + 8
    name_start, name_end = off["PatientName"]
    target = name_end if to == "end" else (name_start + 8 + name_end) // 2
    length = target - value
    if implicit:
        data[start + 4 : start + 8] = struct.pack("<L", length)
    else:
        data[start + 6 : start + 8] = struct.pack("<H", length)
    return bytes(data)


def _runon_case(name: str, n: int, keyword: str, status, reasons, **kw) -> Case:
    return Case(name, _file(name, _runon(name, n, keyword, **kw)), status, reasons)


RUNONS = [
    _runon_case("hdr-ui-runon-sop-class", 30, "SOPClassUID", REJECTED, NO_UID),
    _runon_case("hdr-ui-runon-sop-instance", 31, "SOPInstanceUID", REJECTED, NO_UID),
    _runon_case("hdr-ui-runon-implicit", 32, "SOPInstanceUID", REJECTED, NO_UID, implicit=True),
    # ends inside the name: the name's bytes read as an element header claim more than the file holds
    _runon_case("hdr-ui-runon-mid-name", 33, "SOPInstanceUID", REJECTED, TRUNCATED, to="middle"),
]


# -- duplicates ----------------------------------------------------------------------------------


def _damage(data: bytes, kind: str) -> bytes:
    """One damaged byte of ``kind``: a header value its VR does not allow, or a File Meta that disagrees."""
    b = bytearray(data)
    off = offsets(data)
    if kind == "study-uid":  # a digit of (0020,000D) becomes a letter
        s, _ = off["StudyInstanceUID"]
        b[s + 8 + 2] = ord("x")
    elif kind == "series-uid":
        s, _ = off["SeriesInstanceUID"]
        b[s + 8 + 3] = ord("A")
    elif kind == "study-time":  # TM 093000 -> 09300:
        s, _ = off["StudyTime"]
        b[s + 8 + 5] = ord(":")
    elif kind == "name-utf8":  # a byte no UTF-8 text holds, in Patient Name (ISO_IR 192)
        s, _ = off["PatientName"]
        b[s + 8 + 3] = 0xFF
    elif kind == "meta-uid":  # (0002,0003) names another instance than (0008,0018): still a valid UID
        i = data.find(b"\x02\x00\x03\x00UI")
        j = i + 8 + data[i + 6] - 2
        b[j] = ord("7") if b[j] != ord("7") else ord("8")
    else:
        raise ValueError(kind)
    return bytes(b)


def _duplicates(kind: str, n: int) -> list[Case]:
    base = f"hdr-dup-{kind}"
    token = f"HDRDUP{kind.upper().replace('-', '')}"

    def intact() -> bytes:
        return encode(planted_dataset(token, n))

    # the damaged copy sorts first by path: path order alone would keep it
    damaged = Case(f"{base}-0-damaged", lambda a, o: _file(f"{base}-0-damaged", _damage(intact(), kind))(a, o),
                   "duplicate", DUPLICATE)
    kept = Case(f"{base}-1-intact", lambda a, o: _file(f"{base}-1-intact", intact())(a, o), "scored", None,
                stage="score")
    return [damaged, kept]


DUPLICATES = [c for i, kind in enumerate(("study-uid", "series-uid", "study-time", "name-utf8", "meta-uid"))
              for c in _duplicates(kind, 40 + i)]


CASES: list[Case] = [*BOMBS, *CUTS, *GARBAGE, *_mutants(), *RUNONS, *DUPLICATES]
