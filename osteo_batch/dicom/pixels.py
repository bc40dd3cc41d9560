"""The pixel pipeline: stored values to the image a radiologist's viewer shows.

The standard's order, each step a pure function of (array, dataset):

1. decode (pydicom with the pylibjpeg plugins for JPEG 2000 and RLE);
2. modality LUT or rescale slope/intercept (:func:`pydicom.pixels.apply_modality_lut`);
3. VOI LUT or window centre/width (:func:`pydicom.pixels.apply_voi_lut`), falling
   back to a percentile window when the header has none or a broken one;
4. MONOCHROME1 inversion, so bone is always bright;
5. scale to [0, 1], pad to a square (aspect kept, anatomy not cropped) and
   resize with antialiasing to the model's input size.

Step 1 decodes only the resolution the model needs (:func:`decode_reduced`):
a JPEG 2000 codestream holds its image at every power-of-two resolution, and
reading a reduced level (through OpenJPEG's resolution factor, via glymur) is
over 10x faster than a full decode. Other syntaxes decode in full and are
averaged down by the same power of two, so steps 2-5 run on a small array.
The reduction stops while the longer side is still at least the model's input
size, so the final resize is always an antialiased downscale.

Multi-frame images use their first frame, and only it is decoded; colour
images are refused (no chest radiograph is stored in colour, so one is a
secondary capture or a screenshot), PALETTE COLOR included.

Nothing reaches a decoder unchecked (:func:`check_frames`): a compressed
frame's own header must claim the image the DICOM header describes, and the
DICOM header must be within the sweep's limits, so a decompression bomb is
refused from its first bytes. Files are opened only when they are regular
files inside the archive (:func:`read_dataset`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import numpy as np

from osteo_batch.reasons import Reason


class PixelError(ValueError):
    """A file whose pixels cannot be turned into a model input; ``reason`` is a code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DisplayOptions:
    voi: bool = True  # apply the VOI LUT / window from the header
    reduce: bool = True  # decode only the resolution the model needs (False: full decode)
    fallback_percentiles: tuple[float, float] = (0.5, 99.5)


