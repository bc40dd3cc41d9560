"""Training with a calibration split: three patient-disjoint splits, calibrated scores, bands on the display grid."""

import json

import numpy as np
import pytest

from osteo_batch.models import bands


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    from dicom_factory import small_spec

    from osteo_batch import pipeline
    from osteo_batch.foundations import PHANTOM
    from osteo_batch.models.train import TrainConfig, train
    from osteo_batch.synth.cohort import write_cohort

    root = tmp_path_factory.mktemp("calib")
    c = write_cohort(root / "cohort", small_spec(n_women=160, n_followups=0, min_side=200, max_side=240, seed=4321),
                     workers=2)
    s = pipeline.load_settings(None, workdir=root / "w", archive=c.archive, dxa_csv=c.dxa_csv)
    pipeline.load_dxa_stage(pipeline.RunContext.for_index(s, "t"))
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "t"))
    cfg = TrainConfig(weights=str(PHANTOM), epochs=1, workers=0, calibration="platt", val_fraction=0.6,
                      masks=str(c.masks), marker_masks=str(c.marker_masks))
    with pipeline.open_store(s, read_only=True) as st:
        return train(st, root / "m", cfg, truth_csv=c.truth_csv)


def test_figures_come_from_women_outside_training_and_calibration(calibrated):
    card = calibrated.card
    d = card["data"]
    assert d["reported_on"] == "test" and d["calibration_images"] > 0
    assert d["train_images"] + d["calibration_images"] + d["val_images"] == d["decoded_images"]
    assert card["calibration"]["method"] == "platt" and card["calibration"]["fitted_on"] == "calibration split"
    cfg = json.loads((calibrated.model_dir / "config.json").read_text())
    assert cfg["calibration"]["method"] == "platt"  # scoring applies it, so the model ID covers it


def test_threshold_and_bands_sit_on_the_displayed_grid(calibrated):
    cfg = json.loads((calibrated.model_dir / "config.json").read_text())
    for edge in (cfg["threshold"], *cfg["bands"].values()):
        assert abs(edge * 10**bands.DECIMALS - round(edge * 10**bands.DECIMALS)) < 1e-6
    assert cfg["bands"]["very_high"] >= cfg["threshold"]
    legend = calibrated.card["bands"]
    assert [b["band"] for b in legend] == ["very high", "high", "below threshold"]
    assert sum(b["n"] for b in legend) == calibrated.card["data"]["val_images"]
    assert all(b["text"] for b in legend)


def test_the_card_reports_heat_on_the_marker(calibrated):
    bone = calibrated.card["bone"]
    assert 0 <= bone["marker_heat_share"] <= 1 and 0 < bone["marker_area_share"] < 0.02
    assert np.isfinite(bone["bone_heat_share"])
    html = (calibrated.model_dir / "card.html").read_text()
    assert "Heat on the side marker" in html and "Held-out test split" in html
    assert "Phantoms only, not for patients" in html
