"""Hostile pixel data: decompression bombs in every compressed syntax, and colour that says it is grey.

Each bomb is a small, valid-looking DICOM file whose header describes a
64 x 48 image (so the sweep accepts it) while its compressed frame claims far
more: rows and columns past any limit, thousands of components, 38-bit
samples, tens of thousands of tiles, more RLE segments or more frames than the
header allows. Frames come from real encoders (OpenJPEG, CharLS, Pillow's
libjpeg, pylibjpeg-rle, and a lossless JPEG from pydicom-data) and only their
headers are edited by hand (SIZ for JPEG 2000, SOF for JPEG, SOF55 and LSE
for JPEG-LS, the RLE header), so everything after the header is what a
decoder would really be given. The outcome each must get is decided when the
pixels are read (``stage="score"``); a bomb must be refused before a decoder
allocates it, which the nightly run checks under a 2.5 GiB memory limit.

The colour cases have one sample per pixel, so a check of Samples per Pixel
alone lets them through: PALETTE COLOR (values that index a colour table),
RGB and YBR_FULL mislabelled with one sample, and a missing Photometric
Interpretation.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from cases import Case, planted
from dicom_factory import dataset, ramp, write

REJECTED = "rejected"
BOMB = frozenset({"decompression_bomb"})
COLOUR = frozenset({"pixel_decode_failed"})
ROWS, COLS = 64, 48


# ------------------------------------------------------------------ building blocks


def grey_dataset(token: str, uid: str, *, bits: int = 16, pixels: np.ndarray | None = None, rows: int = ROWS, cols: int = COLS):
    """An eligible chest radiograph data set with planted patient data (``bits`` 8 or 16)."""
    px = ramp(rows, cols) if pixels is None else pixels
    ds = planted(dataset(px, rows=rows, cols=cols, sop_instance_uid=uid), token)
    if bits == 8:
        px = (px >> 4).astype(np.uint8)
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.PixelData = px.tobytes()
    return ds, px


def encapsulate_frames(ds, syntax: str, frames: list[bytes], *, has_bot: bool = True) -> None:
    """Put ``frames`` in ``ds`` as encapsulated pixel data of ``syntax`` (in place)."""
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate(frames, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "00"


def first_frame(ds) -> bytes:
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=1))


def compressed(token: str, uid: str, syntax: str, *, rows: int = ROWS, cols: int = COLS, **kw) -> tuple[object, bytes]:
    """A data set compressed with pydicom's encoders, and its one frame."""
    ds, px = grey_dataset(token, uid, rows=rows, cols=cols)
    ds.compress(syntax, px, generate_instance_uid=False, **kw)
    return ds, first_frame(ds)


def j2k(token: str, uid: str, syntax: str = "1.2.840.10008.1.2.4.90", **size) -> tuple[object, bytes]:
    """A real OpenJPEG codestream (lossless, or lossy at 10:1 for 1.2.840.10008.1.2.4.91)."""
    kw = {"j2k_cr": [10]} if syntax.endswith(".91") else {}
    return compressed(token, uid, syntax, encoding_plugin="pylibjpeg", **size, **kw)


def _siz(frame: bytes) -> tuple[int, int]:
    """Offset and length of the SIZ marker segment (after SOC), with its marker."""
    assert frame[:4] == b"\xff\x4f\xff\x51", "not a raw J2K codestream"
    return 2, 2 + struct.unpack(">H", frame[4:6])[0]


def _patch_siz(frame: bytes, *, rows: int | None = None, cols: int | None = None, comps: int | None = None,
               precision: int | None = None, tile: tuple[int, int] | None = None, rsiz: int | None = None) -> bytes:
    """Rewrite the SIZ segment of a J2K codestream (ISO 15444-1 A.5.1) with other claims."""
    start, length = _siz(frame)
    seg = frame[start : start + length]
    r, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz = struct.unpack(">HIIIIIIIIH", seg[4:40])
    comp = seg[40:43]
    if rows is not None:
        ysiz, yt = yo + rows, max(yt, yo + rows) if tile is None else yt
    if cols is not None:
        xsiz, xt = xo + cols, max(xt, xo + cols) if tile is None else xt
    if tile is not None:
        yt, xt = tile
    if precision is not None:
        comp = bytes([(comp[0] & 0x80) | (precision - 1)]) + comp[1:]
    n = csiz if comps is None else comps
    body = struct.pack(">HIIIIIIIIH", r if rsiz is None else rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, n) + comp * n
    return frame[:start] + b"\xff\x51" + struct.pack(">H", len(body) + 2) + body + frame[start + length :]