def window(arr: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A VOI window (PS3.3 C.11.2.1.2 and C.11.2.1.3) straight to [0, 1], in float32.

    The output range is the window's, not the image's: a viewer maps the
    window to black and white whatever the extremes of this one image are,
    so a few hot pixels (or averaging them away at a reduced resolution)
    do not change the brightness of the rest.
    """
    x = arr.astype(np.float32, copy=False)
    c, w = np.float32(center), np.float32(width)
    f = function.strip().upper()
    if f == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))).astype(np.float32)
    if f == "LINEAR_EXACT":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if w <= 1:  # LINEAR needs width >= 1; width 1 is a threshold at the centre
        return (x > c - 0.5).astype(np.float32)
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


def _first(v) -> float:
    return float(v[0]) if isinstance(v, (list, tuple)) or getattr(v, "VM", 1) > 1 else float(v)


def apply_voi(arr: np.ndarray, ds, opts: DisplayOptions) -> np.ndarray:
    """VOI LUT or window from the header, else a percentile window; float32 in [0, 1]."""
    if opts.voi and "VOILUTSequence" in ds:
        try:
            from pydicom.pixels import apply_voi_lut

            item = ds.VOILUTSequence[0]
            lut = np.asarray(item.LUTData, dtype=np.float32)
            out = apply_voi_lut(arr, ds, index=0, prefer_lut=True).astype(np.float32)
            lo, hi = float(lut.min()), float(lut.max())
            if hi > lo:
                return np.clip((out - lo) / (hi - lo), 0.0, 1.0)
        except Exception:  # a broken vendor LUT: fall through to the window or the data
            pass
    if opts.voi and "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
            if np.isfinite(c) and np.isfinite(w) and w > 0:
                return window(arr, c, w, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"))
        except (TypeError, ValueError, IndexError):  # "abc", empty, ...: window from the data
            pass
    lo, hi = np.percentile(arr[::4, ::4], opts.fallback_percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((arr.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)


def _number(v, default: float) -> float:
    """A DS value, or ``default`` when absent or empty (a damaged value raises, rejecting the file)."""
    return default if v is None or v == "" else float(v)


def to_display(arr: np.ndarray, ds, opts: DisplayOptions = DisplayOptions()) -> np.ndarray:
    """Steps 2-5 minus resizing: float32 in [0, 1], bone bright."""
    from pydicom.pixels import apply_modality_lut

    if arr.ndim == 3:  # multi-frame: the first frame
        arr = arr[0]
    if "ModalityLUTSequence" in ds:
        out = apply_modality_lut(arr, ds).astype(np.float32)
    else:  # the linear rescale in float32 (pydicom's works in float64: twice the memory traffic)
        slope, intercept = _number(ds.get("RescaleSlope"), 1.0), _number(ds.get("RescaleIntercept"), 0.0)
        out = arr.astype(np.float32)
        if slope != 1 or intercept != 0:
            out = out * np.float32(slope) + np.float32(intercept)
    out = apply_voi(out, ds, opts)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 1.0 - out
    return out


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

    return np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


def read_dataset(path: str | os.PathLike, roots: "tuple[str, ...] | None" = None):
    """The data set of the archive file ``path`` (a stored path, see :func:`osteo_batch.archive.walk.db_path`).

    Opened as the header reader opens it (:func:`osteo_batch.dicom.inflate.open_dataset`):
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
    from osteo_batch.dicom.inflate import MAX_PIXEL_BYTES, DatasetError, open_dataset

    try:
        st = os.stat(fs_path(os.fspath(path)))
    except OSError:
        st = None  # vanished, or a link out of the archive: open_dataset says which
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > MAX_PIXEL_BYTES + _FILE_SLACK:
        raise PixelError(Reason.IMAGE_TOO_LARGE.value, f"{st.st_size} bytes: more than any image the sweep accepts")
    try:
        with _quiet():
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


#: Bytes a file may hold beyond the largest pixel data the sweep accepts (the header, overlays, padding).
_FILE_SLACK = 64 * 1024 * 1024


def _quiet():
    """Silence pydicom while one file is read or decoded (:func:`osteo_batch.dicom.quiet.reading`).

    Why: pydicom words some warnings with the offending value (a UID, a date,
    a name), and a decoding worker's stderr is the night's log, where no
    patient data may appear. Rejections carry reason codes instead.
    """
    from osteo_batch.dicom.quiet import reading

    return reading()


def _safe_text(v, pattern: str = r"[A-Z0-9_ ]{0,16}") -> str:
    """``v`` for a message when it looks like the code it should be, else a placeholder (no stray text leaks)."""
    import re

    if v is None:
        return "(absent)"
    s = str(v).strip()
    return repr(s) if re.fullmatch(pattern, s) else "(not a code string)"


# ------------------------------------------------------------------ what a frame claims, before decoding

_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
_J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
         "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_RLE = "1.2.840.10008.1.2.5"

#: Tiles a JPEG 2000 codestream may have: OpenJPEG keeps several kB of
#: bookkeeping per tile from the header on, whatever the tiles hold.
MAX_TILES = 16384


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


@dataclass(frozen=True)
class Checked:
    """A data set whose pixels may go to a decoder: what to decode, with which plugin."""

    frame: bytes | None  # the first frame's compressed bytes (None: native pixel data)
    claim: FrameClaim | None
    plugin: str = ""  # pydicom decoding plugin to use ("" lets pydicom choose)


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


_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def j2k_claim(frame: bytes) -> FrameClaim:
    """The SIZ and COD marker segments of a JPEG 2000 (or HTJ2K) codestream (ISO 15444-1 A.5.1, A.6.1).

    Parsed here rather than by OpenJPEG, because OpenJPEG allocates its
    per-tile and per-component structures while it reads the header. A JP2
    file in a frame is followed to its contiguous codestream box.
    """
    import struct

    start = 0
    if frame.startswith(_JP2_SIGNATURE):
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
    import struct

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


def _header_geometry(ds) -> tuple[int, int, int, int, int]:
    """Rows, Columns, Samples per Pixel, Bits Allocated, Number of Frames, within the sweep's limits.

    The sweep checked these against the same limits, but a file can change
    between the sweep and scoring: the pixel pipeline checks them again.
    """
    from osteo_batch.dicom.headers import size_guard

    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise PixelError(Reason.DECODE_FAILED.value,
                         "(0028,0010)/(0028,0011)/(0028,0100)/(0028,0008) missing or not numbers") from None
    if min(rows, cols, bits, spp, frames) < 1:
        raise PixelError(Reason.PIXELS_INCONSISTENT.value, "Rows, Columns, Bits Allocated or Number of Frames below 1")
    too_large = size_guard(rows, cols, spp, frames, bits)
    if too_large:
        raise PixelError(Reason.IMAGE_TOO_LARGE.value, too_large)
    return rows, cols, spp, bits, frames


def _frame_count(px: bytes, ds, ts: str) -> tuple[int, bool]:
    """Frames the encapsulated pixel data holds, and whether an offset table says so.

    Without a Basic or Extended Offset Table, the fragments that begin as a
    frame of this syntax begins (SOC and SIZ, SOI, an RLE header) are counted:
    a frame split over several fragments begins only once.
    """
    from io import BytesIO

    from pydicom.encaps import parse_basic_offsets, parse_fragments

    if "ExtendedOffsetTable" in ds:
        return len(ds.ExtendedOffsetTable) // 8, True
    buf = BytesIO(px)
    bot = parse_basic_offsets(buf)
    if bot:
        return len(bot), True
    _n, offsets = parse_fragments(buf)
    return sum(_begins_frame(px[o + 8 : o + 72], ts) for o in offsets), False


def _begins_frame(head: bytes, ts: str) -> bool:
    if ts in _J2K:
        return head.startswith((b"\xff\x4f\xff\x51", _JP2_SIGNATURE))
    if ts in _JPEG:
        return head.startswith(b"\xff\xd8\xff")
    if len(head) < 64:
        return False
    import struct

    nseg, first = struct.unpack("<2I", head[:8])
    return 1 <= nseg <= 15 and first == 64


def _first_frame(ds, frames: int) -> bytes:
    """The first frame's bytes, found as pydicom's decoders find it (the Basic or Extended Offset Table)."""
    from pydicom.encaps import get_frame

    ext = None
    if "ExtendedOffsetTable" in ds:
        ext = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)  # lengths missing: AttributeError, refused
    return bytes(get_frame(ds.PixelData, 0, number_of_frames=frames, extended_offsets=ext))


