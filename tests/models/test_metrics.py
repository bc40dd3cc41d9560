import math

import numpy as np
import pytest

from osteo_batch.models import metrics


def test_auc_matches_hand_count_with_ties():
    # pairs (pos, neg): (0.35 vs 0.1) win, (0.35 vs 0.4) loss, (0.8 vs both) wins, tie counts half
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_threshold_for_sensitivity_reaches_target():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = rng.random(500) + y * 0.5
    t = metrics.threshold_for_sensitivity(y, s, 0.85)
    op = metrics.at_threshold(y, s, t)
    assert op.sensitivity >= 0.85
    assert metrics.at_threshold(y, s, np.nextafter(t, 2)).sensitivity < 0.85


def test_bootstrap_ci_brackets_the_auc():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.4
    s = rng.random(300) + y * 0.6
    a = metrics.auc(y, s)
    lo, hi = metrics.bootstrap_auc_ci(y, s, n_boot=300)
    assert lo < a < hi and hi - lo < 0.2


def test_macro_auc_averages_one_vs_rest():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[labels] * 0.9 + 0.05
    assert metrics.macro_auc(labels, probs) == 1.0
    assert metrics.macro_auc(labels, 1 - probs) == 0.0
