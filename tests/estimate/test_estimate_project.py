"""The estimate's arithmetic: start-up and steady rate from a sample's batches, the backlog, nights, other machines."""

from __future__ import annotations

import pytest

from osteo_batch.estimate.project import GPU_REFERENCE, Measured, Split, nights, project


def test_the_steady_rate_is_timed_after_the_batches_that_arrive_together():
    # two workers: batches 1 and 2 were decoded side by side and arrive together at 10 s
    arrivals = [(10.0, 16), (10.2, 32), (12.2, 48), (14.2, 64)]
    s = Split.of(arrivals, warm_batches=2, end_s=14.5)
    assert s.startup_s == 10.0 + 0.2 and s.startup_images == 32
    assert s.steady_ips == pytest.approx(32 / 4.0)  # not 48 / 4.2: the free second batch is start-up
    assert s.tail_s == pytest.approx(0.3)
    # the backlog: start-up once, the rest at the steady rate, then the tail
    assert s.seconds(1032) == pytest.approx(10.2 + 1000 / 8.0 + 0.3)
    assert s.seconds(0) == 0.0
    assert s.seconds(16) == pytest.approx(10.2 * 16 / 32 + 0.3)  # within the start-up: its share of it


def test_a_sample_of_one_batch_has_no_steady_rate_and_falls_back_to_its_overall_rate():
    s = Split.of([(4.0, 8)], warm_batches=2, end_s=4.0)
    assert s.steady_ips is None and s.overall_ips == 2.0
    assert s.seconds(108) == pytest.approx(4.0 + 100 / 2.0)
    assert Split.of([], warm_batches=1, end_s=1.5) == Split(1.5, 0, None, 0.0)


def test_without_workers_the_first_batch_is_the_start_up():
    s = Split.of([(3.0, 4), (4.0, 8), (5.0, 12)], warm_batches=0, end_s=5.0)
    assert (s.startup_s, s.startup_images, s.steady_ips) == (3.0, 4, 4.0)


def test_nights_count_a_part_night_as_one():
    assert nights(0, 8) == 0
    assert nights(8 * 3600, 8) == 1
    assert nights(8 * 3600 + 1, 8) == 2
    assert nights(20 * 3600, 10) == 2


def _measured(**kw) -> Measured:
    base = dict(backlog=10_000, sample_size=100, scored=98, rejected=2, flagged=25,
                scoring=Split(20.0, 32, 10.0, 1.0), heatmaps=Split(5.0, 16, 2.0, 0.0), cores=2,
                decode_core_ips=8.0, model_core_ips=2.0, part_bytes_per_row=100.0, heatmap_bytes=50_000.0,
                store_bytes=1_000_000, store_bytes_per_instance=2_000.0, spool_bytes=None)
    return Measured(**{**base, **kw})


def test_the_backlog_on_this_machine():
    m = _measured()
    p = project(m, window_hours=8)
    assert p.flagged == 2500
    assert p.score_s == pytest.approx(20.0 + (10_000 - 32) / 10.0 + 1.0)
    assert p.explain_s == pytest.approx(5.0 + (2500 - 16) / 2.0)
    assert p.predicted_s == p.score_s + p.explain_s
    assert p.nights == 1 and p.part_bytes == 1_000_000 and p.heatmap_bytes == 125_000_000
    assert p.store_bytes == 2_000_000  # the index now, plus a score row per image
    assert m.heatmap_s == 0.5 and m.flagged_fraction == 0.25
    assert m.honest_limit_ips() == pytest.approx(2 / (1 / 8 + 1 / 2)) and m.honest_limit_ips(16) == pytest.approx(25.6)


def test_more_cores_scale_the_honest_limit_and_shards_multiply_this_machine():
    m = _measured()
    p = project(m, window_hours=8, cores=16, shards=4)
    cores, shards, gpu = p.what_if
    assert (cores.kind, cores.n, shards.kind, shards.n, gpu.kind) == ("cores", 16, "shards", 4, "gpu")
    assert cores.rate_ips == pytest.approx(80.0) and "16/(1/8 + 1/2) = 25.6" in cores.basis
    assert cores.score_s == pytest.approx(20.0 + (10_000 - 32) / 80.0 + 1.0)
    assert cores.explain_s == pytest.approx(5.0 + (2500 - 16) / 16.0)
    assert shards.rate_ips == 40.0 and shards.explain_s == p.explain_s  # heat maps stay one stage
    assert shards.score_s == pytest.approx(20.0 + (10_000 - 32) / 40.0 + 1.0)


def test_the_gpu_line_quotes_the_figure_measured_elsewhere_bounded_by_decoding_here():
    p = project(_measured(), window_hours=8, cores=16, model_name="dinov2_tiny_demo at 168 px")
    gpu = p.what_if[-1]
    assert gpu.rate_ips == 16 * 8.0  # min(cores × decode per core, 1,486)
    assert "one NVIDIA H100 80GB" in gpu.basis and "1,486" in gpu.basis and "18.8" in gpu.basis
    assert "this model is dinov2_tiny_demo at 168 px" in gpu.basis
    fast = project(_measured(decode_core_ips=500.0), window_hours=8, cores=16).what_if[-1]
    assert fast.rate_ips == GPU_REFERENCE.model_ips == 1486.0
    unknown = project(_measured(decode_core_ips=None), window_hours=8).what_if[-1]
    assert unknown.rate_ips == GPU_REFERENCE.pipeline_ips and unknown.n == 16


def test_nothing_pending_costs_nothing():
    m = _measured(backlog=0, sample_size=0, scored=0, rejected=0, flagged=0, scoring=Split(0.0, 0, None),
                  heatmaps=None)
    p = project(m, window_hours=8, cores=16, shards=2)
    assert p.predicted_s == 0 and p.nights == 0 and all(w.predicted_s == 0 for w in p.what_if)