def _htj2k(frame: bytes, **kw) -> bytes:
    """A J2K codestream made HTJ2K-shaped (ISO 15444-15): Rsiz bit 14 and a CAP segment after SIZ."""
    out = _patch_siz(frame, rsiz=0x4000, **kw)
    _, length = _siz(out)
    cap = b"\xff\x50" + struct.pack(">HIH", 8, 1 << 17, 0)  # Pcap: Part 15; Ccap15: HT for all code-blocks
    return out[: 2 + length] + cap + out[2 + length :]


def pillow_jpeg(px8: np.ndarray) -> bytes:
    """A baseline 8-bit greyscale JPEG from Pillow's libjpeg."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(px8, mode="L").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _jpeg_segment(frame: bytes, markers: set[int]) -> tuple[int, int]:
    """Offset and length (with the marker) of the first segment with one of ``markers``, before the scan."""
    pos = 2
    while pos < len(frame):
        assert frame[pos] == 0xFF
        m, length = frame[pos + 1], struct.unpack(">H", frame[pos + 2 : pos + 4])[0]
        if m in markers:
            return pos, length + 2
        assert m != 0xDA, "no such segment before the scan"
        pos += length + 2
    raise AssertionError("no such segment")


_SOFS = {0xC0, 0xC1, 0xC2, 0xC3, 0xF7}


def _patch_sof(frame: bytes, *, rows: int | None = None, cols: int | None = None, comps: int | None = None) -> bytes:
    """Rewrite the SOF (or JPEG-LS SOF55) segment: P, Y, X, Nf and one component spec per component."""
    pos, length = _jpeg_segment(frame, _SOFS)
    seg = frame[pos : pos + length]
    p, y, x, nf = seg[4], *struct.unpack(">HH", seg[5:9]), seg[9]
    spec = seg[10:13]
    y, x = (y if rows is None else rows), (x if cols is None else cols)
    n = nf if comps is None else comps
    specs = b"".join(bytes([k + 1]) + spec[1:] for k in range(n))
    body = bytes([p]) + struct.pack(">HH", y, x) + bytes([n]) + specs
    return frame[:pos] + seg[:2] + struct.pack(">H", len(body) + 2) + body + frame[pos + length :]


def _lse_oversize(frame: bytes, rows: int, cols: int) -> bytes:
    """JPEG-LS with Y = X = 0 in SOF55 and the real size in an LSE oversize segment (ID 4, T.87 C.2.4.1.4)."""
    out = _patch_sof(frame, rows=0, cols=0)
    pos, length = _jpeg_segment(out, {0xF7})
    lse = b"\xff\xf8" + struct.pack(">HBB", 2 + 2 + 8, 4, 4) + struct.pack(">II", rows, cols)
    return out[: pos + length] + lse + out[pos + length :]


def lossless_jpeg_frame() -> tuple[bytes, int, int, int]:
    """A JPEG lossless (process 14, SV1) frame from pydicom-data's 8-bit file, with its rows, columns, bits.

    No Python library writes lossless JPEG; this file's frame is real encoder output.
    """
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm", download=False)
    assert path, "pydicom-data (the test extra) is needed for the lossless JPEG cases"
    src = pydicom.dcmread(path)
    return first_frame(src), int(src.Rows), int(src.Columns), int(src.BitsAllocated)


def _extended_jpeg_frame() -> tuple[bytes, int, int]:
    """A 12-bit JPEG extended (process 4) frame from pydicom's own test file, with its rows and columns."""
    import pydicom
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file("JPGExtended.dcm", download=False))
    return first_frame(src), int(src.Rows), int(src.Columns)


# ------------------------------------------------------------------ the cases


def _bomb(name: str, uid: str, make) -> Case:
    """A case whose file ``make(token, uid)`` returns as a data set; it must be refused as a bomb."""
    def write_(a: Path, o: Path) -> list[str]:
        write(make(name.upper().replace("-", ""), uid), a / name)
        return [name]

    return Case(name, write_, REJECTED, BOMB, stage="score")


def _j2k_bomb(syntax: str, size: tuple[int, int] = (ROWS, COLS), **kw):
    def make(token, uid):
        part1 = syntax if syntax.endswith((".90", ".91")) else "1.2.840.10008.1.2.4.90"
        ds, frame = j2k(token, uid, part1, rows=size[0], cols=size[1])
        frame = _patch_siz(frame, **kw) if syntax.endswith((".90", ".91")) else _htj2k(frame, **kw)
        encapsulate_frames(ds, syntax, [frame])
        return ds

    return make


