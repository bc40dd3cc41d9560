"""Who is left off tonight's worklist: a recent DXA, a known condition, or a recent referral action.

Why its own module: the rules read the follow-up tables (DXA, known
conditions, referrals), and their default windows are the defaults of the
run's settings too. Settings import the ``DEFAULT_*`` constants from here, so
each window is written once, and importing them costs nothing (no NumPy,
pydicom or Jinja behind this module).

Every window is in days before the run date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

#: A DXA in the last 2 years keeps a woman off the list ...
DEFAULT_DXA_DAYS = 730
#: ... or in the last year if its lowest T-score was near the osteoporosis line (:data:`DEFAULT_NEAR_T`).
DEFAULT_DXA_DAYS_NEAR = 365
#: The lowest T-scores (inclusive) that count as near the line.
DEFAULT_NEAR_T = (-2.49, -2.0)
#: Days a coordinator's latest action keeps her off the list, by referral status.
DEFAULT_REFERRED_DAYS = 180
DEFAULT_DECLINED_DAYS = 365
DEFAULT_UNREACHABLE_DAYS = 90
DEFAULT_DXA_DONE_DAYS = 730
#: The same, keyed by the status as recorded (:data:`osteo_batch.followup.referrals.REFERRAL_STATUSES`).
DEFAULT_REFERRAL_DAYS: Mapping[str, int] = MappingProxyType({
    "referred": DEFAULT_REFERRED_DAYS, "declined": DEFAULT_DECLINED_DAYS,
    "unreachable": DEFAULT_UNREACHABLE_DAYS, "dxa-done": DEFAULT_DXA_DONE_DAYS})

#: exclusion key -> what the summary says about it
EXCLUSION_TEXT = {
    "recent_dxa": "a DXA within the last {dxa_days} days ({dxa_days_near} if its lowest T-score was {near_lo} to {near_hi})",
    "known_osteoporosis_or_treatment": "known osteoporosis or treatment (known-conditions list)",
    "already_referred": "referred within the last {referred} days",
    "already_declined": "declined within the last {declined} days",
    "already_unreachable": "unreachable within the last {unreachable} days",
    "dxa_done": "marked DXA done within the last {dxa_done} days",
}


@dataclass(frozen=True)
class Exclusions:
    """Who is left off tonight's list; every window is in days before the run date."""

    dxa_days: int = DEFAULT_DXA_DAYS
    dxa_days_near: int = DEFAULT_DXA_DAYS_NEAR
    near_t: tuple[float, float] = DEFAULT_NEAR_T
    known_conditions: bool = True
    referral_days: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_REFERRAL_DAYS))

    def describe(self) -> dict[str, str]:
        f = {"dxa_days": self.dxa_days, "dxa_days_near": self.dxa_days_near, "near_lo": f"{self.near_t[0]:.2f}",
             "near_hi": f"{self.near_t[1]:.1f}", "referred": self.referral_days.get("referred"),
             "declined": self.referral_days.get("declined"), "unreachable": self.referral_days.get("unreachable"),
             "dxa_done": self.referral_days.get("dxa-done")}
        return {k: v.format(**f) for k, v in EXCLUSION_TEXT.items()}


def exclusion_for(c: Mapping[str, Any], rules: Exclusions, as_of: dt.date) -> str | None:
    """The first exclusion that applies to candidate ``c`` on ``as_of``, or None (pure)."""
    d = c.get("last_dxa_date")
    if d is not None:
        t = c.get("last_dxa_t_min")
        near = t is not None and rules.near_t[0] <= t <= rules.near_t[1]
        window = rules.dxa_days_near if near else rules.dxa_days
        if 0 <= (as_of - d).days <= window:
            return "recent_dxa"
    if rules.known_conditions and c.get("known_condition"):
        return "known_osteoporosis_or_treatment"
    status, at = c.get("referral_status"), c.get("referral_at")
    if status in rules.referral_days and at is not None:
        if 0 <= (as_of - as_date(at)).days <= rules.referral_days[status]:
            return "dxa_done" if status == "dxa-done" else f"already_{status}"
    return None


def as_date(x: dt.date | dt.datetime) -> dt.date:
    """The day of a date or a datetime (a referral's time is a datetime, a DXA's a date)."""
    return x.date() if isinstance(x, dt.datetime) else x
