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
import os
from dataclasses import dataclass, field
from pathlib import Path

from osteo_batch.errors import UserError
from osteo_batch.store import Store
from osteo_batch.text import path_hash

COLUMNS = ("patient_id", "exam_date", "t_lumbar_spine", "t_femoral_neck", "t_total_hip")
T_SITES = COLUMNS[2:]
#: A T-score outside this range is a typing error, not a measurement.
T_RANGE = (-8.0, 8.0)


class DxaFileError(UserError, ValueError):
    """The file as a whole cannot be used (missing, wrong columns, not UTF-8, not CSV).

    Each raise names its own ``code`` (``table_not_found``, ``table_columns_missing``,
    ``table_not_utf8``, ``table_not_csv``); the message names the table and the fix.
    """

    code = "table_unusable"


class DxaRowError(UserError, ValueError):
    """One row cannot be loaded: it is recorded in ``dxa_rejected`` under its class's ``code``, and loading goes on.

    Why a class per problem: the stored reason comes from the type, never from
    the wording of a message (a T-score typed as ``date`` once read as a bad date).
    The codes are stored, so they never change. Messages hold no cell content.
    """

    code = "bad_value"


class MissingPatientId(DxaRowError):
    code = "missing_patient_id"


class BadExamDate(DxaRowError):
    code = "bad_date"


class BadTScore(DxaRowError):
    code = "bad_value"


class NoTScore(DxaRowError):
    code = "no_t_score"


#: Every reason a row can be rejected for, as stored in ``dxa_rejected.reason``.
ROW_REJECTIONS = tuple(dict.fromkeys(c.code for c in (MissingPatientId, BadExamDate, BadTScore, NoTScore)))


@dataclass
class DxaParse:
    rows: list[dict] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    source: str = ""


def _t(value: str, site: str) -> float | None:
    """A T-score cell: empty is None; anything but a number in :data:`T_RANGE` is a :class:`BadTScore`."""
    v = value.strip()
    if not v:
        return None
    try:
        x = float(v)
    except ValueError:
        raise BadTScore(f"{site} is not a number") from None
    if not T_RANGE[0] <= x <= T_RANGE[1]:  # NaN fails too
        raise BadTScore(f"{site} outside {T_RANGE[0]:g}..{T_RANGE[1]:g}")
    return x


def parse_dxa_row(row: dict) -> dict:
    """One DXA row as loaded (patient ID, exam date, the three T-scores), or the :class:`DxaRowError` it breaks.

    Checked in this order: patient ID, exam date, each T-score, at least one T-score.
    """
    pid = (row.get("patient_id") or "").strip()
    if not pid:
        raise MissingPatientId("empty patient_id")
    try:
        date = dt.date.fromisoformat((row.get("exam_date") or "").strip())
    except ValueError:
        raise BadExamDate("exam_date is not a YYYY-MM-DD date") from None
    ts = {s: _t(row.get(s) or "", s) for s in T_SITES}
    if all(v is None for v in ts.values()):
        raise NoTScore("no T-score at any site")
    return {"patient_id": pid, "exam_date": date, **ts}


def source_id(prefix: str, path: Path) -> str:
    """A name for a loaded file that carries no part of its path: ``prefix-<hash>``."""
    return f"{prefix}-" + path_hash(path.resolve())


def csv_rows(path: Path, *, label: str, required: tuple[str, ...], expected: tuple[str, ...]):
    """Yield ``(line, row)`` for each data row of a UTF-8 CSV (header names stripped).

    A problem with the file as a whole (missing, not UTF-8, not CSV, a
    required column absent) is a :class:`DxaFileError` that names the
    ``label`` ("DXA table") and the fix; problems with one row are the caller's.
    """
    if not path.is_file():
        raise DxaFileError(f"{label} {path} not found", code="table_not_found",
                           fix="give the path of an existing CSV file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DxaFileError(f"{label} {path.name}: missing column(s) {', '.join(missing)}; "
                                   f"expected header: {','.join(expected)}", code="table_columns_missing")
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError:
        raise DxaFileError(f"{label} {path.name}: not UTF-8 text; save it as UTF-8 CSV",
                           code="table_not_utf8") from None
    except csv.Error as e:
        raise DxaFileError(f"{label} {path.name}: not a readable CSV ({e})", code="table_not_csv",
                           fix="save it as comma-separated values with one header line") from None


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
            out.rows.append(parse_dxa_row(row))
        except DxaRowError as e:
            out.rejected.append((line, e.code))
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
