"""Risk bands and the displayed score: one rounding, so a row's band follows from what the page shows."""

import numpy as np

from osteo_batch.models import bands


def test_rows_showing_the_same_score_share_a_band():
    rng = np.random.default_rng(0)
    edges = {"high": bands.edge_below(0.2137), "very_high": bands.edge_below(0.5)}
    scores = np.concatenate([rng.uniform(0, 1, 20_000),
                             # scores a hair either side of every edge and of every rounding boundary near it
                             *[e + rng.uniform(-0.0011, 0.0011, 2_000) for e in edges.values()]])
    seen: dict[str, str] = {}
    for s in scores:
        shown = f"{bands.display(s):.{bands.DECIMALS}f}"
        assert shown == f"{round(bands.display(s), bands.DECIMALS):.{bands.DECIMALS}f}"
        b = bands.band_of(s, edges)
        assert seen.setdefault(shown, b) == b, f"{shown} sits in two bands"


def test_flagging_in_sql_agrees_with_the_page(tmp_path):
    """``score >= raw_floor(t)`` (what SQL runs) selects exactly the scores whose displayed value reaches t."""
    import duckdb

    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.uniform(0, 1, 5_000), np.round(rng.uniform(0, 1, 2_000), 4)])
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    con.execute("CREATE TABLE s (score DOUBLE)")
    con.executemany("INSERT INTO s VALUES (?)", [[float(v)] for v in scores])
    for t in (0.0, 0.2, 0.2137, 0.33975, 0.5, 0.9995, 1.0):
        in_sql = con.execute("SELECT count(*) FROM s WHERE score >= ?", [bands.raw_floor(t)]).fetchone()[0]
        on_page = sum(bands.flagged(v, t) for v in scores)
        assert in_sql == on_page, t
    # a threshold on the grid keeps the image that set it
    assert bands.flagged(0.21371, bands.edge_below(0.21371))


def test_legend_counts_every_held_out_woman_once():
    rng = np.random.default_rng(2)
    p = rng.beta(1, 3, 400)
    y = (rng.uniform(size=400) < p).astype(int)
    edges = {"high": 0.2, "very_high": 0.5}
    leg = bands.legend(y, p, edges)
    assert [e["band"] for e in leg] == ["very high", "high", "below threshold"]
    assert sum(e["n"] for e in leg) == 400
    assert abs(sum(e["share_of_cases"] for e in leg) - 1.0) < 1e-3
    # calibrated scores: the observed share with osteoporosis rises band by band
    ppv = [e["observed_ppv"] for e in leg]
    assert ppv[0] > ppv[1] > ppv[2]
    text = bands.describe(leg[0])
    assert "of screened women" in text and "osteoporosis at DXA" in text
