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


def source_id(prefix: str, path: Path) -> str:
    """A name for a loaded file that carries no part of its path: ``prefix-<hash>``."""
    return f"{prefix}-" + hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:12]


def csv_rows(path: Path, *, label: str, required: tuple[str, ...], expected: tuple[str, ...]):
    """Yield ``(line, row)`` for each data row of a UTF-8 CSV (header names stripped).

    A problem with the file as a whole (missing, not UTF-8, not CSV, a
    required column absent) is a :class:`DxaFileError` that names the
    ``label`` ("DXA table") and the fix; problems with one row are the caller's.
    """
    if not path.is_file():
        raise DxaFileError(f"{label} {path} not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DxaFileError(f"{label} {path.name}: missing column(s) {', '.join(missing)}; "
                                   f"expected header: {','.join(expected)}")
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError:
        raise DxaFileError(f"{label} {path.name}: not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise DxaFileError(f"{label} {path.name}: not a readable CSV ({e})") from None


def record_rejected(store: Store, source: str, rejected: list[tuple[int, str]]) -> None:
    """Replace ``source``'s rejected lines in ``dxa_rejected`` (a fixed file clears yesterday's)."""
    import pyarrow as pa

    now = dt.datetime.now()
    rej = pa.table({
        "source": pa.array([source] * len(rejected), pa.string()),
        "line": pa.array([ln for ln, _ in rejected], pa.int32()),
        "reason": pa.array([r for _, r in rejected], pa.string()),
        "loaded_at": pa.array([now] * len(rejected), pa.timestamp("us")),
    })
    store.run("dxa_rejected_insert", {"source": source}, rej=rej)


def parse_dxa_csv(path: str | os.PathLike) -> DxaParse:
    p = Path(path)
    out = DxaParse(source=source_id("dxa", p) if p.is_file() else "")
    for line, row in csv_rows(p, label="DXA table", required=COLUMNS, expected=COLUMNS):
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
    return out


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
    record_rejected(store, parsed.source, parsed.rejected)
    return parsed


def _last_per_key(tbl):
    seen: dict[tuple, int] = {}
    for i, (pid, d) in enumerate(zip(tbl["patient_id"].to_pylist(), tbl["exam_date"].to_pylist())):
        seen[(pid, d)] = i
    return tbl.take(sorted(seen.values()))
