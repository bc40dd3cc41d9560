"""JPEG 2000 at a reduced resolution, from memory: the readers behind one function, :func:`read_reduced`.

Why reduced: a JPEG 2000 codestream holds its image at every power-of-two
resolution, and the model needs a few hundred pixels a side; decoding
resolution level ``r`` costs about 4**-r of a full decode. Three readers give
the same stored values, bit for bit (``tests/dicom/test_j2k_readers.py``):

- ``"pillow"``: OpenJPEG inside Pillow, reading the frame from memory (no
  temporary file). Pillow shifts samples up to fill 8 or 16 bits and offsets
  signed ones; :func:`_read_pillow` undoes both from the codestream's own
  precision and sign. The default where Pillow has JPEG 2000 support: as
  fast as glymur (the same codec) without a file per image.
- ``"glymur"``: the system's OpenJPEG through glymur, which reads only files,
  so the frame goes to a private temporary file (in /dev/shm where there is
  one). Yesterday's path; used where Pillow cannot read a frame (an image
  offset on the reference grid, a precision over 16 bits).
- ``"nvimgcodec"``: NVIDIA's GPU decoder (:mod:`osteo_batch.dicom.nvimgcodec`),
  where CUDA and the package are present; anything it cannot do exactly falls
  back to the CPU readers.

``"auto"`` takes Pillow, else glymur. The GPU reader is used only when named:
every DataLoader worker would otherwise open its own CUDA context, on the
first GPU whatever the shard's device, and it has not yet run on a GPU.
pylibjpeg-openjpeg decodes from memory too, but only in full (its ``decode``
has no resolution argument), so it is no reader here.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

import numpy as np

from osteo_batch.dicom.codestreams import JP2_SIGNATURE, FrameClaim
from osteo_batch.dicom.quiet import reading

#: What :attr:`osteo_batch.dicom.display.DisplayOptions.j2k` may name.
READERS = ("auto", "pillow", "glymur", "nvimgcodec")


@dataclass(frozen=True)
class Geometry:
    """Where the image and its tiles lie on the reference grid (SIZ), and whether one wavelet holds everywhere."""

    x0: int
    y0: int
    x1: int
    y1: int
    tile_x0: int
    tile_y0: int
    tile_w: int
    tile_h: int
    boxed: bool  # a JP2 file in the frame, not a bare codestream
    subsampled: bool  # a component sampled on a coarser grid than the reference grid
    part2: bool  # Rsiz announces Part 2 extensions (other wavelets among them)
    reversible: bool  # the main header's COD says the 5/3 reversible wavelet
    uniform: bool  # no COC in the main header overrides its COD (tile-parts: :func:`gpu_exact` looks)
    tiles_at: int = 0  # where the first tile-part begins

    def reduced_shape(self, r: int) -> tuple[int, int]:
        """(rows, columns) of resolution level ``r``: OpenJPEG's ceil(x / 2**r) on the reference grid."""
        return _ceil(self.y1, r) - _ceil(self.y0, r), _ceil(self.x1, r) - _ceil(self.x0, r)

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """Each tile's (top, left, bottom, right) on the reference grid, cut to the image area."""
        out = []
        for ty in range(-(-(self.y1 - self.tile_y0) // self.tile_h)):
            for tx in range(-(-(self.x1 - self.tile_x0) // self.tile_w)):
                top, left = self.tile_y0 + ty * self.tile_h, self.tile_x0 + tx * self.tile_w
                out.append((max(top, self.y0), max(left, self.x0),
                            min(top + self.tile_h, self.y1), min(left + self.tile_w, self.x1)))
        return out


def _ceil(x: int, r: int) -> int:
    return -(-x >> r)


def _codestream_start(frame: bytes) -> int:
    """Where the codestream begins: 0, or inside the contiguous codestream box of a JP2 file."""
    if not frame.startswith(JP2_SIGNATURE):
        return 0
    pos = 0
    while pos + 8 <= len(frame):
        lbox, hdr = struct.unpack(">I", frame[pos : pos + 4])[0], 8
        if lbox == 1:
            lbox, hdr = struct.unpack(">Q", frame[pos + 8 : pos + 16])[0], 16
        elif lbox == 0:
            lbox = len(frame) - pos
        if frame[pos + 4 : pos + 8] == b"jp2c":
            return pos + hdr
        if lbox < hdr:
            break
        pos += lbox
    raise ValueError("JP2 file without a codestream box")


def geometry(frame: bytes) -> Geometry:
    """The SIZ and main-header COD facts the readers need.

    The frame already passed :func:`~osteo_batch.dicom.codestreams.j2k_claim`,
    so its SIZ segment is whole.
    """
    start = _codestream_start(frame)
    lsiz = struct.unpack(">H", frame[start + 4 : start + 6])[0]
    rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz = struct.unpack(">HIIIIIIIIH", frame[start + 6 : start + 42])
    sub = any(frame[start + 43 + 3 * k] != 1 or frame[start + 44 + 3 * k] != 1 for k in range(csiz))
    reversible, uniform, pos, n = False, True, start + 4 + lsiz, len(frame)
    while pos + 4 <= n:  # the main header, to the first tile-part
        m, length = struct.unpack(">HH", frame[pos : pos + 4])
        if m in (0xFF90, 0xFFD9) or m >> 8 != 0xFF:
            break
        if m == 0xFF52 and pos + 13 < n:  # COD: Lcod, Scod, SGcod (4), then levels, xcb, ycb, style, transform
            reversible = frame[pos + 13] == 1
        elif m == 0xFF53:  # COC: a component's own coding style
            uniform = False
        pos += 2 + length
    return Geometry(xo, yo, xsiz, ysiz, xto, yto, xt, yt, boxed=start > 0, subsampled=sub,
                    part2=bool(rsiz & 0x8000), reversible=reversible, uniform=uniform, tiles_at=pos)


def _tile_parts_keep_cod(frame: bytes, pos: int) -> bool:
    """Whether no tile-part header from ``pos`` on sets its own COD or COC (walked by Psot, a few bytes each)."""
    n = len(frame)
    while pos + 12 <= n and frame[pos : pos + 2] == b"\xff\x90":
        psot = struct.unpack(">I", frame[pos + 6 : pos + 10])[0]
        q = pos + 12
        while q + 4 <= n:
            m, length = struct.unpack(">HH", frame[q : q + 4])
            if m == 0xFF93 or m >> 8 != 0xFF:  # SOD: the tile's data follows
                break
            if m in (0xFF52, 0xFF53):
                return False
            q += 2 + length
        if psot == 0:  # the last tile-part runs to the end
            break
        pos += psot
    return True


def _unshift(a: np.ndarray, claim: FrameClaim) -> np.ndarray:
    """Pillow's samples back to the codestream's: shifted down from the top of 8 or 16 bits, the sign offset removed.

    Pillow stores ``(v + offset) << (container - precision)``, truncated to the
    container, with ``offset = 2**(precision - 1)`` for signed samples; for a
    precision up to the container that loses nothing.
    """
    shift = 8 * a.dtype.itemsize - claim.bits
    x = a.astype(np.uint16) >> np.uint16(shift) if shift else a.astype(np.uint16, copy=False)
    if not claim.signed:
        return x
    return (x.astype(np.int32) - (1 << (claim.bits - 1))).astype(np.int16)


def _read_pillow(frame: bytes, r: int, claim: FrameClaim, geo: Geometry) -> np.ndarray:
    """Decode level ``r`` with Pillow's JPEG 2000 plugin, from memory.

    Pillow rounds a reduced size to nearest (``(size + 2**(r-1)) // 2**r``),
    where OpenJPEG decodes ceil(size / 2**r), and refuses the frame when they
    differ; so the size and the reduction are set here, as Pillow's own
    ``load`` would set them, with OpenJPEG's size.
    """
    from PIL import ImageFile, Jpeg2KImagePlugin

    im = Jpeg2KImagePlugin.Jpeg2KImageFile(io.BytesIO(frame))  # not Image.open: no format probing
    if r:
        (tile,) = im.tile  # (decoder name, extents, offset, args); a NamedTuple since Pillow 11
        codec, _r, layers, fd, length = tile[3]
        rows, cols = geo.reduced_shape(r)
        im._size = (cols, rows)
        parts = (tile[0], (0, 0, cols, rows), tile[2], (codec, r, layers, fd, length))
        im.tile = [ImageFile._Tile(*parts) if hasattr(ImageFile, "_Tile") else parts]
    im.load()
    if im.mode not in ("L", "I;16"):
        raise ValueError(f"Pillow decoded mode {im.mode}, not one grey sample")
    return _unshift(np.asarray(im), claim)


def _read_glymur(frame: bytes, r: int, claim: FrameClaim, geo: Geometry) -> np.ndarray:
    """Decode level ``r`` with glymur, through a private temporary file deleted on return."""
    import tempfile

    import glymur

    glymur.set_option("lib.num_threads", 1)  # the DataLoader workers are the parallelism
    tmpdir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.NamedTemporaryFile(suffix=".jp2" if geo.boxed else ".j2k", dir=tmpdir) as f:
        f.write(frame)
        f.flush()
        step = 2**r
        with reading():
            return glymur.Jp2k(f.name)[::step, ::step]


def have_pillow() -> bool:
    """Whether Pillow was built with OpenJPEG."""
    try:
        from PIL import features

        return bool(features.check_codec("jpg_2000"))
    except Exception:  # no Pillow: glymur, or full decodes
        return False


def have_glymur() -> bool:
    """Whether glymur found a libopenjp2 it can decode with."""
    try:
        import glymur

        return bool(glymur.version.openjpeg_version) and glymur.lib.openjp2.OPENJP2 is not None
    except Exception:  # not installed, or no libopenjp2
        return False


def cpu_reader(geo: Geometry, claim: FrameClaim, prefer: str = "pillow") -> str | None:
    """The CPU reader for this frame: ``prefer`` when it can read it, else the other; None when neither can."""
    pillow_can = geo.x0 == 0 and geo.y0 == 0 and not geo.subsampled and claim.bits <= 16 and have_pillow()
    order = ("glymur", "pillow") if prefer == "glymur" else ("pillow", "glymur")
    for name in order:
        if (name == "pillow" and pillow_can) or (name == "glymur" and have_glymur()):
            return name
    return None


def gpu_exact(frame: bytes, geo: Geometry, claim: FrameClaim) -> bool:
    """Whether the GPU reader's result would equal the CPU readers' bit for bit.

    nvImageCodec decodes only in full; :mod:`osteo_batch.dicom.nvimgcodec`
    then computes the reduced level with the reversible 5/3 wavelet, which
    gives exactly what a reduced decode gives only when that wavelet holds for
    every tile. Signed samples are left to the CPU (what nvImageCodec returns
    for them is unverified), as are JP2 files and subsampled components.
    """
    return (geo.reversible and geo.uniform and not geo.part2 and not geo.boxed and not geo.subsampled
            and not claim.signed and claim.bits <= 16 and _tile_parts_keep_cod(frame, geo.tiles_at))


def read_reduced(frame: bytes, r: int, claim: FrameClaim, reader: str = "auto") -> np.ndarray | None:
    """Stored values of resolution level ``r`` of a one-component JPEG 2000 frame, or None when no reader can.

    ``reader``: one of :data:`READERS`; a reader that cannot read this frame
    hands it to the next (GPU, then Pillow, then glymur). The result is
    uint16, or int16 for a signed codestream. Decoding errors are the reader's
    exceptions; the caller words them as a rejection.
    """
    if reader not in READERS:
        raise ValueError(f"unknown JPEG 2000 reader {reader!r}; one of {', '.join(READERS)}")
    geo = geometry(frame)
    out = None
    if reader == "nvimgcodec":  # asked for by name only: "auto" stays on the CPU (see READERS)
        from osteo_batch.dicom import nvimgcodec

        if nvimgcodec.usable() and gpu_exact(frame, geo, claim):
            out = nvimgcodec.read_reduced(frame, r, bits=claim.bits, tiles=geo.tiles(), origin=(geo.y0, geo.x0))
    if out is None:
        name = cpu_reader(geo, claim, "glymur" if reader == "glymur" else "pillow")
        if name is None:
            return None
        try:
            out = (_read_pillow if name == "pillow" else _read_glymur)(frame, r, claim, geo)
        except MemoryError:
            raise
        except Exception:
            # "auto" does not stake a night on Pillow's internals (the tile tuple, _size): where its
            # reader fails, glymur reads the frame again; a frame both refuse is the caller's rejection
            if reader not in ("auto", "nvimgcodec") or name != "pillow" or not have_glymur():
                raise
            out = _read_glymur(frame, r, claim, geo)
    return out.astype(np.int16 if claim.signed else np.uint16, copy=False)
