"""The one reduction filter (osteo_batch.dicom.reduce): the 5/3 low band and the box mean brought to one target."""

from __future__ import annotations

import numpy as np
import pytest

from osteo_batch.dicom.decode import _stored_integers, block_mean
from osteo_batch.dicom.reduce import SHARPEN, SMOOTH, SMOOTH_97, equalise_box, equalise_low_band, smooth3


def _reference(x: np.ndarray, a: float) -> np.ndarray:
    """[a, 1 - 2a, a] along both axes by explicit sums over a whole-sample symmetric padding, in float64."""
    k = np.array([a, 1 - 2 * a, a])
    p = np.pad(x.astype(np.float64), 1, mode="reflect")
    rows = k[0] * p[:-2] + k[1] * p[1:-1] + k[2] * p[2:]
    return k[0] * rows[:, :-2] + k[1] * rows[:, 1:-1] + k[2] * rows[:, 2:]


@pytest.mark.parametrize("shape", [(7, 5), (2, 9), (64, 33)])
@pytest.mark.parametrize("a", [-SHARPEN, 0.066, 0.25])
def test_smooth3_is_the_separable_3_tap_with_mirrored_edges(shape, a):
    x = np.random.default_rng(0).integers(0, 4096, shape).astype(np.uint16)
    got = smooth3(x, a)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, _reference(x, a), rtol=1e-6, atol=1e-3)
    assert x.dtype == np.uint16, "the input is left as it is"


def test_one_pixel_wide_images_and_a_centreless_weight():
    x = np.arange(5, dtype=np.float32)[None]
    np.testing.assert_allclose(smooth3(x, 0.1)[0], _reference(np.repeat(x, 3, 0), 0.1)[1])
    with pytest.raises(ValueError):
        smooth3(x, 0.5)


def test_a_flat_image_stays_flat_and_level_0_is_untouched():
    flat = np.full((40, 30), 1234.0, np.float32)
    for r in (1, 2, 5):
        np.testing.assert_allclose(equalise_box(flat, r), flat, rtol=1e-6)
        np.testing.assert_allclose(equalise_low_band(flat.astype(np.uint16), r), flat, rtol=1e-6)
    assert equalise_box(flat, 0) is flat


#: The analysis low passes, DC gain 1: reversible 5/3 and irreversible 9/7 (ISO 15444-1 Annex F).
H53 = np.array([-1, 2, 6, 2, -1]) / 8
H97 = np.array([0.026748757411, -0.016864118443, -0.078223266529, 0.266864118443, 0.602949018236,
                0.266864118443, -0.078223266529, -0.016864118443, 0.026748757411])


def _ll(r: int, h: np.ndarray = H53) -> np.ndarray:
    """The 1D linear equivalent of r levels of the analysis low pass ``h`` (noble identities)."""
    f = np.array([1.0])
    for i in range(r):
        u = np.zeros((len(h) - 1) * 2**i + 1)
        u[:: 2**i] = h
        f = np.convolve(f, u)
    return f


@pytest.mark.parametrize("r", [1, 2, 3, 4])
@pytest.mark.parametrize("table,h", [(SMOOTH, H53), (SMOOTH_97, H97)], ids=["5/3", "9/7"])
def test_the_smoothing_table_is_the_least_squares_fit_to_the_target(r, table, h):
    """table[r] is the a whose [a, 1-2a, a] times level r's low band best matches the sharpened box, in band."""
    n, k = 2048, 2**r
    w = np.arange(n // 2) / n * 2 * np.pi  # the reduced band, at the reduced rate
    low = np.abs(np.fft.fft(_ll(r, h), n * k))[: n // 2]
    box = np.abs(np.fft.fft(np.ones(k) / k, n * k))[: n // 2]
    target = (1 + 2 * SHARPEN - 2 * SHARPEN * np.cos(w)) * box
    grid = np.linspace(-0.1, 0.2, 3001)
    err = [np.sum(((1 - 2 * a + 2 * a * np.cos(w)) * low - target) ** 2) for a in grid]
    assert abs(grid[int(np.argmin(err))] - table[r]) < 0.002


@pytest.mark.parametrize("r", [2, 3])
def test_the_low_band_keeps_the_noise_of_the_box_once_both_are_equalised(r):
    """The cause of the twins' drift: level r's low band keeps 3-4x the box's noise variance; equalised, within 15%."""
    import torch

    from osteo_batch.dicom.nvimgcodec import low_band  # bit-exact with OpenJPEG (tests/dicom/test_j2k_readers.py)

    rng = np.random.default_rng(r)
    img = (2048 + 100 * rng.standard_normal((1024, 1024))).round().astype(np.uint16)
    low = low_band(torch.from_numpy(img.astype(np.int32)), r, [(0, 0, 1024, 1024)], (0, 0), 12).numpy()
    box = block_mean(img, 2**r)
    inner = (slice(4, -4), slice(4, -4))
    before = low[inner].astype(np.float64).var() / box[inner].var()
    after = equalise_low_band(low.astype(np.uint16), r)[inner].var() / equalise_box(box, r)[inner].var()
    assert before > 2.5
    assert abs(after - 1) < 0.15, after
    assert abs(equalise_low_band(low.astype(np.uint16), r).mean() - box.mean()) < 2, "no shift in brightness (the lifting rounds: about 1 of 4096)"


def test_a_lut_indexed_reduction_is_clipped_not_wrapped():
    """Sharpening overshoots at a hard edge: rounded back for a LUT, 0 stays 0, not 65535."""
    x = np.zeros((8, 8), np.float32)
    x[:, 4:] = 4095
    out = _stored_integers(equalise_box(x, 2), np.dtype(np.uint16), 12)
    assert out.dtype == np.uint16 and int(out.min()) == 0 and int(out.max()) == 4095
    assert _stored_integers(np.array([[-40000.0, 40000.0]]), np.dtype(np.int16), 16).tolist() == [[-32768, 32767]]
    assert _stored_integers(np.array([[-3000.0, 3000.0]]), np.dtype(np.int16), 12).tolist() == [[-2048, 2047]]