def _judge(claim: FrameClaim, rows: int, cols: int, spp: int, bits: int) -> None:
    """Refuse a frame that claims another image than the header describes.

    More components or bits per sample than the header: a decompression bomb.
    Other rows or columns: inconsistent (a damaged or mislabelled file) while
    decoding them would cost no more than the largest image the sweep accepts;
    past that, a decompression bomb.
    """
    from osteo_batch.dicom.headers import MAX_SIDE
    from osteo_batch.dicom.inflate import MAX_PIXEL_BYTES

    bomb = Reason.DECOMPRESSION_BOMB.value
    if claim.samples > spp:
        raise PixelError(bomb, f"codestream has {claim.samples} components but (0028,0002) Samples per Pixel is {spp}")
    if claim.bits > bits:
        raise PixelError(bomb, f"codestream has {claim.bits}-bit samples but (0028,0100) Bits Allocated is {bits}")
    if claim.tiles > MAX_TILES:
        raise PixelError(bomb, f"codestream has {claim.tiles} tiles (at most {MAX_TILES})")
    if (claim.rows, claim.columns) != (rows, cols):
        size = claim.rows * claim.columns * claim.samples * -(-claim.bits // 8)
        big = claim.rows > MAX_SIDE or claim.columns > MAX_SIDE or size > MAX_PIXEL_BYTES
        raise PixelError(bomb if big else Reason.PIXELS_INCONSISTENT.value,
                         f"codestream is {claim.rows}x{claim.columns} but (0028,0010)/(0028,0011) say {rows}x{cols}")


def _rle_plugin() -> str:
    """pylibjpeg-rle decodes each segment into a frame of exactly Rows x Columns; pydicom's own decoder
    grows its output with the data (up to 64 times the segment). Use the bounded one when installed."""
    try:
        import rle  # noqa: F401  (pylibjpeg-rle)

        return "pylibjpeg"
    except ImportError:
        return ""


def check_frames(ds) -> Checked:
    """Everything a decoder would allocate for ``ds``, checked against the header before decoding.

    A decoder allocates what a compressed frame's own header claims, not what
    the DICOM header says, so a few hundred bytes can claim gigabytes: a
    decompression bomb. Only the first frame is ever decoded (the model reads
    one image), and it reaches the decoder only when its codestream claims
    the header's Rows x Columns, no more components than Samples per Pixel and
    no more bits per sample than Bits Allocated (JPEG, JPEG-LS, JPEG 2000,
    HTJ2K), or no more RLE segments than samples x bytes per sample. The
    offset tables must not hold more frames than Number of Frames. The header
    itself must be within the sweep's limits (``IMAGE_TOO_LARGE``). Transfer
    syntaxes whose frames cannot be bounded this way (any other) are refused
    as unsupported, whatever decoder pydicom may have for them.
    """
    rows, cols, spp, bits, frames = _header_geometry(ds)
    if "PixelData" not in ds:
        raise PixelError(Reason.NO_PIXEL_DATA.value, "no (7FE0,0010) Pixel Data")
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts in _NATIVE:
        return Checked(None, None)
    if ts not in _J2K and ts not in _JPEG and ts != _RLE:
        raise PixelError(Reason.UNSUPPORTED_TRANSFER_SYNTAX.value,
                         f"{_safe_text(ts, r'[0-9.]{1,64}')}: no decoder whose frames are checked before decoding")
    try:
        stored, tabled = _frame_count(ds.PixelData, ds, ts)
        frame = _first_frame(ds, frames)
        if ts in _J2K:
            claim = j2k_claim(frame)
        elif ts in _JPEG:
            claim = jpeg_claim(frame)
        else:
            claim = rle_claim(frame)
    except PixelError:
        raise
    except Exception as e:  # unparseable offsets, fragments or codestream header
        raise PixelError(Reason.DECODE_FAILED.value, f"codestream header: {type(e).__name__}") from None
    if stored > frames:
        raise PixelError(Reason.DECOMPRESSION_BOMB.value, f"{stored} frames but (0028,0008) Number of Frames is {frames}")
    if tabled and stored < frames:
        raise PixelError(Reason.PIXELS_INCONSISTENT.value, f"{stored} frames but (0028,0008) Number of Frames is {frames}")
    if ts != _RLE:
        _judge(claim, rows, cols, spp, bits)
        return Checked(frame, claim)
    expected = spp * -(-bits // 8)
    if claim.segments != expected:
        raise PixelError(Reason.DECOMPRESSION_BOMB.value if claim.segments > expected else Reason.PIXELS_INCONSISTENT.value,
                         f"{claim.segments} RLE segments but samples and Bits Allocated make {expected}")
    plugin = _rle_plugin()
    if not plugin:  # pydicom's decoder: count what each segment decodes to first (one run of padding allowed)
        import struct

        offs = list(struct.unpack("<15I", frame[4:64])[: claim.segments]) + [len(frame)]
        for a, b in zip(offs, offs[1:]):
            if rle_decoded_length(frame[a:b], rows * cols + 128) > rows * cols + 128:
                raise PixelError(Reason.DECOMPRESSION_BOMB.value, "an RLE segment decodes to more than Rows x Columns")
    return Checked(frame, claim, plugin)


def check_grey(ds) -> None:
    """Refuse anything but one sample per pixel, MONOCHROME1 or MONOCHROME2 (no chest radiograph is colour).

    PALETTE COLOR has one sample per pixel too, but its values index a colour
    table: read as grey they are a picture of the table's order, not of the
    patient. A missing or garbled Photometric Interpretation is refused as
    well (it always was: pydicom cannot decode without one), so the display
    pipeline never guesses which way round bone is.
    """
    try:
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise PixelError(Reason.DECODE_FAILED.value, "(0028,0002) Samples per Pixel is not one number") from None
    if spp != 1:
        raise PixelError(Reason.DECODE_FAILED.value, f"SamplesPerPixel={spp}: colour images are not chest radiographs")
    pi = ds.get("PhotometricInterpretation")
    if pi is None or str(pi).strip() not in ("MONOCHROME1", "MONOCHROME2"):
        raise PixelError(Reason.DECODE_FAILED.value,
                         f"(0028,0004) Photometric Interpretation {_safe_text(pi)}: only MONOCHROME1 and "
                         "MONOCHROME2 images are chest radiographs")


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
        with _quiet():
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
    with _quiet():
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
        with _quiet():
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
    with _quiet():
        checked = check_frames(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    r = reduction_levels(rows, cols, size)
    if r == 0:
        return _decode_checked(ds, checked)
    p = checked.claim
    if str(ds.file_meta.TransferSyntaxUID) in _J2K and p is not None and checked.frame is not None:
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
        with _quiet():
            arr = decode_reduced(ds, size) if opts.reduce else decode(ds)
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
