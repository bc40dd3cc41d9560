"""Band-limited noise: the one random texture the phantoms and the chance baseline both draw.

Why one helper: the phantom's trabecular pattern and the evaluation's random
"heat map" (the IoU a map scores by chance) are the same thing, white noise
blurred to a blob size, and two copies drift apart.
"""

from __future__ import annotations

import math

import numpy as np


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """White noise blurred in Fourier space by a Gaussian of ``scale`` pixels, scaled to unit variance.

    One ``rng.standard_normal(shape)`` draw, so a seeded generator gives the same map on every machine.
    """
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (math.pi * scale) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=shape)
    return out / (out.std() + 1e-9)
