"""Image-DXA pairs and their labels, and the patient split: shared by training and site calibration.

Why one module: a model's label is the WHO class of the lowest T-score over
*its* label sites (:attr:`TrainConfig.label_sites`, kept on its card). A
calibration that paired and labelled on its own, with every site, judged a
model trained on the femoral neck against labels from the lumbar spine. Both
now pair through :func:`load_pairs`, and both split by patient (never by
image, so no woman is on both sides of a split) with :func:`split_by_patient`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from osteo_batch.models.labels import SITES, min_t, who_class
from osteo_batch.scoring.tensors import Item

#: Fewer pairs than this leave nothing to split, train on or judge with.
MIN_PAIRS = 20


@dataclass(frozen=True)
class Pairs:
    """Eligible images paired with a DXA and labelled over ``sites``, in the store's order."""

    rows: list[dict[str, Any]]  # a ``training_pairs`` row per image, with its ``t_min`` over ``sites``
    labels: list[int]  # WHO class (index into labels.LABELS) of each row's t_min
    sites: tuple[str, ...]
    window_days: int

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def patients(self) -> list[str]:
        return [r["patient_id"] for r in self.rows]

    def items(self) -> list[Item]:
        """The images to decode, index for index with :attr:`rows`."""
        return [Item(r["path"], r["sop_instance_uid"], r["patient_id"]) for r in self.rows]


def sites_problem(sites: tuple[str, ...] | list[str]) -> str | None:
    """What is wrong with a choice of label sites (None when nothing is)."""
    bad = set(sites) - set(SITES)
    if bad or not sites:
        return f"label sites {sorted(bad)}: use {', '.join(SITES)}"
    return None


def load_pairs(store, *, window_days: int, sites: tuple[str, ...]) -> Pairs:
    """Eligible images with the patient's nearest DXA within ``window_days``, labelled over ``sites``.

    A pair whose DXA measured none of ``sites`` has no label and is left out.
    """
    rows = store.rows("training_pairs", {"window_days": window_days})
    for r in rows:  # the label: the WHO class of the lowest T-score over the label sites
        r["t_min"] = min_t(r, tuple(sites))
    rows = [r for r in rows if r["t_min"] is not None]
    return Pairs(rows, [who_class(r["t_min"]) for r in rows], tuple(sites), window_days)


def unpaired(store, window_days: int) -> dict[str, int]:
    """Eligible images with no DXA inside the window, counted by reason (for the card)."""
    return {r["reason"]: r["n"] for r in store.rows("training_unpaired", {"window_days": window_days})}


def split_by_patient(patients: list[str], labels: list[int], share: float, seed: int) -> set[str]:
    """The patients of one side of a split: a stratified (by label) random ``share`` of patients."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[str]] = {}
    for p, y in sorted(set(zip(patients, labels))):
        by_label.setdefault(y, []).append(p)
    chosen: set[str] = set()
    for y, ps in sorted(by_label.items()):
        ps = sorted(set(ps))
        rng.shuffle(ps)
        chosen.update(ps[: int(round(len(ps) * share))])
    return chosen
