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

import csv
import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from osteo_batch.dxa import DxaFileError

COLUMNS = ("patient_id", "condition", "since")


@dataclass
class ConditionsParse:
    rows: list[dict] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    source: str = ""


def parse_conditions_csv(path: str | os.PathLike) -> ConditionsParse:
    p = Path(path)
    if not p.is_file():
        raise DxaFileError(f"known-conditions table {p} not found")
    out = ConditionsParse(source="conditions-" + hashlib.sha256(os.fsencode(p.resolve())).hexdigest()[:12])
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS[:2] if c not in header]
            if missing:
                raise DxaFileError(f"known-conditions table {p.name}: missing column(s) {', '.join(missing)}; "
                                   f"expected header: {','.join(COLUMNS)}")
            reader.fieldnames = header
            for row in reader:
                pid = (row.get("patient_id") or "").strip()
                cond = (row.get("condition") or "").strip().lower()
                since = (row.get("since") or "").strip()
                if not pid:
                    out.rejected.append((reader.line_num, "empty patient_id"))
                elif not cond:
                    out.rejected.append((reader.line_num, "empty condition"))
                else:
                    try:
                        day = dt.date.fromisoformat(since) if since else None
                    except ValueError:
                        out.rejected.append((reader.line_num, "since is not a YYYY-MM-DD date"))
                        continue
                    out.rows.append({"patient_id": pid, "condition": cond, "since": day})
    except UnicodeDecodeError:
        raise DxaFileError(f"known-conditions table {p.name}: not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise DxaFileError(f"known-conditions table {p.name}: not a readable CSV ({e})") from None
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
    if parsed.rejected:
        now = dt.datetime.now()
        rej = pa.table({"source": pa.array([parsed.source] * len(parsed.rejected), pa.string()),
                        "line": pa.array([n for n, _ in parsed.rejected], pa.int32()),
                        "reason": pa.array([r for _, r in parsed.rejected], pa.string()),
                        "loaded_at": pa.array([now] * len(parsed.rejected), pa.timestamp("us"))})
        store.run("dxa_rejected_insert", {"source": parsed.source}, rej=rej)
    return parsed
