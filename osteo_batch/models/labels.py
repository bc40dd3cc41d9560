"""WHO classes of bone density from a DXA T-score: the labels the model predicts.

normal: T >= -1.0; osteopenia: -2.5 < T < -1.0; osteoporosis: T <= -2.5.
The label of a woman is the class of her minimum T-score over the label sites.
"""

from __future__ import annotations

LABELS = ("normal", "osteopenia", "osteoporosis")


def who_class(t_min: float) -> int:
    """Index into :data:`LABELS` for a minimum T-score."""
    if t_min <= -2.5:
        return 2
    if t_min < -1.0:
        return 1
    return 0


SITES = ("t_lumbar_spine", "t_femoral_neck", "t_total_hip")


def min_t(row: dict, sites: tuple[str, ...] = SITES) -> float | None:
    """The lowest T-score of a DXA row over ``sites`` (None when none was measured)."""
    vals = [row[s] for s in sites if row.get(s) is not None]
    return min(vals) if vals else None
