"""Site recalibration: a new model version with a mapping and a threshold, the card keeps history."""

import json

import numpy as np
import pytest

from osteo_batch.models import calibrate
from osteo_batch.models.model import load_model_dir


def test_platt_and_isotonic_fix_a_miscalibrated_score():
    from osteo_batch.models.evaluate import calibration

    rng = np.random.default_rng(0)
    true_p = rng.random(4000)
    y = (rng.random(4000) < true_p).astype(int)
    skewed = true_p ** 3  # ranks right, probabilities far too low
    for method in calibrate.METHODS:
        m = calibrate.fit(method, skewed[:2000], y[:2000])
        fixed = calibrate.apply(m, skewed[2000:])
        assert calibration(y[2000:], fixed).ece < calibration(y[2000:], skewed[2000:]).ece / 3
    assert calibrate.apply(None, skewed) is skewed


def test_recalibrate_writes_a_new_version_with_history(tiny_model, tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    patients = np.array([f"P{i:03d}" for i in range(n)])
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.2 * y + 0.4 * rng.random(n), 0, 1)
    out = tmp_path / "v2"
    entry = calibrate.recalibrate(tiny_model.model_dir, out, p, y, patients, method="platt")
    new = load_model_dir(out)
    old = load_model_dir(tiny_model.model_dir)
    assert new.model_id == entry["model_id"] != old.model_id
    assert new.config.calibration["method"] == "platt" and new.config.threshold == pytest.approx(entry["threshold"])
    card = json.loads((out / "card.json").read_text())
    assert [h["event"] for h in card["history"]] == ["trained", "recalibrated"]
    assert card["history"][1]["from_model_id"] == old.model_id
    assert (out / "model.safetensors").read_bytes() == (tiny_model.model_dir / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="both halves"):
        calibrate.recalibrate(tiny_model.model_dir, tmp_path / "v3", p, np.zeros(n, int), patients)
