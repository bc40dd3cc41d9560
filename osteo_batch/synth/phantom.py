"""Drawing one phantom chest radiograph, with a label mask of its bones and its lead side marker.

Why phantoms: a demo and a test suite need radiographs whose bone density is
known, without a single real patient. The latent density ``z`` of the plan
(:mod:`osteo_batch.synth.density`) shows the way density does on film: bone is
less radio-opaque, rib and vertebral cortices are thinner and the trabecular
pattern is coarser when ``z`` is low. Everything is drawn from the plan's own
seed, so an image is the same wherever and whenever it is drawn.
"""

from __future__ import annotations

import math

import numpy as np

from osteo_batch.synth.noise import smooth_noise
from osteo_batch.synth.plan import ImagePlan

#: Labels of the mask :func:`draw_phantom` returns.
SPINE, RIBS, MARKER = 1, 2, 3


def draw_phantom(plan: ImagePlan, work: int = 384) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Return (attenuation image at full size in [0, 1], label mask, display window (lo, hi) in [0, 1]).

    The anatomy is drawn on a ``work``-pixel grid and upsampled; quantum noise is
    added at full resolution. Mask labels: :data:`SPINE`, :data:`RIBS`, the lead
    side marker :data:`MARKER`, 0 elsewhere.
    """
    rng = np.random.default_rng(plan.seed)
    h = work
    w = max(8, int(round(work * plan.cols / plan.rows)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y = yy / h
    x = (xx - w / 2) / h  # aspect-correct coordinates, x centred

    density = 1.0 + 0.22 * float(np.clip(plan.z, -3, 3))  # bone opacity factor
    cortex = 0.010 * (1.0 + 0.25 * float(np.clip(plan.z, -3, 3)))  # cortical thickness
    size = rng.uniform(0.85, 1.15)  # patient size
    shift_x, shift_y = rng.normal(0, 0.02), rng.normal(0, 0.02)
    tilt = rng.normal(0, 0.03)
    xr = (x - shift_x) * math.cos(tilt) - (y - 0.5 - shift_y) * math.sin(tilt)
    yr = (x - shift_x) * math.sin(tilt) + (y - 0.5 - shift_y) * math.cos(tilt) + 0.5

    lateral = plan.view in ("LL", "RL", "LATERAL")
    # soft tissue: torso ellipse, thicker for larger patients
    torso = np.clip(1.0 - (xr / (0.42 * size)) ** 2 - ((yr - 0.55) / 0.62) ** 2, 0, 1) ** 0.5
    att = 0.35 * torso * size
    if lateral:
        lung = np.clip(1.0 - (xr / 0.22) ** 2 - ((yr - 0.45) / 0.3) ** 2, 0, 1) ** 0.5
        att -= 0.18 * lung
    else:
        for side in (-1, 1):
            lung = np.clip(1.0 - ((xr - side * 0.16) / 0.13) ** 2 - ((yr - 0.45) / 0.3) ** 2, 0, 1) ** 0.5
            att -= 0.2 * lung
        heart = np.clip(1.0 - ((xr + 0.05) / 0.13) ** 2 - ((yr - 0.62) / 0.12) ** 2, 0, 1) ** 0.5
        att += 0.12 * heart

    bone = np.zeros_like(att)
    mask = np.zeros(att.shape, dtype=np.uint8)
    # trabecular texture: coarser (larger blobs, more contrast) when density is low
    coarse = 1.2 + 1.5 * max(0.0, -plan.z)
    texture = 0.75 + 0.25 * (0.7 + 0.3 * max(0.0, -plan.z)) * smooth_noise(rng, att.shape, coarse)

    spine_x = 0.0 if not lateral else 0.15
    half = 0.035
    for k in range(12):  # thoracic vertebral bodies
        top = 0.18 + k * 0.055
        inside = (np.abs(xr - spine_x) < half) & (yr > top) & (yr < top + 0.048)
        ring = inside & ~((np.abs(xr - spine_x) < half - cortex) & (yr > top + cortex) & (yr < top + 0.048 - cortex))
        bone += np.where(ring, 0.55, 0.0) + np.where(inside & ~ring, 0.28 * texture, 0.0)
        mask[inside] = 1
    if not lateral:
        for side in (-1, 1):
            for k in range(10):  # posterior ribs as arcs sweeping out and down
                y0 = 0.2 + k * 0.06
                centre = y0 + 0.9 * (np.abs(xr) - 0.04) ** 2 * 4.0
                reach = (np.abs(xr) > 0.045) & (np.abs(xr) < 0.36 * size) & (np.sign(xr) == side)
                dist = np.abs(yr - centre)
                width = 0.013
                shaft = reach & (dist < width)
                edge = shaft & (dist > width - cortex * 0.6)
                bone += np.where(edge, 0.45, 0.0) + np.where(shaft & ~edge, 0.16 * texture, 0.0)
                mask[shaft & (mask == 0)] = 2
        # clavicles
        for side in (-1, 1):
            clav = (np.abs(yr - 0.16 - 0.15 * np.abs(xr)) < 0.012) & (np.abs(xr) < 0.25) & (np.sign(xr) == side)
            bone += np.where(clav, 0.3, 0.0)
    att = att + density * bone
    # a lead side marker
    mx, my = (0.3, 0.08) if rng.random() < 0.5 else (-0.33, 0.08)
    marker = (np.abs(x - mx) < 0.025) & (np.abs(y - my) < 0.03)
    att = np.where(marker, 1.6, att)
    mask[marker] = MARKER

    # upsample to detector size and add quantum noise
    att_full = _resize(att.astype(np.float32), plan.rows, plan.cols)
    mask_full = _resize_nearest(mask, plan.rows, plan.cols)
    exposure = rng.uniform(0.85, 1.15)
    noise = rng.normal(0, 0.012 / exposure, att_full.shape).astype(np.float32)
    img = np.clip(att_full * exposure / 1.6 + 0.05 + noise, 0.0, 1.0)
    # the detector's auto-ranging window follows exposure only: a window taken from
    # the image's own percentiles would move with bone density and leak the label
    # into soft tissue, teaching models to look away from bone
    window = (0.02, min(1.0, 0.05 + exposure * 1.1))
    return img, mask_full, window


def _resize(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a, mode="F").resize((cols, rows), Image.BILINEAR))


def _resize_nearest(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((cols, rows), Image.NEAREST))
