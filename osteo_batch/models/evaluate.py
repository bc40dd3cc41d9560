"""Evaluation beyond AUC: calibration, subgroups, and whether the model looks at bone.

Why these: the SNUH study checked that its model weighs bone two ways, and a
screening program needs calibrated probabilities and subgroup figures before it
trusts a model with its patients.

- **Calibration**: reliability bins and the expected calibration error (ECE).
- **Subgroups**: AUC within age band, view, modality, manufacturer.
- **Δbone**: the drop in AUC when bone pixels are occluded, beside
  **Δnonbone**, the drop when an equal area of non-bone is occluded.
- **IoU_bone**: overlap of the Grad-CAM map (its top share, as large as the
  bone area) with the bone mask, beside the same for a random smooth map.

All functions are pure (numpy in, numbers out) except the two that run the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osteo_batch.models import metrics
from osteo_batch.synth.noise import smooth_noise


@dataclass(frozen=True)
class Calibration:
    ece: float
    bins: list[dict]  # lower, upper, n, mean_predicted, observed


def calibration(y, p, *, n_bins: int = 10) -> Calibration:
    """Reliability bins (equal width) and ECE = sum_b n_b/N |observed_b - predicted_b|."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        if n == 0:
            bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "n": 0,
                         "mean_predicted": None, "observed": None})
            continue
        pred, obs = float(p[sel].mean()), float(y[sel].mean())
        ece += n / len(p) * abs(obs - pred)
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "n": n,
                     "mean_predicted": pred, "observed": obs})
    return Calibration(float(ece), bins)


