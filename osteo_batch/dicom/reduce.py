"""One reduction filter for every syntax: what a reduced decode hands the display steps.

Why: a reduced decode reaches level ``r`` (a 2**r-fold reduction) two ways.
JPEG 2000 and HTJ2K read the 5/3 wavelet's low band straight from the
codestream; every other syntax decodes in full and is averaged down by a
2**r x 2**r box (:func:`osteo_batch.dicom.decode.block_mean`). The two
filters differ: the low band is flat nearly to the reduced Nyquist and folds
about 3x more of an image's noise back into the picture; the box attenuates
the top of the band the final antialiased resize still passes. Scores on a
model that follows the image moved by up to 0.013 between a JPEG 2000 twin
and its native original, and the box alone by 0.006 from a full decode.

So the low band is brought to the box's response: the 3-tap
``[a, 1 - 2a, a]`` whose product with its frequency response best matches
the box's, least squares over the reduced band (:data:`SMOOTH`, per level;
:data:`SMOOTH_97` for the lossy 9/7 wavelet, whose low band is sharper than
the 5/3's but still flatter than the box). The box mean itself is the
target and stays as it was (:data:`SHARPEN` is 0): a sharpened target,
tried too, brought reduced decodes a little closer to full ones, but moved
the demo model's calibration (ECE 0.050 against 0.045 for this one), and
uncompressed and RLE images keep exactly the input earlier releases gave
them. The filter is separable, whole-sample symmetric at the edges,
float32, a few passes over an array already 4**r times smaller than the
image: about a millisecond at 700 x 575.
"""

from __future__ import annotations

import numpy as np

#: ``b`` of a sharpening ``[-b, 1 + 2b, -b]`` of the box mean, the target of every reduced decode (0: the box itself).
SHARPEN = 0.0

#: ``a`` of the 5/3 low band's smoothing ``[a, 1 - 2a, a]`` at level r (keys; deeper levels take the last):
#: least squares fit of its response times the 1D equivalent of r lifting levels to the target's (the box's).
SMOOTH = {1: 0.076, 2: 0.1, 3: 0.106, 4: 0.108}

#: The same for the irreversible 9/7 wavelet (lossy JPEG 2000 and HTJ2K): a sharper low pass than the
#: 5/3's, so it needs less smoothing.
SMOOTH_97 = {1: 0.032, 2: 0.032, 3: 0.03, 4: 0.029}


def _pass(x: np.ndarray, a: float, axis: int) -> np.ndarray:
    """``[a, 1 - 2a, a]`` along ``axis`` of the float32 ``x``, mirrored at the ends (a new array)."""
    n = x.shape[axis]
    if n < 2 or a == 0:
        return x.copy()
    v = np.moveaxis(x, axis, 0)
    out = np.empty_like(x)
    o = np.moveaxis(out, axis, 0)
    np.add(v[:-2], v[2:], out=o[1:-1])  # the neighbours' sum: 2 x the one neighbour at an end
    np.multiply(v[1], 2, out=o[0])
    np.multiply(v[-2], 2, out=o[-1])
    c = 1.0 - 2.0 * a
    o *= np.float32(a / c)  # out = c * (x + a/c * sum): no temporary of the image's size
    o += v
    o *= np.float32(c)
    return out


def smooth3(arr: np.ndarray, a: float) -> np.ndarray:
    """``arr`` filtered by ``[a, 1 - 2a, a]`` along rows and columns, in float32 (a new array).

    Negative ``a`` sharpens. ``a`` must stay below 1/2 (the centre weight positive).
    """
    if not a < 0.5:
        raise ValueError(f"a 3-tap weight of {a} leaves no centre")
    x = arr.astype(np.float32, copy=False)
    return _pass(_pass(x, a, 0), a, 1)


def equalise_box(arr: np.ndarray, r: int) -> np.ndarray:
    """A ``2**r`` box mean (:func:`osteo_batch.dicom.decode.block_mean`) brought to the target filter."""
    return arr if r == 0 or SHARPEN == 0 else smooth3(arr, -SHARPEN)


def equalise_low_band(arr: np.ndarray, r: int, *, reversible: bool = True) -> np.ndarray:
    """JPEG 2000 resolution level ``r`` (any reader) brought to the target filter.

    ``reversible``: the codestream's wavelet is the 5/3 (lossless); else the 9/7.
    """
    table = SMOOTH if reversible else SMOOTH_97
    return arr if r == 0 else smooth3(arr, table[min(r, max(table))])
