"""One band-limited noise for the phantoms' bone texture and the evaluation's chance heat map."""

import numpy as np

from osteo_batch.models import evaluate
from osteo_batch.synth.noise import smooth_noise


def _lag1(a: np.ndarray) -> float:
    """Correlation of each pixel with its right-hand neighbour: higher for larger blobs."""
    return float(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1])


def test_it_is_seeded_unit_variance_and_as_smooth_as_asked():
    a = smooth_noise(np.random.default_rng(1), (64, 80), 2.0)
    assert a.shape == (64, 80) and abs(a.std() - 1.0) < 1e-6 and abs(a.mean()) < 0.2
    assert np.array_equal(a, smooth_noise(np.random.default_rng(1), (64, 80), 2.0))
    assert not np.array_equal(a, smooth_noise(np.random.default_rng(2), (64, 80), 2.0))
    fine, coarse = (smooth_noise(np.random.default_rng(3), (128, 128), s) for s in (0.5, 4.0))
    assert _lag1(fine) < 0.6 < 0.9 < _lag1(coarse)


def test_the_chance_heat_map_is_the_same_noise():
    shape = (48, 40)
    m = evaluate.random_smooth_map(shape, np.random.default_rng(7), scale=8.0)
    n = smooth_noise(np.random.default_rng(7), shape, 8.0)
    assert np.allclose(m, n)
    bone = np.zeros(shape, bool)
    bone[10:30, 15:25] = True
    assert evaluate.iou_bone(m, bone) == evaluate.iou_bone(n, bone)
