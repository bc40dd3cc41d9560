"""Risk bands a coordinator can act on, and the one rounding every page shows.

Why this module: a band is a promise about the women in it. With calibrated
probabilities the promise can be stated plainly: in the "very high" band at
least half of the women screened would have osteoporosis at DXA; in "high"
the model's sensitivity target is met. The legend gives what was *observed* on
held-out women: the share of the screened population in each band and the
share of them with osteoporosis.

Bands and the threshold are compared with the score as displayed
(:data:`DECIMALS` places), and their edges sit on that grid, so two rows
showing the same score always carry the same band.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Decimal places of every displayed score (worklist, CSV, cards).
DECIMALS = 3
_STEP = 10**-DECIMALS


def display(score: float) -> float:
    """The score as shown: rounded half up to :data:`DECIMALS` places."""
    return math.floor(float(score) / _STEP + 0.5 + 1e-9) * _STEP


def edge_below(x: float) -> float:
    """The largest displayed value not above ``x``: an edge that keeps everyone it kept."""
    return math.floor(float(x) / _STEP + 1e-9) * _STEP


def _shown_at_least(threshold: float) -> float:
    """The smallest displayed value at or above ``threshold``."""
    return math.ceil(float(threshold) / _STEP - 1e-9) * _STEP


def raw_floor(threshold: float) -> float:
    """The lowest raw score whose displayed value reaches ``threshold``.

    Flagging in SQL (``score >= raw_floor``) then agrees with the page: a
    woman is flagged exactly when her displayed score is at or above the
    threshold, whatever precision the threshold was given in.
    """
    return _shown_at_least(threshold) - 0.5 * _STEP - 1e-9


def flagged(score: float, threshold: float) -> bool:
    """Whether the page lists ``score`` at ``threshold``: its displayed value reaches it."""
    return display(score) >= _shown_at_least(threshold) - 1e-12


def band_of(score: float, bands: dict[str, float]) -> str:
    """'very high', 'high' or 'below threshold', judged on the displayed score."""
    s = display(score)
    if s >= bands.get("very_high", 2.0) - 1e-12:
        return "very high"
    if s >= bands["high"] - 1e-12:
        return "high"
    return "below threshold"


def legend(y: np.ndarray, p: np.ndarray, bands: dict[str, float]) -> list[dict[str, Any]]:
    """Per band: its score range, the share of screened women in it and the share with osteoporosis.

    ``y`` (1 = osteoporosis at DXA) and ``p`` (calibrated scores) are held-out
    women the model never trained on.
    """
    y = np.asarray(y).astype(int)
    names = np.array([band_of(v, bands) for v in p])
    out = []
    edges = {"very high": (bands.get("very_high"), None), "high": (bands["high"], bands.get("very_high")),
             "below threshold": (None, bands["high"])}
    for name in ("very high", "high", "below threshold"):
        sel = names == name
        n = int(sel.sum())
        lo, hi = edges[name]
        out.append({
            "band": name, "from": lo, "below": hi, "n": n,
            "share_screened": round(n / len(p), 4) if len(p) else None,
            "observed_ppv": round(float(y[sel].mean()), 4) if n else None,
            "mean_score": round(float(np.mean(p[sel])), 4) if n else None,
            "share_of_cases": round(float(y[sel].sum() / max(1, y.sum())), 4),
        })
    return out


def describe(entry: dict[str, Any]) -> str:
    """One sentence a coordinator can read, from a :func:`legend` entry."""
    if not entry.get("n"):
        return f"No held-out woman scored in the {entry['band']} band."
    ppv = entry["observed_ppv"]
    return (f"{entry['share_screened'] * 100:.0f}% of screened women scored here; "
            f"{ppv * 100:.0f}% of them ({_in_ten(ppv)}) had osteoporosis at DXA, "
            f"and they held {entry['share_of_cases'] * 100:.0f}% of all osteoporosis cases.")


def _in_ten(p: float) -> str:
    k = round(p * 10)
    if k >= 10:
        return "nearly all"
    return "fewer than 1 in 10" if k < 1 else f"about {k} in 10"
