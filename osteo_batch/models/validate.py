"""Judge a freshly trained model on patients it never trained on: threshold, bands and every figure on its card.

Why apart from training: what is reported must come from women outside
training (and, with a calibration split, outside calibration too), and the
choices made there (the operating threshold for a target sensitivity, the
"very high" band) are a screening program's, not the optimiser's. This module
takes the held-out images and the merged model and returns those choices and
figures; :mod:`osteo_batch.models.train` only writes them down.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osteo_batch.models import metrics
from osteo_batch.models.model import ModelConfig
from osteo_batch.models.predict import predict


@dataclass(frozen=True)
class Targets:
    """What the operating points must achieve (the fields of the same names in ``TrainConfig``)."""

    target_sensitivity: float = 0.85
    very_high_specificity: float = 0.95
    very_high_probability: float = 0.75  # with calibration: "very high" = at least this chance of osteoporosis
    calibration: str | None = None  # "platt" or "isotonic", fitted on the calibration split
    seed: int = 0


@dataclass
class HeldOut:
    """The held-out images: ``val`` (every reported figure) and ``cal`` (calibration, may be empty)."""

    x_val: np.ndarray  # (N, 1, H, W) in [0, 1]
    y_val: np.ndarray  # WHO class
    pid_val: np.ndarray  # patient of each image (for the bootstrap)
    meta_val: list[dict[str, Any]]  # each image's pair row (view, modality, age, SOP Instance UID ...)
    x_cal: np.ndarray
    y_cal: np.ndarray


@dataclass
class Validation:
    """The model's operating points and figures on the held-out women; :meth:`card` is their part of the card."""

    threshold: float
    bands: dict[str, float]
    calibration: dict[str, Any] | None  # the fitted mapping (config.json) or None
    y_bin: np.ndarray
    score: np.ndarray  # P(osteoporosis) as scoring will give it (calibrated when a mapping was fitted)
    figures: dict[str, Any]  # the card's "validation" section

    def card(self, *, method: str | None, ceiling: float | None) -> dict[str, Any]:
        """The card's validation, ceiling, calibration and bands sections (``ceiling``: see :func:`ceiling`)."""
        from osteo_batch.models import evaluate
        from osteo_batch.models.card import band_legend

        calib = evaluate.calibration(self.y_bin, self.score)
        return {
            "validation": self.figures,
            "ceiling": {
                "auc_validation": None if ceiling is None else round(ceiling, 4),
                "note": "AUC of the true latent bone density on the same validation patients: no image model can "
                        "beat it in expectation (synthetic cohorts only)",
            },
            "calibration": {"ece": round(calib.ece, 4), "bins": calib.bins, "method": method,
                            "fitted_on": "calibration split" if method else None},
            "bands": band_legend(self.y_bin, self.score, self.bands),
        }


def operating_points(merged, mcfg: ModelConfig, held: HeldOut, p_val: np.ndarray, targets: Targets) -> Validation:
    """Calibrate (when asked), choose the threshold and bands, and measure the model at them.

    ``p_val`` (N, 3): the merged model's probabilities on ``held.x_val``; with
    a calibration its osteoporosis column is replaced by the calibrated one.
    With calibration the edges sit on the displayed grid and are chosen on the
    calibration split (sensitivity still meets its target there); without,
    on the validation split itself.
    """
    y_va = held.y_val
    y_bin = (y_va == 2).astype(int)
    mapping = None
    if targets.calibration:
        from osteo_batch.models import bands as bandlib
        from osteo_batch.models import calibrate

        p_ca_raw = predict(merged, held.x_cal, mcfg)[:, 2]
        y_ca_bin = (held.y_cal == 2).astype(int)
        mapping = calibrate.fit(targets.calibration, p_ca_raw, y_ca_bin)
        p_ca = calibrate.apply(mapping, p_ca_raw)
        p_val[:, 2] = calibrate.apply(mapping, p_val[:, 2])
        shown = np.array([bandlib.display(v) for v in p_ca])
        thr = bandlib.edge_below(metrics.threshold_for_sensitivity(y_ca_bin, shown, targets.target_sensitivity))
        very_high = max(thr, bandlib.edge_below(targets.very_high_probability))
    score = p_val[:, 2]
    if not targets.calibration:
        thr = metrics.threshold_for_sensitivity(y_bin, score, targets.target_sensitivity)
        very_high = max(thr, metrics.threshold_for_specificity(y_bin, score, targets.very_high_specificity))
    figures = _figures(y_va, y_bin, p_val, held.pid_val, float(thr), float(very_high), targets)
    return Validation(float(thr), {"high": float(thr), "very_high": float(very_high)}, mapping, y_bin, score, figures)


