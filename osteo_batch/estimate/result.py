"""An estimate's result: what it measured and projected, and the machine and run it was made on."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from osteo_batch.estimate.project import Measured, Projection


@dataclass(frozen=True)
class Estimate:
    """What an estimate measured and projected, with the machine and run it was made on (no patient data)."""

    run_id: str
    estimated_at: dt.datetime
    source_kind: str  # "folder", "dicomweb", "dimse"
    model_id: str
    model_name: str  # "dinov2_small at 518 px"
    device: str
    precision: str | None
    threads: int | None
    cpu_capability: str
    seed: int
    measured: Measured
    projection: Projection

    def to_json(self) -> dict[str, Any]:
        """Everything the table shows, as numbers (``osteo-batch estimate --json``)."""
        m, p = self.measured, self.projection
        return {
            "run_id": self.run_id, "estimated_at": self.estimated_at.isoformat(), "source_kind": self.source_kind,
            "model_id": self.model_id, "model": self.model_name, "device": self.device, "precision": self.precision,
            "threads": self.threads, "cpu_capability": self.cpu_capability, "cores": m.cores, "seed": self.seed,
            "backlog": m.backlog,
            "sample": {"images": m.sample_size, "scored": m.scored, "rejected": m.rejected, "flagged": m.flagged,
                       "flagged_fraction": m.flagged_fraction},
            "scoring": asdict(m.scoring), "heatmaps": asdict(m.heatmaps) if m.heatmaps else None,
            "heatmap_s": m.heatmap_s, "decode_core_ips": m.decode_core_ips, "model_core_ips": m.model_core_ips,
            "honest_limit_ips": m.honest_limit_ips(),
            "predicted": {"score_s": p.score_s, "explain_s": p.explain_s, "predicted_s": p.predicted_s,
                          "heatmaps": p.flagged},
            "disk": {"store_bytes": p.store_bytes, "store_bytes_now": m.store_bytes,
                     "store_bytes_per_instance": m.store_bytes_per_instance, "parts_bytes": p.part_bytes,
                     "part_bytes_per_row": m.part_bytes_per_row, "heatmap_bytes": p.heatmap_bytes,
                     "bytes_per_heatmap": m.heatmap_bytes, "spool_bytes": p.spool_bytes},
            "window_hours": p.window_hours, "nights": p.nights, "what_if": p.what_if_json(),
        }
