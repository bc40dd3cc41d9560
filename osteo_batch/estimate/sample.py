"""Which images an estimate times: a seeded random sample of the backlog, and the backlog's size.

Why seeded: two estimates of the same index time the same images, so a
change of machine or settings is what their difference shows. Why random:
an archive is not uniform (old uncompressed studies, new JPEG 2000 ones, a
modality that writes larger films), and the first images in any order would
be one corner of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from osteo_batch.scoring.tensors import Item


@dataclass(frozen=True)
class Sample:
    """The backlog (pending images for the run's model and source) and the sample drawn from it."""

    backlog: int
    backlog_bytes: int
    items: tuple[Item, ...]
    seed: int

    @property
    def mean_bytes(self) -> float:
        """Mean size of a pending instance on disk (for the spool: a PACS instance as retrieved)."""
        return self.backlog_bytes / self.backlog if self.backlog else 0.0


def draw(store, *, model_id: str, n: int, seed: int, source_prefix: str | None) -> Sample:
    """``n`` pending images, the same for the same seed and index, in the order the run scores them."""
    if n < 1:
        raise ValueError(f"a sample needs at least one image, not {n}")
    rows = store.rows("estimate_sample", {"model_id": model_id, "n": n, "seed": seed, "prefix": source_prefix})
    items = tuple(Item(r["path"], r["sop_instance_uid"], r["patient_id"]) for r in rows)
    backlog = int(rows[0]["backlog"]) if rows else 0
    return Sample(backlog, int(rows[0]["backlog_bytes"] or 0) if rows else 0, items, seed)
