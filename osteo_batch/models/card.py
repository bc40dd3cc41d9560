"""The model card: ``card.json`` for programs, ``card.html`` for people, with its figures inlined.

Why its own module: training writes a card and so does every recalibration,
and both must write the same two files the same way (valid JSON, one
self-contained page, the code version that made it), without either knowing
how the other got its numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from osteo_batch.models.model import ModelConfig


def write_card(out: Path, card: dict[str, Any], mcfg: ModelConfig) -> None:
    """``out/card.json`` and ``out/card.html`` (ROC and reliability figures as data URIs), 0600."""
    from osteo_batch.models import plots
    from osteo_batch.outputs import write_private
    from osteo_batch.render import png_data_uri, render

    card = json_safe(card)
    write_private(out / "card.json", json.dumps(card, indent=2, default=str, allow_nan=False))
    figures = {}
    if card.get("validation", {}).get("roc"):
        figures["roc"] = plots.roc_png({card.get("strategy", "model"): card["validation"]["roc"]})
    if card.get("calibration"):
        figures["reliability"] = plots.reliability_png(card["calibration"]["bins"])
    uris = {k: png_data_uri(v) for k, v in figures.items()}
    write_private(out / "card.html", render("card.html.j2", card=card, config=asdict(mcfg), figures=uris))


def band_legend(y_bin, score, bands: dict[str, float]) -> list[dict[str, Any]]:
    """The card's band table: what was observed in each band, with a sentence a coordinator can read."""
    from osteo_batch.models import bands as bandlib

    return [{**e, "text": bandlib.describe(e)} for e in bandlib.legend(y_bin, score, bands)]


def code_version() -> str:
    """The installed package's version, else the source tree's ``__version__``.

    Read from the package metadata, never from git: an installed osteo-batch
    (a wheel at a hospital) has no checkout and may have no git at all.
    """
    from importlib import metadata

    try:
        return metadata.version("osteo-batch")
    except metadata.PackageNotFoundError:
        from osteo_batch import __version__

        return __version__


def json_safe(x):
    """NaN (an AUC of a subgroup with one class) becomes null: card.json stays valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
