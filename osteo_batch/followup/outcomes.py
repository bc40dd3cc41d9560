"""Outcome matching: did flagged women come for DXA, and what did it find?

A patient is *flagged* on the first night a worklist lists her. Her outcome is
her first DXA in the ``follow_up_days`` after that (loaded from the same CSV
format as ever). From those, per run, per month of the flag and per site:

- **uptake**: tested / flagged, and among those a coordinator acted on
  (any recorded action: contacted, referred, declined, unreachable, dxa-done);
- **yield**: the share of those tested whose lowest T-score is -1.0 or lower
  (osteopenia or osteoporosis) -- the positive predictive value the program
  actually reached; and the share at -2.5 or lower (osteoporosis);
- **time to DXA**: days from the flag to the DXA, median and mean.

Patients flagged less than ``follow_up_days`` ago are still in follow-up:
counted, and shown apart, because their uptake is not final.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from osteo_batch.text import clean_cell

LOW_BONE_MASS_T = -1.0  # WHO: osteopenia or osteoporosis
OSTEOPOROSIS_T = -2.5


def _share(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide (no flag, nobody tested)."""
    return part / whole if whole else None


@dataclass
class Outcome:
    """The follow-up numbers of one group of flagged patients."""

    key: str
    flagged: int = 0
    in_follow_up: int = 0  # flagged less than follow_up_days ago
    acted_on: int = 0
    tested: int = 0
    tested_acted_on: int = 0
    low_bone_mass: int = 0
    osteoporosis: int = 0
    days: list[int] = field(default_factory=list, repr=False)

    @property
    def uptake(self) -> float | None:
        return _share(self.tested, self.flagged)

    @property
    def uptake_acted_on(self) -> float | None:
        return _share(self.tested_acted_on, self.acted_on)

    @property
    def yield_low_bone_mass(self) -> float | None:
        return _share(self.low_bone_mass, self.tested)

    @property
    def yield_osteoporosis(self) -> float | None:
        return _share(self.osteoporosis, self.tested)

    @property
    def median_days_to_dxa(self) -> float | None:
        return float(statistics.median(self.days)) if self.days else None

    @property
    def mean_days_to_dxa(self) -> float | None:
        return float(statistics.fmean(self.days)) if self.days else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("days")
        for k in ("uptake", "uptake_acted_on", "yield_low_bone_mass", "yield_osteoporosis", "median_days_to_dxa",
                  "mean_days_to_dxa"):
            d[k] = getattr(self, k)
        return d


def tally(rows: Iterable[dict], key, *, as_of: dt.date, follow_up_days: int) -> list[Outcome]:
    """Group per-patient rows (``sql/outcomes.sql``) by ``key(row)`` and count (pure)."""
    groups: dict[str, Outcome] = {}
    for r in rows:
        k = key(r)
        o = groups.setdefault(k, Outcome(k))
        o.flagged += 1
        if (as_of - r["flagged_on"]).days < follow_up_days and r["dxa_date"] is None:
            o.in_follow_up += 1
        acted = r["first_action"] is not None
        o.acted_on += acted
        if r["dxa_date"] is not None:
            o.tested += 1
            o.tested_acted_on += acted
            o.days.append(int(r["days_to_dxa"]))
            if r["t_min"] is not None and r["t_min"] <= LOW_BONE_MASS_T:
                o.low_bone_mass += 1
            if r["t_min"] is not None and r["t_min"] <= OSTEOPOROSIS_T:
                o.osteoporosis += 1
    return [groups[k] for k in sorted(groups)]


@dataclass
class Outcomes:
    as_of: str
    follow_up_days: int
    overall: Outcome
    by_run: list[Outcome]
    by_month: list[Outcome]
    by_site: list[Outcome]

    def to_json(self) -> dict[str, Any]:
        return {"as_of": self.as_of, "follow_up_days": self.follow_up_days, "overall": self.overall.to_json(),
                **{k: [o.to_json() for o in getattr(self, k)] for k in ("by_run", "by_month", "by_site")}}


def compute(store, *, follow_up_days: int = 365, as_of: dt.date | None = None) -> Outcomes:
    as_of = as_of or dt.date.today()
    rows = store.rows("outcomes", {"follow_up_days": follow_up_days, "as_of": as_of})
    kw = {"as_of": as_of, "follow_up_days": follow_up_days}
    overall = tally(rows, lambda r: "all", **kw)
    return Outcomes(
        as_of=as_of.isoformat(), follow_up_days=follow_up_days,
        overall=overall[0] if overall else Outcome("all"),
        by_run=tally(rows, lambda r: r["run_id"], **kw),
        by_month=tally(rows, lambda r: r["flagged_on"].strftime("%Y-%m"), **kw),
        # site names come from InstitutionName: cleaned when listed, and again here for entries recorded before
        by_site=tally(rows, lambda r: clean_cell(r["site"] or ""), **kw),
    )
