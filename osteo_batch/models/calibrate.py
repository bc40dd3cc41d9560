"""Site recalibration: fit Platt or isotonic calibration and a new threshold on a site's own pairs.

Why: a model trained elsewhere ranks well on a new site's images long before
its probabilities mean the same thing there (other detectors, other
populations). Recalibrating needs no retraining: the weights stay, a mapping of
P(osteoporosis) and a new operating threshold are added, and the result is a
new model version (a new model ID, so every score says which version made it).
The card keeps the history of versions.

The site's pairs are split by patient in two halves: the mapping is fitted on
one and judged on the other (ECE and AUC before and after, and the threshold
for the target sensitivity on calibrated scores).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from osteo_batch.models import metrics

METHODS = ("platt", "isotonic")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit(method: str, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A calibration mapping as plain data (stored in config.json)."""
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        return {"method": "isotonic", "x": [float(v) for v in iso.X_thresholds_],
                "y": [float(v) for v in iso.y_thresholds_]}
    raise ValueError(f"calibration method {method!r}: use one of {', '.join(METHODS)}")


def apply(mapping: dict[str, Any] | None, p):
    """Map raw P(osteoporosis) through a stored calibration (identity when None); numpy or torch."""
    if not mapping:
        return p
    is_torch = hasattr(p, "detach")
    arr = p.detach().cpu().numpy() if is_torch else np.asarray(p, dtype=float)
    if mapping["method"] == "platt":
        out = 1.0 / (1.0 + np.exp(-(mapping["a"] * _logit(arr) + mapping["b"])))
    else:
        out = np.interp(arr, mapping["x"], mapping["y"])
    if is_torch:
        import torch

        return torch.as_tensor(out, dtype=p.dtype, device=p.device)
    return out


def recalibrate(model_dir: Path, out: Path, p: np.ndarray, y: np.ndarray, patients: np.ndarray, *,
                method: str = "isotonic", target_sensitivity: float = 0.85, seed: int = 0) -> dict[str, Any]:
    """Write ``out``: ``model_dir``'s weights with a new calibration and threshold, and its card."""
    from osteo_batch.models import evaluate
    from osteo_batch.models.model import compute_model_id, publish_model_dir, read_config, staging_dir
    from osteo_batch.models.train import split_by_patient, write_card

    y = np.asarray(y).astype(int)
    half = split_by_patient(list(patients), list(y), 0.5, seed)
    judge = np.array([q in half for q in patients])
    if y[~judge].sum() == 0 or y[judge].sum() == 0 or (1 - y[judge]).sum() == 0:
        raise ValueError("recalibration needs osteoporosis and non-osteoporosis pairs in both halves; bring more pairs")
    mapping = fit(method, p[~judge], y[~judge])
    p_cal = apply(mapping, p[judge])
    thr = metrics.threshold_for_sensitivity(y[judge], p_cal, target_sensitivity)
    op = metrics.at_threshold(y[judge], p_cal, thr)

    old_cfg = read_config(model_dir)
    old_card = json.loads((model_dir / "card.json").read_text()) if (model_dir / "card.json").is_file() else {}
    cfg = old_cfg
    cfg.calibration = mapping
    cfg.threshold = float(thr)
    cfg.bands = {"high": float(thr), "very_high": max(float(thr), metrics.threshold_for_specificity(y[judge], p_cal, 0.95))}
    staging = staging_dir(out)
    staging.mkdir(parents=True)
    shutil.copy2(model_dir / "model.safetensors", staging / "model.safetensors")
    from osteo_batch.outputs import write_private

    write_private(staging / "config.json", json.dumps(asdict(cfg), indent=2))
    model_id = compute_model_id(staging / "model.safetensors", cfg)
    entry = {
        "model_id": model_id,
        "from_model_id": old_card.get("model_id"),
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "method": method,
        "pairs": int(len(y)),
        "judged_on": int(judge.sum()),
        "ece_before": round(evaluate.calibration(y[judge], p[judge]).ece, 4),
        "ece_after": round(evaluate.calibration(y[judge], p_cal).ece, 4),
        "auc_before": round(metrics.auc(y[judge], p[judge]), 4),
        "auc_after": round(metrics.auc(y[judge], p_cal), 4),
        "threshold": float(thr),
        "sensitivity": round(op.sensitivity, 4),
        "specificity": round(op.specificity, 4),
    }
    card = dict(old_card)
    # a first recalibration starts the history with the trained model it came from
    trained = {"model_id": old_card.get("model_id"), "created": old_card.get("created"), "event": "trained"}
    card["history"] = list(old_card.get("history") or [trained]) + [{**entry, "event": "recalibrated"}]
    card.update({"model_id": model_id, "created": entry["created"], "site_calibration": entry})
    card["validation"] = {**card.get("validation", {}), "threshold": float(thr), "sensitivity": entry["sensitivity"],
                          "specificity": entry["specificity"]}
    write_card(staging, card, cfg)
    publish_model_dir(staging, out)
    return entry
