"""The card's ROC points: one per distinct score, from (0, 0) to (1, 1), a missing class at rate 0."""

import numpy as np

from osteo_batch.models.plots import roc_points


def _by_hand(y, s):
    y = np.asarray(y, bool)
    s = np.asarray(s, float)
    thr = np.unique(s)[::-1]
    return {"fpr": [0.0] + [float((s[~y] >= t).mean()) if (~y).any() else 0.0 for t in thr],
            "tpr": [0.0] + [float((s[y] >= t).mean()) if y.any() else 0.0 for t in thr]}


def test_roc_points_with_ties_match_the_threshold_sweep():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    s = np.round(rng.random(400) + y * 0.3, 1)
    assert roc_points(y, s) == _by_hand(y, s)
    r = roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert r == {"fpr": [0.0, 0.0, 0.5, 0.5, 1.0], "tpr": [0.0, 0.5, 0.5, 1.0, 1.0]}


def test_one_class_and_no_rows_give_rates_of_zero_not_nan():
    assert roc_points([0, 0, 0], [0.2, 0.5, 0.5]) == {"fpr": [0.0, 2 / 3, 1.0], "tpr": [0.0, 0.0, 0.0]}
    assert roc_points([1, 1], [0.2, 0.3]) == {"fpr": [0.0, 0.0, 0.0], "tpr": [0.0, 0.5, 1.0]}
    assert roc_points([], []) == {"fpr": [0.0], "tpr": [0.0]}
