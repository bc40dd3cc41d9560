"""Screening metrics: AUC with bootstrap CIs, operating points, sensitivity and specificity.

Kept small: each function is the textbook definition, tested against hand
counts. The AUC is the Mann-Whitney statistic from SciPy's average ranks
(ties count half); SciPy is imported on the first AUC, not with this module,
so the nightly scorer, which never computes one, never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def auc(y, score) -> float:
    """Mann-Whitney AUC, ties counted half; NaN when a class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s, method="average")  # tied scores share their mean rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_ci(statistic, n: int, groups=None, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of ``statistic(idx)`` over resamples of ``groups`` (patients) when given, else rows.

    A resample draws as many groups as there are, with replacement, and takes
    every row of each drawn group. Rows are sorted by group once, so a resample
    is a gather of contiguous runs: linear in the rows, whatever the number of
    patients.
    """
    rng = np.random.default_rng(seed)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")  # rows of group 0, then group 1, ...
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(counts), len(counts))
        v = statistic(_rows_of(pick, order, starts, counts))
        if not np.isnan(v):
            stats.append(v)
    if not stats:
        return float("nan"), float("nan")
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _rows_of(pick: np.ndarray, order: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The rows of groups ``pick`` (in that order, a group's rows in row order), as one index array."""
    lens = counts[pick]
    ends = np.cumsum(lens)
    if not len(ends):
        return np.empty(0, dtype=np.int64)
    return order[np.arange(ends[-1]) + np.repeat(starts[pick] - (ends - lens), lens)]


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
