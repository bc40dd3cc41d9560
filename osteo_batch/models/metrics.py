"""Screening metrics: AUC with bootstrap CIs, operating points, sensitivity and specificity.

Written with numpy alone (no scikit-learn import on the scoring path) and kept
small: each function is the textbook definition, tested against hand counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def auc(y, score) -> float:
    """Mann-Whitney AUC, ties counted half; NaN when a class is absent."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=float)
    # average ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b - 1) / 2.0 + 1.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_ci(statistic, n: int, groups=None, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of ``statistic(idx)`` over resamples of ``groups`` (patients) when given, else rows."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        v = statistic(np.concatenate([members[g] for g in pick]))
        if not np.isnan(v):
            stats.append(v)
    if not stats:
        return float("nan"), float("nan")
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_auc_ci(y, score, groups=None, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the AUC, resampling ``groups`` (patients) when given."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    return bootstrap_ci(lambda i: auc(y[i], s[i]), len(y), groups, n_boot=n_boot, alpha=alpha, seed=seed)


def macro_auc(labels, probs) -> float:
    """Mean one-vs-rest AUC over the classes present."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=float)
    vals = [auc(labels == k, probs[:, k]) for k in range(probs.shape[1])]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    sensitivity: float
    specificity: float
    ppv: float


def at_threshold(y, score, threshold: float) -> OperatingPoint:
    y = np.asarray(y).astype(bool)
    flag = np.asarray(score, dtype=float) >= threshold
    tp, fn = int((flag & y).sum()), int((~flag & y).sum())
    tn, fp = int((~flag & ~y).sum()), int((flag & ~y).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    return OperatingPoint(float(threshold), sens, spec, ppv)


def threshold_for_sensitivity(y, score, target: float) -> float:
    """Highest threshold whose sensitivity is at least ``target``."""
    y = np.asarray(y).astype(bool)
    pos = np.sort(np.asarray(score, dtype=float)[y])[::-1]
    if len(pos) == 0:
        return 0.5
    k = int(np.ceil(target * len(pos))) - 1
    return float(pos[max(0, min(k, len(pos) - 1))])


def threshold_for_specificity(y, score, target: float) -> float:
    """Lowest threshold whose specificity is at least ``target``."""
    y = np.asarray(y).astype(bool)
    neg = np.sort(np.asarray(score, dtype=float)[~y])
    if len(neg) == 0:
        return 0.5
    k = int(np.ceil(target * len(neg))) - 1
    return float(np.nextafter(neg[max(0, min(k, len(neg) - 1))], np.inf))
