"""Steps 2-4 of the pixel pipeline: stored values to display values, bone bright, in [0, 1].

The standard's order, each step a pure function of (array, dataset), the
caller's dataset left as it is: the modality LUT or rescale slope/intercept
(:func:`pydicom.pixels.apply_modality_lut`), then the VOI LUT or window
centre/width (:func:`apply_voi`), falling back to a percentile window when
the header has none or a broken one (:func:`modality`, :func:`apply_voi`),
then MONOCHROME1 inversion (:func:`bone_bright`); :func:`to_display` runs
the three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteo_batch.dicom.j2k import READERS as _J2K_READERS  # imports no decoder


@dataclass(frozen=True)
class DisplayOptions:
    voi: bool = True  # apply the VOI LUT / window from the header
    reduce: bool = True  # decode only the resolution the model needs (False: full decode)
    fallback_percentiles: tuple[float, float] = (0.5, 99.5)
    #: which reader decodes a reduced JPEG 2000 level: "auto" | "pillow" | "glymur" | "nvimgcodec"
    #: (all give the same values; see osteo_batch.dicom.j2k)
    j2k: str = "auto"

    def __post_init__(self):
        if self.j2k not in _J2K_READERS:  # a typo would otherwise reject every JPEG 2000 image of the night
            raise ValueError(f"DisplayOptions.j2k is {self.j2k!r}; one of {', '.join(_J2K_READERS)}")


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
    out = x - (c - np.float32(0.5))  # the same operations as the formula, in one array
    out /= w - np.float32(1)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


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


def modality(arr: np.ndarray, ds) -> np.ndarray:
    """Step 2: the Modality LUT, or Rescale Slope and Intercept, in float32 (a new array)."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(arr, ds).astype(np.float32)
    # the linear rescale in float32 (pydicom's works in float64: twice the memory traffic)
    slope, intercept = _number(ds.get("RescaleSlope"), 1.0), _number(ds.get("RescaleIntercept"), 0.0)
    out = arr.astype(np.float32)
    if slope != 1 or intercept != 0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def bone_bright(out: np.ndarray, ds) -> np.ndarray:
    """Step 4: MONOCHROME1 (bone dark) inverted, so bone is bright whatever the detector stored."""
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        return 1.0 - out
    return out


def to_display(arr: np.ndarray, ds, opts: DisplayOptions = DisplayOptions()) -> np.ndarray:
    """Steps 2-4 (resizing is :mod:`osteo_batch.dicom.pixels`'): float32 in [0, 1], bone bright."""
    if arr.ndim == 3:  # multi-frame: the first frame
        arr = arr[0]
    return bone_bright(apply_voi(modality(arr, ds), ds, opts), ds)
