"""The DXA table users bring: parse it strictly, load it idempotently, keep what failed.

Format (one header line, comma-separated, UTF-8)::

    patient_id,exam_date,t_lumbar_spine,t_femoral_neck,t_total_hip
    SYN00012,2025-03-14,-2.7,-2.1,

Dates are YYYY-MM-DD; any T-score may be empty, but a row needs at least one.
A row that breaks these rules is recorded in ``dxa_rejected`` with its line
number and reason (never its content), and loading goes on.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from osteo_batch.store import Store

COLUMNS = ("patient_id", "exam_date", "t_lumbar_spine", "t_femoral_neck", "t_total_hip")
T_SITES = COLUMNS[2:]


class DxaFileError(ValueError):
    """The file as a whole cannot be used (missing, wrong columns)."""


@dataclass
class DxaParse:
    rows: list[dict] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    source: str = ""


def _t(value: str, site: str) -> float | None:
    v = value.strip()
    if not v:
        return None
    x = float(v)  # ValueError handled by caller
    if not -8.0 <= x <= 8.0:
        raise ValueError(f"{site} {x} outside -8..8")
    return x


def parse_dxa_csv(path: str | os.PathLike) -> DxaParse:
    p = Path(path)
    if not p.is_file():
        raise DxaFileError(f"DXA table {p} not found")
    out = DxaParse(source="dxa-" + hashlib.sha256(os.fsencode(p.resolve())).hexdigest()[:12])
    try:
        _parse_into(p, out)
    except UnicodeDecodeError:
        raise DxaFileError(f"DXA table {p.name}: not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise DxaFileError(f"DXA table {p.name}: not a readable CSV ({e})") from None
    return out


def _parse_into(p: Path, out: DxaParse) -> None:
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DxaFileError(
                f"DXA table {p.name}: missing column(s) {', '.join(missing)}; expected header: {','.join(COLUMNS)}"
            )
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            try:
                pid = (row.get("patient_id") or "").strip()
                if not pid:
                    raise ValueError("empty patient_id")
                date = dt.date.fromisoformat((row.get("exam_date") or "").strip())
                ts = {s: _t(row.get(s) or "", s) for s in T_SITES}
            except ValueError as e:
                msg = str(e)
                reason = "bad_date" if "isoformat" in msg or "date" in msg else "bad_value"
                if "patient_id" in msg:
                    reason = "missing_patient_id"
                out.rejected.append((line, reason))
                continue
            if all(v is None for v in ts.values()):
                out.rejected.append((line, "no_t_score"))
                continue
            out.rows.append({"patient_id": pid, "exam_date": date, **ts})


def load_dxa(store: Store, path: str | os.PathLike) -> DxaParse:
    """Parse ``path`` and load it into the store; returns what was loaded and rejected."""
    import pyarrow as pa

    parsed = parse_dxa_csv(path)
    now = dt.datetime.now()
    if parsed.rows:
        tbl = pa.Table.from_pylist(
            [{**r, "source": parsed.source, "loaded_at": now} for r in parsed.rows],
            schema=pa.schema([
                ("patient_id", pa.string()), ("exam_date", pa.date32()),
                *[(s, pa.float64()) for s in T_SITES],
                ("source", pa.string()), ("loaded_at", pa.timestamp("us")),
            ]),
        )
        # keep the last row for a repeated (patient_id, exam_date) in one file
        store.run("dxa_upsert", dxa_rows=_last_per_key(tbl))
    # always replace this file's record, so a fixed file clears yesterday's rejections
    rej = pa.table({
        "source": pa.array([parsed.source] * len(parsed.rejected), pa.string()),
        "line": pa.array([ln for ln, _ in parsed.rejected], pa.int32()),
        "reason": pa.array([r for _, r in parsed.rejected], pa.string()),
        "loaded_at": pa.array([now] * len(parsed.rejected), pa.timestamp("us")),
    })
    store.run("dxa_rejected_insert", {"source": parsed.source}, rej=rej)
    return parsed


def _last_per_key(tbl):
    seen: dict[tuple, int] = {}
    for i, (pid, d) in enumerate(zip(tbl["patient_id"].to_pylist(), tbl["exam_date"].to_pylist())):
        seen[(pid, d)] = i
    return tbl.take(sorted(seen.values()))
