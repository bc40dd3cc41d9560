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

Multi-frame images use their first frame; colour images are refused (no chest
radiograph is stored in colour, so one is a secondary capture or a screenshot).
"""

from __future__ import annotations

import os
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


def read_dataset(path: str | os.PathLike):
    import pydicom

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    from osteo_batch.archive import fs_path

    try:
        ds = pydicom.dcmread(fs_path(os.fspath(path)), force=True)
    except OSError as e:  # vanished, permissions, I/O: worth another try tomorrow
        raise PixelError(Reason.UNREADABLE.value, type(e).__name__) from None
    except Exception as e:
        raise PixelError(Reason.NOT_DICOM.value, type(e).__name__) from None
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # no meta header (older archives): the syntax is how the file parsed
        implicit, little = ds.original_encoding
        ds.file_meta = meta if meta is not None else FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


_J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
         "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}


def codestream_header(ds) -> tuple[bytes, dict] | None:
    """The first compressed frame and its codestream's own parameters (None if not JPEG/J2K).

    ``params`` holds rows, columns, precision, signedness and, for JPEG 2000,
    the number of wavelet decomposition levels (``levels``).
    """
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts not in _J2K and ts not in _JPEG:
        return None
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        if ts in _J2K:
            import openjpeg

            p = dict(openjpeg.get_parameters(frame))
            p["levels"] = _j2k_levels(frame)
        else:
            from pydicom.pixels.utils import _get_jpg_parameters

            q = _get_jpg_parameters(frame)
            p = {"rows": q["height"], "columns": q["width"]}
    except Exception as e:  # unparseable codestream header
        raise PixelError(Reason.DECODE_FAILED.value, f"codestream header: {type(e).__name__}") from None
    return bytes(frame), p


def _j2k_levels(frame: bytes) -> int:
    """Decomposition levels from the COD marker segment (ISO 15444-1 A.6.1); 0 if absent."""
    i = frame.find(b"\xff\x52")
    if i < 0 or i + 9 >= len(frame):
        return 0
    # FF52, Lcod (2), Scod (1), SGcod: order (1), layers (2), MCT (1), then SPcod: levels (1)
    return frame[i + 9]


def check_codestream(ds) -> None:
    """Refuse a compressed frame whose own header disagrees with Rows and Columns.

    Read before decoding, from the codestream's first bytes: a decoder
    allocates what the codestream claims, so a frame that claims more than the
    DICOM header (a decompression bomb, or a damaged file) never reaches it.
    """
    head = codestream_header(ds)
    if head is None:
        return
    rows, cols = head[1]["rows"], head[1]["columns"]
    if (rows, cols) != (int(ds.Rows), int(ds.Columns)):
        raise PixelError(
            Reason.PIXELS_INCONSISTENT.value,
            f"codestream is {rows}x{cols} but (0028,0010)/(0028,0011) say {ds.Rows}x{ds.Columns}",
        )


def check_grey(ds) -> None:
    """Refuse anything but one sample per pixel (a colour image is no chest radiograph)."""
    try:
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise PixelError(Reason.DECODE_FAILED.value, "(0028,0002) Samples per Pixel is not one number") from None
    if spp != 1:
        raise PixelError(Reason.DECODE_FAILED.value, f"SamplesPerPixel={spp}: colour images are not chest radiographs")


def decode(ds) -> np.ndarray:
    """Stored pixel values of ``ds``; raises :class:`PixelError` with a reason code."""
    check_grey(ds)
    check_codestream(ds)
    try:
        return ds.pixel_array
    except NotImplementedError as e:
        raise PixelError(Reason.UNSUPPORTED_TRANSFER_SYNTAX.value, str(e)[:200]) from None
    except (ValueError, RuntimeError, AttributeError, KeyError, TypeError, OSError, EOFError) as e:
        raise PixelError(Reason.DECODE_FAILED.value, type(e).__name__) from None


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
    Modality or VOI LUT has to index them).
    """
    check_grey(ds)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise PixelError(Reason.DECODE_FAILED.value, "(0028,0010)/(0028,0011) Rows/Columns missing or not numbers") from None
    r = reduction_levels(rows, cols, size)
    if r == 0:
        return decode(ds)
    head = codestream_header(ds) if str(ds.file_meta.TransferSyntaxUID) in _J2K else None
    if head is not None:
        frame, p = head
        if (p["rows"], p["columns"]) != (rows, cols):
            check_codestream(ds)  # raises pixels_inconsistent
        signed = bool(int(ds.get("PixelRepresentation", 0) or 0))
        if p["precision"] == int(ds.BitsStored) and bool(p["is_signed"]) == signed and p["levels"] > 0 and _have_glymur():
            r = min(r, p["levels"])
            try:
                arr = _j2k_read_reduced(frame, r)
            except Exception as e:
                raise PixelError(Reason.DECODE_FAILED.value, f"reduced JPEG 2000 decode: {type(e).__name__}") from None
            return arr.astype(np.int16 if signed else np.uint16, copy=False) if arr.ndim == 2 else arr
    arr = decode(ds)
    if arr.ndim == 3:  # multi-frame: the first frame, as to_display would take
        arr = arr[0]
    out = block_mean(arr, 2**r)
    if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:  # a LUT is indexed by stored integers
        return np.rint(out).astype(arr.dtype)
    return out


def load_image(path: str | os.PathLike, size: int, opts: DisplayOptions = DisplayOptions()) -> np.ndarray:
    """Path to a ``size`` x ``size`` float32 image in [0, 1], bone bright.

    Every failure is a :class:`PixelError` with a reason code: a damaged value
    in any tag the pipeline reads (Rescale Slope ``abc``, a two-valued Samples
    per Pixel) rejects this one file, never the batch.
    """
    ds = read_dataset(path)
    try:
        arr = decode_reduced(ds, size) if opts.reduce else decode(ds)
        disp = to_display(arr, ds, opts)
    except PixelError:
        raise
    except MemoryError:
        raise PixelError(Reason.IMAGE_TOO_LARGE.value, "out of memory while decoding") from None
    except Exception as e:
        raise PixelError(Reason.DECODE_FAILED.value, type(e).__name__) from None
    if not np.isfinite(disp).all() or float(disp.max()) <= float(disp.min()):
        raise PixelError(Reason.BLANK_IMAGE.value, "no contrast after the display pipeline")
    return resize(pad_square(disp), size)
