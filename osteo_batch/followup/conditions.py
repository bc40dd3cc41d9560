"""Known osteoporosis or treatment: an optional CSV that keeps patients off the worklist.

Format (one header line, comma-separated, UTF-8)::

    patient_id,condition,since
    SYN00012,osteoporosis,2024-05-02
    SYN00031,denosumab,

``condition`` is free text (a diagnosis or a drug); ``since`` is optional
(YYYY-MM-DD). Any row keeps the patient off the list, counted in the summary
as ``known_osteoporosis_or_treatment``. A row that breaks these rules is
recorded in ``dxa_rejected`` with its line number and reason (never its
content), and loading goes on.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from osteo_batch.followup.dxa import csv_rows, record_rejected, source_id

COLUMNS = ("patient_id", "condition", "since")


@dataclass
class ConditionsParse:
    rows: list[dict] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    source: str = ""


def parse_conditions_csv(path: str | os.PathLike) -> ConditionsParse:
    p = Path(path)
    out = ConditionsParse(source=source_id("conditions", p) if p.is_file() else "")
    for line, row in csv_rows(p, label="known-conditions table", required=COLUMNS[:2], expected=COLUMNS):
        pid = (row.get("patient_id") or "").strip()
        cond = (row.get("condition") or "").strip().lower()
        since = (row.get("since") or "").strip()
        if not pid:
            out.rejected.append((line, "empty patient_id"))
        elif not cond:
            out.rejected.append((line, "empty condition"))
        else:
            try:
                day = dt.date.fromisoformat(since) if since else None
            except ValueError:
                out.rejected.append((line, "since is not a YYYY-MM-DD date"))
                continue
            out.rows.append({"patient_id": pid, "condition": cond, "since": day})
    return out


def load_known_conditions(store, path: str | os.PathLike) -> ConditionsParse:
    import pyarrow as pa

    parsed = parse_conditions_csv(path)
    if parsed.rows:
        kc = pa.table({
            "patient_id": pa.array([r["patient_id"] for r in parsed.rows], pa.string()),
            "condition": pa.array([r["condition"] for r in parsed.rows], pa.string()),
            "since": pa.array([r["since"] for r in parsed.rows], pa.date32()),
            "source": pa.array([parsed.source] * len(parsed.rows), pa.string()),
        })
        store.run("known_conditions_upsert", kc=kc)
    record_rejected(store, parsed.source, parsed.rejected)  # a fixed file clears its old rejections
    return parsed
