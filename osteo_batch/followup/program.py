"""The monthly program report: uptake, yield and time to DXA, with trends and score drift.

For program managers: one self-contained page per month (plots inlined as
PNG), with the month's numbers, the same numbers for every month so far as
trend plots and a table, a table per site, and the distribution of risk
scores by month, so a shift in the archive or the scanners (drift) shows
before it shows in the yield. Counts and shares only, no patient.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from osteo_batch.followup import outcomes as oc
from osteo_batch.models import plots
from osteo_batch.render import png_data_uri, render


def _month_range(first: str, last: str) -> list[str]:
    """``YYYY-MM`` from ``first`` to ``last``, every month in between."""
    y, m = map(int, first.split("-"))
    out = []
    while f"{y:04d}-{m:02d}" <= last:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def write_program_report(store, workdir: str | os.PathLike, *, month: str | None = None, follow_up_days: int = 365,
                         as_of: dt.date | None = None) -> tuple[Path, oc.Outcomes]:
    """``program/program-YYYY-MM.html`` (0600) for ``month`` (default: the current month)."""
    from osteo_batch.outputs import write_private

    as_of = as_of or dt.date.today()
    month = month or as_of.strftime("%Y-%m")
    res = oc.compute(store, follow_up_days=follow_up_days, as_of=as_of)
    have = {o.key: o for o in res.by_month}
    months = _month_range(min(have), max(have)) if have else []
    series = [have.get(m, oc.Outcome(m)) for m in months]  # months without a flag stay gaps in the plots
    final = [o if o.flagged > o.in_follow_up else oc.Outcome(o.key) for o in series]  # all still in follow-up: a gap
    this = next((o for o in res.by_month if o.key == month), oc.Outcome(month))
    runs = store.rows("runs_finished")
    threshold = runs[-1]["threshold"] if runs else None
    drift = [d for d in store.rows("score_distribution") if not runs or d["model_id"] == runs[-1]["model_id"]]
    figures = {}
    if months:
        figures["uptake"] = png_data_uri(plots.trend_png(
            months, {"uptake (tested / flagged)": [o.uptake for o in final],
                     "uptake among those acted on": [o.uptake_acted_on for o in final]},
            title="Uptake by month of flag", ylabel="share"))
        figures["yield"] = png_data_uri(plots.trend_png(
            months, {"osteopenia or osteoporosis (T ≤ -1.0)": [o.yield_low_bone_mass for o in series],
                     "osteoporosis (T ≤ -2.5)": [o.yield_osteoporosis for o in series]},
            title="Yield among those tested (PPV reached)", ylabel="share"))
        figures["days"] = png_data_uri(plots.trend_png(
            months, {"median days": [o.median_days_to_dxa for o in series]},
            title="Time from flag to DXA", ylabel="days", percent=False))
    if drift:
        figures["drift"] = png_data_uri(plots.score_drift_png(
            [d["month"] for d in drift], [d["p10"] for d in drift], [d["p50"] for d in drift],
            [d["p90"] for d in drift], threshold))
    html = render("program.html.j2", month=month, this=this, res=res, figures=figures, drift=drift,
                  threshold=threshold, generated=dt.datetime.now().isoformat(timespec="seconds"))
    path = write_private(Path(workdir) / "program" / f"program-{month}.html", html)
    return path, res