def _jpeg_bomb(syntax: str, **kw):
    def make(token, uid):
        ds, px = grey_dataset(token, uid, bits=8)
        encapsulate_frames(ds, syntax, [_patch_sof(pillow_jpeg(px), **kw)])
        return ds

    return make


def _extended_bomb(token, uid):
    frame, rows, cols = _extended_jpeg_frame()
    ds, _ = grey_dataset(token, uid, rows=rows, cols=cols)
    encapsulate_frames(ds, "1.2.840.10008.1.2.4.51", [_patch_sof(frame, rows=60000, cols=60000)])
    return ds


def _lossless_bomb(syntax: str, **kw):
    def make(token, uid):
        frame, rows, cols, bits = lossless_jpeg_frame()
        ds, _ = grey_dataset(token, uid, bits=bits, rows=rows, cols=cols)
        encapsulate_frames(ds, syntax, [_patch_sof(frame, **kw)])
        return ds

    return make


def _jpegls_bomb(syntax: str, *, lse: bool = False, **kw):
    def make(token, uid):
        extra = {"jls_error": 2} if syntax.endswith(".81") else {}
        ds, frame = compressed(token, uid, syntax, encoding_plugin="pyjpegls", **extra)
        frame = _lse_oversize(frame, 100_000, 100_000) if lse else _patch_sof(frame, **kw)
        encapsulate_frames(ds, syntax, [frame])
        return ds

    return make


