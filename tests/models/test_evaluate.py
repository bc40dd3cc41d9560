"""Bone and calibration metrics against hand-built cases."""

import numpy as np
import pytest

from osteo_batch.models import evaluate


def test_ece_of_a_perfectly_calibrated_and_a_wrong_model():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = rng.random(20000) < p
    assert evaluate.calibration(y, p).ece < 0.02
    assert evaluate.calibration(y, np.full_like(p, 0.9)).ece == pytest.approx(0.9 - y.mean(), abs=1e-9)


def test_iou_bone_is_one_for_a_map_that_is_the_mask_and_low_for_random():
    bone = np.zeros((64, 64), bool)
    bone[20:40, 28:36] = True
    assert evaluate.iou_bone(bone.astype(float), bone) == 1.0
    rng = np.random.default_rng(1)
    rand = np.mean([evaluate.iou_bone(evaluate.random_smooth_map(bone.shape, rng), bone) for _ in range(50)])
    assert rand < 0.2


def test_nonbone_region_matches_area_and_avoids_bone():
    bone = np.zeros((64, 64), bool)
    bone[8:56, 28:36] = True
    body = np.ones((64, 64), bool)
    nb = evaluate.nonbone_region(bone, body, np.random.default_rng(0))
    assert not (nb & bone).any()
    assert abs(int(nb.sum()) - int(bone.sum())) <= 64


def test_occlusion_removes_structure_and_keeps_level():
    img = np.full((32, 32), 0.3)
    region = np.zeros((32, 32), bool)
    region[10:20, 10:20] = True
    img[region] = 0.9
    out = evaluate.occlude(img, region, np.ones_like(region))
    assert np.allclose(out[region], 0.3) and np.allclose(out[~region], 0.3)


def test_subgroups_count_and_score():
    y = [1, 0, 1, 0, 1, 0]
    s = [0.9, 0.1, 0.8, 0.2, 0.1, 0.9]
    g = evaluate.subgroup_auc(y, s, {"view": ["PA", "PA", "PA", "PA", "AP", "AP"]})
    assert g["view"]["PA"] == {"n": 4, "positives": 2, "auc": 1.0}
    assert g["view"]["AP"]["auc"] == 0.0


def test_a_flat_map_is_not_counted_as_overlapping_bone():
    bone = np.zeros((32, 32), bool)
    bone[:, 10:16] = True
    assert np.isnan(evaluate.iou_bone(np.zeros((32, 32)), bone))
    assert evaluate.top_share(np.zeros((4, 4)), 0.25).sum() == 4
