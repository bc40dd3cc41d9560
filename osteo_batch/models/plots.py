"""Small PNG plots for cards and reports (matplotlib, Agg backend, no display).

Returned as bytes so pages embed them as data URIs and stay self-contained.
"""

from __future__ import annotations

import io

import numpy as np


def roc_points(y, score) -> dict[str, list[float]]:
    """The ROC curve as plain lists (stored on the card, plotted in reports).

    One point per distinct score, from (0, 0) down to (1, 1), as scikit-learn's
    ``roc_curve`` gives it unpruned; a class that is absent has a rate of 0.
    """
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    if not len(s):
        return {"fpr": [0.0], "tpr": [0.0]}
    with warnings.catch_warnings():  # one class: its rate is 0/0, said as 0 below
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"fpr": np.nan_to_num(fpr, nan=0.0).tolist(), "tpr": np.nan_to_num(tpr, nan=0.0).tolist()}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def roc_png(curves: dict[str, dict[str, list[float]]]) -> bytes:
    """ROC curves, one line per named model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    for name, c in curves.items():
        ax.plot(c["fpr"], c["tpr"], label=name, lw=1.6)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1), title="ROC, osteoporosis vs rest")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def reliability_png(bins: list[dict]) -> bytes:
    """Observed frequency against mean predicted probability per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(b["mean_predicted"], b["observed"], b["n"]) for b in bins if b["n"]]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    if pts:
        x, y, n = map(np.array, zip(*pts))
        ax.scatter(x, y, s=10 + 60 * n / n.max(), zorder=3)
        ax.plot(x, y, lw=1)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="predicted P(osteoporosis)", ylabel="observed share", xlim=(0, 1), ylim=(0, 1), title="Reliability")
    return _png(fig)


def trend_png(months: list[str], series: dict[str, list[float | None]], *, title: str, ylabel: str,
              percent: bool = True) -> bytes:
    """One line per named series over months (None leaves a gap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    x = np.arange(len(months))
    for name, ys in series.items():
        y = np.array([np.nan if v is None else (100 * v if percent else v) for v in ys], dtype=float)
        ax.plot(x, y, marker="o", lw=1.6, label=name)
    step = max(1, len(months) // 12)
    ax.set_xticks(x[::step], months[::step], rotation=45 if len(months) > 6 else 0, fontsize=8)
    ax.set(title=title, ylabel=ylabel + (" (%)" if percent else ""))
    if percent:
        ax.set_ylim(0, 100)
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    return _png(fig)


def score_drift_png(months: list[str], p10: list[float], p50: list[float], p90: list[float],
                    threshold: float | None) -> bytes:
    """The distribution of risk scores by month: median and the 10th-90th percentile band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    x = np.arange(len(months))
    ax.fill_between(x, p10, p90, alpha=.25, label="10th-90th percentile")
    ax.plot(x, p50, marker="o", lw=1.6, label="median")
    if threshold is not None:
        ax.axhline(threshold, ls="--", c="#a3001b", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xticks(x, months, rotation=45 if len(months) > 6 else 0, fontsize=8)
    ax.set(title="Risk scores by month scored", ylabel="P(osteoporosis)", ylim=(0, 1))
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    return _png(fig)
