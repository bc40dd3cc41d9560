"""Site recalibration: fit Platt or isotonic calibration and a new threshold on a site's own pairs.

Why: a model trained elsewhere ranks well on a new site's images long before
its probabilities mean the same thing there (other detectors, other
populations). Recalibrating needs no retraining: the weights stay, a mapping of
P(osteoporosis) and a new operating threshold are added, and the result is a
new model version (a new model ID, so every score says which version made it).
The card keeps the history of versions.

The site's pairs are split by patient in two halves: the mapping is fitted on
one and judged on the other (ECE and AUC before and after, and the threshold
for the target sensitivity on calibrated scores). The pairs are labelled
exactly as the model's training labelled its own: the WHO class of the lowest
T-score over the model's label sites (:func:`site_pairs`), never over sites
the model was not trained on.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from osteo_batch.errors import UserError
from osteo_batch.models import metrics
from osteo_batch.models.labels import LABELS, SITES
from osteo_batch.models.pairing import MIN_PAIRS, Pairs, load_pairs, sites_problem

METHODS = ("platt", "isotonic")
_OSTEOPOROSIS = LABELS.index("osteoporosis")


class CalibrationError(UserError, ValueError):
    """A recalibration that cannot be done with these pairs or settings; the message says what to bring."""

    code = "calibration_failed"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit(method: str, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A calibration mapping as plain data (stored in config.json)."""
    if method not in METHODS:
        raise CalibrationError(f"calibration method {method!r}: use one of {', '.join(METHODS)}",
                               code="unknown_calibration_method")
    try:
        return _fit(method, np.asarray(p), np.asarray(y))  # the caller's dtype: float32 scores fit as before
    except ValueError as e:  # scikit-learn refuses the data (one class, no rows)
        raise CalibrationError(f"{method} calibration could not be fitted on {len(p)} scores "
                               f"({str(e).splitlines()[0][:120]}); bring pairs with and without osteoporosis") from None


def _fit(method: str, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        return {"method": "isotonic", "x": [float(v) for v in iso.X_thresholds_],
                "y": [float(v) for v in iso.y_thresholds_]}
    raise AssertionError(method)  # fit() checked it


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
    from osteo_batch.models.card import write_card
    from osteo_batch.models.model import compute_model_id, publish_model_dir, read_config, staging_dir
    from osteo_batch.models.pairing import split_by_patient
    from osteo_batch.outputs import private_dir, write_private

    y = np.asarray(y).astype(int)
    half = split_by_patient(list(patients), list(y), 0.5, seed)
    judge = np.array([q in half for q in patients])
    if y[~judge].sum() == 0 or y[judge].sum() == 0 or (1 - y[judge]).sum() == 0:
        raise CalibrationError("recalibration needs osteoporosis and non-osteoporosis pairs in both halves; "
                               "bring more pairs", code="too_few_cases")
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
    staging = private_dir(staging_dir(out))
    shutil.copy2(model_dir / "model.safetensors", staging / "model.safetensors")
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


def label_sites(card: dict[str, Any]) -> tuple[str, ...]:
    """The sites a model's labels were taken over: its card's ``train.label_sites`` (all sites when absent)."""
    sites = (card.get("train") or {}).get("label_sites")
    if sites is None:  # a card from before label sites could be chosen: trained on all of them
        return SITES
    sites = tuple(sites)
    problem = sites_problem(sites)
    if problem:
        raise CalibrationError(f"the model's card.json says {problem}; copy the model folder again",
                               code="bad_label_sites")
    return sites


def site_pairs(store, card: dict[str, Any], *, window_days: int) -> Pairs:
    """The site's image-DXA pairs, labelled as the model's training labelled its own (:func:`label_sites`)."""
    return load_pairs(store, window_days=window_days, sites=label_sites(card))


def default_out(model_dir: Path, method: str) -> Path:
    """``MODEL-METHOD-YYYYMMDD`` beside the model: a new version never overwrites the one it came from."""
    return Path(f"{Path(model_dir).resolve()}-{method}-{dt.date.today():%Y%m%d}")


def recalibrate_site(store, model_dir: Path, out: Path | None, *, method: str, window_days: int, workers: int,
                     cache_dir: Path, roots: tuple[str, ...], retrieval=None) -> dict[str, Any]:
    """Recalibrate ``model_dir`` on the site's own pairs in ``store``; write the new version to ``out``.

    Pairs come from the store (eligible images with a DXA within
    ``window_days``), labelled over the model's own label sites; images are
    decoded through the cache in ``cache_dir`` and only under ``roots``
    (:func:`osteo_batch.archive.walk.real_roots`: a file that resolves outside
    the archive is never opened). Returns :func:`recalibrate`'s entry with
    ``out`` (the folder written), ``label_sites`` and ``osteoporosis_pairs``.
    Raises :class:`CalibrationError` with fewer than 20 usable pairs or when
    the mapping cannot be fitted.
    """
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.models.predict import decode_cached, predict

    if method not in METHODS:
        raise CalibrationError(f"calibration method {method!r}: use one of {', '.join(METHODS)}",
                               code="unknown_calibration_method")
    model_dir = Path(model_dir)
    model = load_model_dir(model_dir)
    pairs = site_pairs(store, model.card, window_days=window_days)
    if len(pairs) < MIN_PAIRS:
        raise CalibrationError(f"only {len(pairs)} images pair with a DXA within {window_days} days; "
                               f"{MIN_PAIRS} or more are needed", code="too_few_pairs")
    x, ok = decode_cached(pairs.items(), model.config.img_size, workers, str(cache_dir), roots=roots,
                          retrieval=retrieval)
    if len(ok) < MIN_PAIRS:
        raise CalibrationError(f"only {len(ok)} of {len(pairs)} paired images could be read inside the archive; "
                               f"{MIN_PAIRS} or more are needed", code="too_few_pairs")
    raw = predict(model.module, x, model.config)[:, model.config.labels.index(model.config.score_label)]
    y = np.array([pairs.labels[i] == _OSTEOPOROSIS for i in ok], dtype=int)
    patients = np.array([pairs.rows[i]["patient_id"] for i in ok])
    out = Path(out) if out else default_out(model_dir, method)
    entry = recalibrate(model_dir, out, raw, y, patients, method=method)
    return {**entry, "out": out, "label_sites": pairs.sites, "osteoporosis_pairs": int(y.sum())}
