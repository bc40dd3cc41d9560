"""Decoding only the resolution the model needs keeps risk scores within 0.005 of a full decode."""

from __future__ import annotations

import numpy as np
import pytest

from osteo_batch.dicom.decode import decode, decode_reduced, reduction_levels
from osteo_batch.dicom.display import DisplayOptions
from osteo_batch.dicom.pixels import load_image, read_dataset
from osteo_batch.dicom.rejections import PixelError


@pytest.fixture(scope="module")
def large_archive(tmp_path_factory):
    """Phantoms at 900-1400 px in JPEG 2000 (lossy and lossless), RLE and native: 2-3 levels above 168 px."""
    from dicom_factory import small_spec
    from osteo_batch.synth.cohort import write_cohort

    root = tmp_path_factory.mktemp("large")
    return write_cohort(root, small_spec(n_women=16, n_men=0, n_young=0, n_lateral=0, n_followups=0, n_unreadable=0,
                                         min_side=900, max_side=1400, seed=77), workers=2)


def _files(cohort):
    return [cohort.archive / p.filename for p in cohort.plans]


def test_reduction_stops_while_the_longer_side_still_covers_the_model():
    assert reduction_levels(1400, 1000, 168) == 3  # 175 px
    assert reduction_levels(1300, 1000, 168) == 2  # 325 px: one more halving would give 162
    assert reduction_levels(160, 120, 168) == 0


def test_jpeg2000_reads_a_reduced_level_close_to_the_full_image(large_archive):
    checked = 0
    for f in _files(large_archive):
        ds = read_dataset(f)
        if "JPEG 2000" not in ds.file_meta.TransferSyntaxUID.name:
            continue
        r = reduction_levels(ds.Rows, ds.Columns, 168)
        small, full = decode_reduced(ds, 168), decode(ds)
        k = 2**r
        assert r >= 2 and small.shape == (-(-ds.Rows // k), -(-ds.Columns // k)) and small.dtype == np.float32
        h, w = ds.Rows // k * k, ds.Columns // k * k
        box = full[:h, :w].astype(np.float64).reshape(h // k, k, w // k, k).mean(axis=(1, 3))
        # the wavelet's low band against a box mean: the same picture, up to the filter
        low = small[: h // k, : w // k].astype(np.float64)
        assert np.corrcoef(low.ravel(), box.ravel())[0, 1] > 0.9
        assert abs(low.mean() - box.mean()) < 0.005 * float(ds.WindowWidth), "no shift in brightness"
        checked += 1
    assert checked >= 4


def test_scores_from_reduced_decodes_stay_within_0_005_of_full_decodes(large_archive, tiny_model):
    import torch

    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.score import Forward, ScoreOptions

    model = load_model_dir(tiny_model.model_dir)
    size = model.config.img_size
    full, reduced = [], []
    for f in _files(large_archive):
        try:
            full.append(load_image(f, size, DisplayOptions(reduce=False)))
        except PixelError:
            continue
        reduced.append(load_image(f, size))
    assert len(full) >= 16
    fwd = Forward(model, ScoreOptions())
    with torch.inference_mode():
        a = np.array(fwd(torch.from_numpy(np.stack(full)[:, None])))
        b = np.array(fwd(torch.from_numpy(np.stack(reduced)[:, None])))
    assert np.abs(a - b).max() <= 0.005, f"max difference {np.abs(a - b).max():.4f}"
    assert not np.allclose(np.stack(full), np.stack(reduced)), "the reduced path really ran"
