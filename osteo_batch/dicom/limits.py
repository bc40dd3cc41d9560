"""The size limits on what a file may claim, one place for every reader.

Why one place: the header reader (the sweep), the deflate inflater and the
pixel pipeline each refuse an image the same way, and a file can change
between the sweep and scoring, so the pixel pipeline checks again what the
sweep checked. Two copies of a limit would let a file pass one and not the
other.
"""

from __future__ import annotations

#: Refuse images whose sides exceed this (``image_too_large``).
MAX_SIDE = 16384
#: Refuse images whose header claims more than this many bytes of pixels (``image_too_large``).
MAX_PIXEL_BYTES = 512 * 1024 * 1024
#: What a deflated data set may inflate to besides its pixels (every other element together).
HEADER_ALLOWANCE = 16 * 1024 * 1024
#: Bytes a file may hold beyond the largest pixel data the sweep accepts (the header, overlays, padding).
FILE_SLACK = 64 * 1024 * 1024
#: Tiles a JPEG 2000 codestream may have: OpenJPEG keeps several kB of
#: bookkeeping per tile from the header on, whatever the tiles hold.
MAX_TILES = 16384


def pixel_bytes(rows: int | None, cols: int | None, bits: int | None, samples: int | None = 1,
                frames: int | None = 1) -> int:
    """Bytes of native pixel data a header justifies (0 when Rows, Columns or Bits Allocated are missing)."""
    if not rows or not cols or not bits or rows < 0 or cols < 0 or bits < 0:
        return 0
    samples = samples if samples and samples > 0 else 1
    frames = frames if frames and frames > 0 else 1
    return (rows * cols * samples * frames * bits + 7) // 8


def size_guard(rows: int, cols: int, spp: int, frames: int, bits: int) -> str | None:
    """Why an image is beyond the size guard (``image_too_large``), or None.

    The sweep applies it to the header, and the pixel pipeline again to the
    header it decodes from (the file may have changed in between).
    """
    if rows > MAX_SIDE or cols > MAX_SIDE or rows * cols * spp * frames * bits // 8 > MAX_PIXEL_BYTES:
        return f"{rows}x{cols}x{frames} frames"
    return None