def _figures(y_va, y_bin, p_va, pid_va, thr: float, very_high: float, targets: Targets) -> dict[str, Any]:
    from osteo_batch.models.plots import roc_points

    score = p_va[:, 2]
    val_auc = metrics.auc(y_bin, score)
    ci = metrics.bootstrap_auc_ci(y_bin, score, pid_va, seed=targets.seed)
    op = metrics.at_threshold(y_bin, score, thr)
    macro = metrics.macro_auc(y_va, p_va)
    macro_ci = metrics.bootstrap_ci(lambda i: metrics.macro_auc(y_va[i], p_va[i]), len(y_va), pid_va,
                                    seed=targets.seed)
    return {
        "auc": round(val_auc, 4),
        "auc_ci95": [round(ci[0], 4), round(ci[1], 4)],
        "macro_auc": round(macro, 4),
        "macro_auc_ci95": [round(macro_ci[0], 4), round(macro_ci[1], 4)],
        "accuracy_3class": round(float((p_va.argmax(1) == y_va).mean()), 4),
        "accuracy_at_threshold": round(float(((score >= thr) == (y_bin == 1)).mean()), 4),
        "threshold": thr,  # as chosen (on the display grid when calibrated): the image that set it stays flagged
        "target_sensitivity": targets.target_sensitivity,
        "sensitivity": round(op.sensitivity, 4),
        "specificity": round(op.specificity, 4),
        "ppv": round(op.ppv, 4),
        "very_high_from": very_high,
        "roc": roc_points(y_bin, score),
    }


def subgroups(val: Validation, meta_val: list[dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """AUC within age band, view, modality and manufacturer."""
    from osteo_batch.models import evaluate

    return evaluate.subgroup_auc(val.y_bin, val.score, {
        "age_band": [evaluate.age_band(m["age"]) for m in meta_val],
        "view": [m["view"] for m in meta_val],
        "modality": [m["modality"] for m in meta_val],
        "manufacturer": [m["manufacturer"] for m in meta_val],
    })


def bone(merged, mcfg: ModelConfig, held: HeldOut, y_bin: np.ndarray, *, masks: str | None,
         marker_masks: str | None, seed: int) -> dict[str, Any] | None:
    """Δbone, IoU_bone and the heat on the marker, on the held-out images that have a bone mask (None: none)."""
    from osteo_batch.models import evaluate

    if not masks:
        return None
    uids = [m["sop_instance_uid"] for m in held.meta_val]
    have = [j for j, u in enumerate(uids) if (Path(masks) / f"{u}.png").is_file()]
    if not have:
        return None
    size = held.x_val.shape[-1]  # the masks take the images' geometry
    bones = np.stack([evaluate.load_mask(Path(masks) / f"{uids[j]}.png", size) for j in have])
    markers = None
    if marker_masks:
        markers = np.stack([evaluate.load_mask(Path(marker_masks) / f"{uids[j]}.png", size, missing_ok=True)
                            for j in have])
    out = evaluate.bone_metrics(merged, mcfg, held.x_val[have], y_bin[have], bones, seed=seed, markers=markers)
    out["images"] = len(have)
    return out


def ceiling(pids: np.ndarray, y_bin: np.ndarray, truth_csv: str | Path | None) -> float | None:
    """AUC of the true latent density on the same patients (synthetic cohorts only; None without it)."""
    if not truth_csv:
        return None
    with open(truth_csv, newline="") as f:
        z = {r["patient_id"]: float(r["latent_density"]) for r in csv.DictReader(f)}
    if not all(p in z for p in pids):
        return None
    return metrics.auc(y_bin, -np.array([z[p] for p in pids]))
