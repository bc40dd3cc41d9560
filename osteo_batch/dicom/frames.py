"""What reaches a decoder: the first frame, checked against the header for its transfer syntax.

Why: nothing reaches a decoder unchecked. A compressed frame's own header
(:mod:`osteo_batch.dicom.codestreams`) must claim the image the DICOM header
describes, and the DICOM header must be within the sweep's limits
(:mod:`osteo_batch.dicom.limits`), so a decompression bomb is refused from
its first bytes (:func:`check_frames`). Colour images are refused too
(:func:`check_grey`): no chest radiograph is stored in colour.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from osteo_batch.dicom.codestreams import (JP2_SIGNATURE, FrameClaim, j2k_claim, jpeg_claim, rle_claim,
                                          rle_decoded_length)
from osteo_batch.dicom.limits import MAX_PIXEL_BYTES, MAX_SIDE, MAX_TILES, size_guard
from osteo_batch.dicom.rejections import PixelError
from osteo_batch.reasons import Reason

#: Transfer syntaxes by how their frames are checked (any other is refused as unsupported).
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
       "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
RLE = "1.2.840.10008.1.2.5"


@dataclass(frozen=True)
class Checked:
    """A data set whose pixels may go to a decoder: what to decode, with which plugin."""

    frame: bytes | None  # the first frame's compressed bytes (None: native pixel data)
    claim: FrameClaim | None
    plugin: str = ""  # pydicom decoding plugin to use ("" lets pydicom choose)


def _safe_text(v, pattern: str = r"[A-Z0-9_ ]{0,16}") -> str:
    """``v`` for a message when it looks like the code it should be, else a placeholder (no stray text leaks)."""
    if v is None:
        return "(absent)"
    s = str(v).strip()
    return repr(s) if re.fullmatch(pattern, s) else "(not a code string)"


def _header_geometry(ds) -> tuple[int, int, int, int, int]:
    """Rows, Columns, Samples per Pixel, Bits Allocated, Number of Frames, within the sweep's limits.

    The sweep checked these against the same limits, but a file can change
    between the sweep and scoring: the pixel pipeline checks them again.
    """
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
    if ts in J2K:
        return head.startswith((b"\xff\x4f\xff\x51", JP2_SIGNATURE))
    if ts in JPEG:
        return head.startswith(b"\xff\xd8\xff")
    if len(head) < 64:
        return False
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
    if ts in NATIVE:
        return Checked(None, None)
    if ts not in J2K and ts not in JPEG and ts != RLE:
        raise PixelError(Reason.UNSUPPORTED_TRANSFER_SYNTAX.value,
                         f"{_safe_text(ts, r'[0-9.]{1,64}')}: no decoder whose frames are checked before decoding")
    try:
        stored, tabled = _frame_count(ds.PixelData, ds, ts)
        frame = _first_frame(ds, frames)
        if ts in J2K:
            claim = j2k_claim(frame)
        elif ts in JPEG:
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
    if ts != RLE:
        _judge(claim, rows, cols, spp, bits)
        return Checked(frame, claim)
    expected = spp * -(-bits // 8)
    if claim.segments != expected:
        raise PixelError(Reason.DECOMPRESSION_BOMB.value if claim.segments > expected else Reason.PIXELS_INCONSISTENT.value,
                         f"{claim.segments} RLE segments but samples and Bits Allocated make {expected}")
    plugin = _rle_plugin()
    if not plugin:  # pydicom's decoder: count what each segment decodes to first (one run of padding allowed)
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
