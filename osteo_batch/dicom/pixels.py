"""The pixel pipeline: stored values to the image a radiologist's viewer shows.

The standard's order, each step a pure function of (array, dataset):

1. decode (pydicom with the pylibjpeg plugins for JPEG 2000 and RLE);
2. modality LUT or rescale slope/intercept (:func:`pydicom.pixels.apply_modality_lut`);
3. VOI LUT or window centre/width (:func:`pydicom.pixels.apply_voi_lut`), falling
   back to a percentile window when the header has none or a broken one;
4. MONOCHROME1 inversion, so bone is always bright;
5. scale to [0, 1], pad to a square (aspect kept, anatomy not cropped) and
   resize with antialiasing to the model's input size.

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
    fallback_percentiles: tuple[float, float] = (0.5, 99.5)


def apply_voi(arr: np.ndarray, ds, opts: DisplayOptions) -> np.ndarray:
    """VOI LUT or window from the header, else a percentile window."""
    from pydicom.pixels import apply_voi_lut

    has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    if opts.voi and has_voi:
        try:
            out = apply_voi_lut(arr, ds, index=0, prefer_lut=True)
            if np.ptp(out) > 0:
                return out.astype(np.float32)
        except Exception:  # broken vendor VOI (bad LUT, zero width, ...): window from the data
            pass
    lo, hi = np.percentile(arr[::4, ::4], opts.fallback_percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip(arr, lo, hi).astype(np.float32)


def to_display(arr: np.ndarray, ds, opts: DisplayOptions = DisplayOptions()) -> np.ndarray:
    """Steps 2-5 minus resizing: float32 in [0, 1], bone bright."""
    from pydicom.pixels import apply_modality_lut

    if arr.ndim == 3:  # multi-frame: the first frame
        arr = arr[0]
    out = apply_modality_lut(arr, ds).astype(np.float32)
    out = apply_voi(out, ds, opts)
    lo, hi = float(out.min()), float(out.max())
    out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
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


def check_codestream(ds) -> None:
    """Refuse a compressed frame whose own header disagrees with Rows and Columns.

    Read before decoding, from the codestream's first bytes: a decoder
    allocates what the codestream claims, so a frame that claims more than the
    DICOM header (a decompression bomb, or a damaged file) never reaches it.
    """
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts not in _J2K and ts not in _JPEG:
        return
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        if ts in _J2K:
            import openjpeg

            p = openjpeg.get_parameters(frame)
            rows, cols = p["rows"], p["columns"]
        else:
            from pydicom.pixels.utils import _get_jpg_parameters

            p = _get_jpg_parameters(frame)
            rows, cols = p["height"], p["width"]
    except Exception as e:  # unparseable codestream header
        raise PixelError(Reason.DECODE_FAILED.value, f"codestream header: {type(e).__name__}") from None
    if (rows, cols) != (int(ds.Rows), int(ds.Columns)):
        raise PixelError(
            Reason.PIXELS_INCONSISTENT.value,
            f"codestream is {rows}x{cols} but (0028,0010)/(0028,0011) say {ds.Rows}x{ds.Columns}",
        )


def decode(ds) -> np.ndarray:
    """Stored pixel values of ``ds``; raises :class:`PixelError` with a reason code."""
    try:
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise PixelError(Reason.DECODE_FAILED.value, "(0028,0002) Samples per Pixel is not one number") from None
    if spp != 1:
        raise PixelError(Reason.DECODE_FAILED.value, f"SamplesPerPixel={spp}: colour images are not chest radiographs")
    check_codestream(ds)
    try:
        return ds.pixel_array
    except NotImplementedError as e:
        raise PixelError(Reason.UNSUPPORTED_TRANSFER_SYNTAX.value, str(e)[:200]) from None
    except (ValueError, RuntimeError, AttributeError, KeyError, TypeError, OSError, EOFError) as e:
        raise PixelError(Reason.DECODE_FAILED.value, type(e).__name__) from None


def load_image(path: str | os.PathLike, size: int, opts: DisplayOptions = DisplayOptions()) -> np.ndarray:
    """Path to a ``size`` x ``size`` float32 image in [0, 1], bone bright.

    Every failure is a :class:`PixelError` with a reason code: a damaged value
    in any tag the pipeline reads (Rescale Slope ``abc``, a two-valued Samples
    per Pixel) rejects this one file, never the batch.
    """
    ds = read_dataset(path)
    try:
        arr = decode(ds)
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