def age_band(age: float | None) -> str:
    if age is None:
        return "unknown"
    lo = int(age // 10 * 10)
    return f"{lo}-{lo + 9}"


def subgroup_auc(y, score, groups: dict[str, list[str | None]]) -> dict[str, dict[str, dict]]:
    """AUC (and n) within each value of each grouping variable."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    out: dict[str, dict[str, dict]] = {}
    for var, values in groups.items():
        v = np.array(["unknown" if x is None else str(x) for x in values])
        out[var] = {}
        for g in sorted(set(v.tolist())):
            sel = v == g
            out[var][g] = {"n": int(sel.sum()), "positives": int(y[sel].sum()), "auc": metrics.auc(y[sel], s[sel])}
    return out


# ------------------------------------------------------------ bone metrics


def top_share(saliency: np.ndarray, share: float) -> np.ndarray:
    """Boolean map of exactly the ``share`` highest-valued pixels (ties broken by position)."""
    k = max(1, int(round(share * saliency.size)))
    out = np.zeros(saliency.size, dtype=bool)
    out[np.argsort(-saliency.ravel(), kind="stable")[:k]] = True
    return out.reshape(saliency.shape)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def iou_bone(saliency: np.ndarray, bone: np.ndarray) -> float:
    """IoU of the saliency map's top share (as large as the bone area) with bone."""
    bone = bone.astype(bool)
    if not bone.any() or float(np.ptp(saliency)) == 0.0:  # a flat map explains nothing
        return float("nan")
    return iou(top_share(saliency, bone.mean()), bone)


def random_smooth_map(shape: tuple[int, int], rng: np.random.Generator, scale: float = 8.0) -> np.ndarray:
    """A smooth random map with the blob size of a Grad-CAM map: the chance baseline (the phantoms' noise)."""
    return smooth_noise(rng, shape, scale)


def nonbone_region(bone: np.ndarray, body: np.ndarray, rng: np.random.Generator, block: int = 8) -> np.ndarray:
    """Blocks of body without bone, chosen at random until their area matches the bone's."""
    bone = bone.astype(bool)
    h, w = bone.shape
    target = int(bone.sum())
    out = np.zeros_like(bone)
    cells = [(y, x) for y in range(0, h - block + 1, block) for x in range(0, w - block + 1, block)
             if not bone[y : y + block, x : x + block].any() and body[y : y + block, x : x + block].all()]
    rng.shuffle(cells)
    for y, x in cells:
        if out.sum() >= target:
            break
        out[y : y + block, x : x + block] = True
    return out


def occlude(image: np.ndarray, region: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Replace ``region`` by the median of the body's non-region pixels: structure gone, level kept."""
    fill = float(np.median(image[body & ~region])) if (body & ~region).any() else float(image.mean())
    out = image.copy()
    out[region.astype(bool)] = fill
    return out


def body_mask(image: np.ndarray, level: float = 0.05) -> np.ndarray:
    """Pixels inside the patient (not the black padding or the air around her)."""
    return image > level


def load_mask(path: str | Path, size: int, *, missing_ok: bool = False) -> np.ndarray:
    """A mask (0 background, >0 inside) transformed exactly like its image: pad, resize.

    With ``missing_ok`` an absent file is an empty mask (a phantom without a marker).
    """
    from PIL import Image

    from osteo_batch.dicom.pixels import pad_square

    if missing_ok and not Path(path).is_file():
        return np.zeros((size, size), dtype=bool)
    m = (np.asarray(Image.open(path)) > 0).astype(np.float32)
    sq = pad_square(m)
    return np.asarray(Image.fromarray(sq, mode="F").resize((size, size), Image.BILINEAR)) >= 0.5


# ------------------------------------------------------- with the model


def heat_share(saliency: np.ndarray, region: np.ndarray) -> float:
    """The share of a map's total heat that falls on ``region`` (NaN for a flat or empty map)."""
    total = float(saliency.sum())
    if total <= 0.0 or float(np.ptp(saliency)) == 0.0:
        return float("nan")
    return float(saliency[region.astype(bool)].sum() / total)


def bone_metrics(module, config, x: np.ndarray, y_bin: np.ndarray, bones: np.ndarray, *, seed: int = 0,
                 markers: np.ndarray | None = None) -> dict:
    """Δbone, Δnonbone, IoU_bone and its random-map baseline on images ``x`` with masks ``bones``.

    ``x`` (N, 1, H, W) in [0, 1]; ``bones`` (N, H, W) boolean, in the model's geometry.
    With ``markers`` (the lead side marker's masks, same geometry) the share of
    heat on the marker is reported beside the share of the image it covers:
    a map that weighs the marker more than its area is looking at the wrong thing.
    """
    from osteo_batch.models.gradcam import cam_maps
    from osteo_batch.models.predict import predict

    rng = np.random.default_rng(seed)
    images = x[:, 0]
    bodies = np.stack([body_mask(im) for im in images])
    nonbones = np.stack([nonbone_region(b, bd, rng) for b, bd in zip(bones, bodies)])
    occ_bone = np.stack([occlude(im, b, bd) for im, b, bd in zip(images, bones, bodies)])[:, None]
    occ_non = np.stack([occlude(im, nb, bd) for im, nb, bd in zip(images, nonbones, bodies)])[:, None]
    k = config.labels.index(config.score_label)
    base = metrics.auc(y_bin, predict(module, x, config)[:, k])
    d_bone = base - metrics.auc(y_bin, predict(module, occ_bone.astype(np.float32), config)[:, k])
    d_non = base - metrics.auc(y_bin, predict(module, occ_non.astype(np.float32), config)[:, k])
    maps = cam_maps(module, config, x)
    ious = [iou_bone(m, b) for m, b in zip(maps, bones)]
    flat = int(sum(np.isnan(v) for v in ious))
    rand = [iou_bone(random_smooth_map(b.shape, rng), b) for b in bones]
    marker = {}
    if markers is not None and markers.any():
        have = [i for i, m in enumerate(markers) if m.any()]
        marker = {
            "marker_heat_share": float(np.nanmean([heat_share(maps[i], markers[i]) for i in have])),
            "marker_area_share": float(np.mean([markers[i].mean() for i in have])),
            "marker_in_top_share": float(np.nanmean([top_share(maps[i], bones[i].mean())[markers[i]].mean()
                                                     for i in have])),
            "marker_images": len(have),
        }
    bone_heat = float(np.nanmean([heat_share(m, b) for m, b in zip(maps, bones)]))
    return {
        **marker,
        "bone_heat_share": bone_heat,
        "auc": base,
        "delta_bone": float(d_bone),
        "delta_nonbone": float(d_non),
        "iou_bone": float(np.nanmean(ious)),
        "iou_bone_random": float(np.nanmean(rand)),
        "flat_maps": flat,  # images whose Grad-CAM map was flat (left out of IoU_bone)
        "bone_area_share": float(bones.mean()),
        "nonbone_area_share": float(nonbones.mean()),
    }