def _rle_more_segments(token, uid):
    """15 segments (the most the header can list) where 16-bit grey needs 2."""
    ds, frame = compressed(token, uid, "1.2.840.10008.1.2.5", encoding_plugin="pylibjpeg")
    nseg, *offs = struct.unpack("<16I", frame[:64])
    assert nseg == 2
    body = frame[64:]
    step = max(1, len(body) // 15)
    header = struct.pack("<16I", 15, *[64 + k * step for k in range(15)])
    encapsulate_frames(ds, "1.2.840.10008.1.2.5", [header + body])
    return ds


def _rle_long_segments(token, uid):
    """Both segments decode their Rows x Columns bytes, then go on: ~64x more, from runs of 128 copies.

    pylibjpeg-rle (a dependency) writes into a frame of exactly Rows x Columns and stops,
    so nothing is allocated and the image decodes; pydicom's own RLE decoder would
    allocate it all, so without pylibjpeg-rle the pixel pipeline counts first and refuses.
    """
    ds, frame = compressed(token, uid, "1.2.840.10008.1.2.5", encoding_plugin="pylibjpeg")
    nseg, o1, o2, *_ = struct.unpack("<16I", frame[:64])
    tail = b"\x81\x00" * 200_000  # 200,000 runs of 128 zero bytes: 25.6 MB from 400 kB
    s1, s2 = frame[o1:o2] + tail, frame[o2:] + tail
    header = struct.pack("<16I", 2, 64, 64 + len(s1), *[0] * 13)
    encapsulate_frames(ds, "1.2.840.10008.1.2.5", [header + s1 + s2])
    return ds


def _bot_frames(token, uid):
    """A Basic Offset Table of 500 frames where (0028,0008) Number of Frames is absent (one frame)."""
    ds, frame = j2k(token, uid)
    encapsulate_frames(ds, "1.2.840.10008.1.2.4.90", [frame] * 500)
    return ds


def _fragment_frames(token, uid):
    """Number of Frames 2, no offset table, 400 fragments that are each a whole frame."""
    ds, frame = j2k(token, uid)
    encapsulate_frames(ds, "1.2.840.10008.1.2.4.90", [frame] * 400, has_bot=False)
    ds.NumberOfFrames = 2
    return ds


def _deflated_frame(a: Path, o: Path) -> list[str]:
    """Deflated Image Frame Compression (1.2.840.10008.1.2.8.1): 64 MiB of zeros in a 64 kB frame.

    pydicom 3.0 does not know the syntax and will not write it, so the file is
    written as JPEG 2000 (a UID of the same length) and its meta header edited.
    """
    name = "px-deflated-frame"
    ds, _ = grey_dataset("PXDEFLATE", "2.25.88051")
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    frame = b"".join(z.compress(chunk) for _ in range(64)) + z.flush()
    encapsulate_frames(ds, "1.2.840.10008.1.2.4.90", [frame])
    path = write(ds, a / name)
    raw = path.read_bytes()
    was, now = b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.8.1\0"
    assert len(was) == len(now) and raw[:400].count(was) == 1
    path.write_bytes(raw.replace(was, now, 1))
    return [name]


def _colour(name: str, uid: str, photometric: str | None, palette: bool = False) -> Case:
    def write_(a: Path, o: Path) -> list[str]:
        ds, px = grey_dataset(name.upper().replace("-", ""), uid, bits=8)
        if photometric is None:
            del ds.PhotometricInterpretation
        else:
            ds.PhotometricInterpretation = photometric
        if palette:  # a real palette: 256 entries, 16-bit, red/green/blue ramps (PS3.3 C.7.6.3.1.5)
            lut = np.arange(256, dtype="<u2") * 257
            for c, data in (("Red", lut), ("Green", lut[::-1].copy()), ("Blue", (lut // 2).astype("<u2"))):
                setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
                setattr(ds, f"{c}PaletteColorLookupTableData", data.tobytes())
        write(ds, a / name)
        return [name]

    return Case(name, write_, REJECTED, COLOUR, stage="score")


CASES: list[Case] = [
    # JPEG 2000 and HTJ2K: the SIZ marker segment
    _bomb("px-j2k-lossless-siz-size", "2.25.88001", _j2k_bomb("1.2.840.10008.1.2.4.90", rows=60000, cols=60000)),
    _bomb("px-j2k-lossy-siz-size", "2.25.88002", _j2k_bomb("1.2.840.10008.1.2.4.91", rows=40000, cols=30000)),
    _bomb("px-j2k-components", "2.25.88003", _j2k_bomb("1.2.840.10008.1.2.4.90", comps=16384)),
    _bomb("px-j2k-precision", "2.25.88004", _j2k_bomb("1.2.840.10008.1.2.4.90", precision=38)),
    _bomb("px-j2k-tiles", "2.25.88005", _j2k_bomb("1.2.840.10008.1.2.4.90", (160, 128), tile=(1, 1))),
    _bomb("px-htj2k-lossless-size", "2.25.88006", _j2k_bomb("1.2.840.10008.1.2.4.201", rows=60000, cols=60000)),
    _bomb("px-htj2k-rpcl-components", "2.25.88007", _j2k_bomb("1.2.840.10008.1.2.4.202", comps=4096)),
    _bomb("px-htj2k-lossy-size", "2.25.88008", _j2k_bomb("1.2.840.10008.1.2.4.203", rows=50000, cols=1)),
    # JPEG: the SOF marker segment
    _bomb("px-jpeg-baseline-sof-size", "2.25.88011", _jpeg_bomb("1.2.840.10008.1.2.4.50", rows=65500, cols=65500)),
    _bomb("px-jpeg-baseline-components", "2.25.88012", _jpeg_bomb("1.2.840.10008.1.2.4.50", comps=255)),
    _bomb("px-jpeg-extended-sof-size", "2.25.88013", _extended_bomb),
    _bomb("px-jpeg-lossless-sof-size", "2.25.88014",
          _lossless_bomb("1.2.840.10008.1.2.4.57", rows=65535, cols=65535)),
    _bomb("px-jpeg-lossless-sv1-components", "2.25.88015", _lossless_bomb("1.2.840.10008.1.2.4.70", comps=200)),
    # JPEG-LS: SOF55, and the LSE oversize-dimension segment
    _bomb("px-jpegls-lossless-sof55-size", "2.25.88021",
          _jpegls_bomb("1.2.840.10008.1.2.4.80", rows=65535, cols=65535)),
    _bomb("px-jpegls-near-lossless-lse-size", "2.25.88022", _jpegls_bomb("1.2.840.10008.1.2.4.81", lse=True)),
    # RLE: the segment table
    _bomb("px-rle-more-segments", "2.25.88031", _rle_more_segments),
    Case("px-rle-segments-run-past-the-frame",
         lambda a, o: [write(_rle_long_segments("PXRLELONG", "2.25.88032"), a / "px-rle-segments-run-past-the-frame")
                       .name],
         None, None, stage="score"),  # decoded bounded (scored) with pylibjpeg-rle, refused as a bomb without it
    # frames beyond Number of Frames
    _bomb("px-frames-basic-offset-table", "2.25.88041", _bot_frames),
    _bomb("px-frames-fragments", "2.25.88042", _fragment_frames),
    # Deflated Image Frame Compression: no installed decoder, and none whose output is bounded
    Case("px-deflated-frame", _deflated_frame, REJECTED, frozenset({"unsupported_transfer_syntax"}), stage="sweep"),
    # colour with one sample per pixel
    _colour("px-palette-color", "2.25.88061", "PALETTE COLOR", palette=True),
    _colour("px-rgb-one-sample", "2.25.88062", "RGB"),
    _colour("px-ybr-one-sample", "2.25.88063", "YBR_FULL"),
    _colour("px-no-photometric", "2.25.88064", None),
]
