"""The estimate as a row of the store's ``estimates`` table, so a program can compare it with the nights that follow.

The row holds counts, rates, seconds and bytes, the machine (its CPU
capability and cores) and the source's kind, never a path or a URL.
"""

from __future__ import annotations

import json
from typing import Any

from osteo_batch.estimate.result import Estimate


def row(est: Estimate) -> dict[str, Any]:
    """The ``estimates`` columns of ``est`` (sql/schema.sql)."""
    m, p = est.measured, est.projection
    return {
        "run_id": est.run_id, "estimated_at": est.estimated_at, "source_kind": est.source_kind,
        "model_id": est.model_id, "device": est.device, "precision": est.precision,
        "cpu_capability": est.cpu_capability, "cores": m.cores, "backlog": m.backlog, "sample_size": m.sample_size,
        "startup_s": m.scoring.startup_s, "steady_ips": m.scoring.steady_ips, "heatmap_s": m.heatmap_s,
        "flagged_fraction": m.flagged_fraction, "decode_core_ips": m.decode_core_ips,
        "model_core_ips": m.model_core_ips, "score_s": p.score_s, "explain_s": p.explain_s,
        "predicted_s": p.predicted_s, "store_bytes": p.store_bytes, "parts_bytes": p.part_bytes,
        "heatmap_bytes": p.heatmap_bytes, "spool_bytes": p.spool_bytes, "window_hours": p.window_hours,
        "nights": p.nights, "what_if": json.dumps(p.what_if_json()),
    }


def record(store, est: Estimate) -> None:
    """Insert (or replace) ``est``'s row."""
    import pyarrow as pa

    r = row(est)
    types = {"estimated_at": pa.timestamp("s"), "cores": pa.int32(), "sample_size": pa.int32(), "nights": pa.int32(),
             "backlog": pa.int64(), "store_bytes": pa.int64(), "parts_bytes": pa.int64(),
             "heatmap_bytes": pa.int64(), "spool_bytes": pa.int64(), "precision": pa.string()}
    floats = ("startup_s", "steady_ips", "heatmap_s", "flagged_fraction", "decode_core_ips", "model_core_ips",
              "score_s", "explain_s", "predicted_s", "window_hours")
    table = pa.table({k: pa.array([v], types.get(k, pa.float64() if k in floats else pa.string()))
                      for k, v in r.items()})
    store.run("estimate_insert", est=table)
