"""Sweep: bring the ``instances`` header index up to date with the archive.

Why incremental: a nightly run over millions of files can only afford to read
what is new. Files are matched by path, size and modification time; only new
or changed files have their headers read (in parallel processes, headers only),
and the index is written as Arrow batches, never row by row. Eligibility is then
re-evaluated for every readable file from the stored header keywords, so a
changed rule file takes effect without re-reading the archive, and statuses
are derived in SQL (``sql/resolve_status.sql``).

Conservation: every regular file under the archive has exactly one row after a
sweep, so files swept = scored + ineligible + duplicate + rejected + pending.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from osteo_batch.archive import walk
from osteo_batch.dicom.headers import HeaderResult, read_header
from osteo_batch.eligibility import Rules, load_rules
from osteo_batch.store import Store

#: Below this many files, a process pool costs more than it saves.
_PARALLEL_MIN = 256

INSTANCE_COLUMNS = (
    "sop_instance_uid", "sop_class_uid", "study_instance_uid", "series_instance_uid", "transfer_syntax_uid",
    "patient_id", "patient_name", "sex", "birth_date", "age", "study_date", "accession_number", "modality",
    "view", "body_part", "institution_name", "manufacturer", "photometric", "rows", "columns", "bits_stored",
)


@dataclass
class SweepResult:
    files: int
    read: int
    vanished: int
    counts: dict[str, int] = field(default_factory=dict)  # by status
    unreadable_dirs: int = 0

    def conserved(self) -> bool:
        return sum(self.counts.values()) == self.files


def _read_many(paths: list[str]) -> list[HeaderResult]:
    return [read_header(p) for p in paths]


def read_headers(paths: list[str], *, workers: int | None = None) -> list[HeaderResult]:
    """Read headers of ``paths``, in parallel processes when there are many."""
    workers = workers or min(8, os.cpu_count() or 1)
    if len(paths) < _PARALLEL_MIN or workers <= 1:
        return _read_many(paths)
    chunk = max(16, len(paths) // (workers * 8))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    from osteo_batch.workers import context

    with ProcessPoolExecutor(max_workers=workers, mp_context=context()) as pool:
        return [r for part in pool.map(_read_many, chunks) for r in part]


def _rows_table(results: list[HeaderResult], sizes: dict[str, tuple[int, int]], run_id: str):
    import pyarrow as pa

    cols: dict[str, list] = {c: [] for c in ("path", "size", "mtime_ns", *INSTANCE_COLUMNS, "header", "read_reason", "read_detail")}
    for r in results:
        size, mtime = sizes[r.path]
        cols["path"].append(r.path)
        cols["size"].append(size)
        cols["mtime_ns"].append(mtime)
        for c in INSTANCE_COLUMNS:
            cols[c].append(r.fields.get(c))
        cols["header"].append(json.dumps(r.header, ensure_ascii=False) if r.header else None)
        cols["read_reason"].append(r.reason)
        cols["read_detail"].append(r.detail)
    t = pa.table(cols)
    n = len(results)
    return t.append_column("status", pa.array(["pending"] * n)).append_column(
        "reason", pa.array(["awaiting_score"] * n)
    ).append_column("swept_run_id", pa.array([run_id] * n))


def apply_rules(store: Store, rules: Rules) -> None:
    """Re-evaluate eligibility of every readable file from its stored header."""
    import pyarrow as pa

    paths, reasons = [], []
    for row in store.rows("eligibility_inputs"):
        header = json.loads(row["header"]) if row["header"] else {}
        paths.append(row["path"])
        reasons.append(rules.reason(header, {"age": row["age"]}))
    elig = pa.table({"path": pa.array(paths, pa.string()), "eligibility_reason": pa.array(reasons, pa.string())})
    store.run("eligibility_update", elig=elig)


def resolve_status(store: Store, model_id: str | None) -> dict[str, int]:
    store.run("resolve_status", {"model_id": model_id})
    counts: dict[str, int] = {}
    for r in store.rows("status_counts"):
        counts[r["status"]] = counts.get(r["status"], 0) + r["n"]
    return counts


def sweep(
    store: Store,
    archive: str | os.PathLike,
    *,
    run_id: str,
    rules: Rules | None = None,
    model_id: str | None = None,
    workers: int | None = None,
) -> SweepResult:
    """Index ``archive`` into ``store``; statuses reflect scores from ``model_id``."""
    import pyarrow as pa

    listing = walk(archive)
    tbl = pa.table(
        {
            "path": pa.array([f.path for f in listing.files], pa.string()),
            "size": pa.array([f.size for f in listing.files], pa.int64()),
            "mtime_ns": pa.array([f.mtime_ns for f in listing.files], pa.int64()),
        }
    )
    before = store.scalar("count_instances")
    store.run("sweep_remove_vanished", listing=tbl)
    kept = store.scalar("count_instances")
    changed = [r["path"] for r in store.rows("sweep_changed", listing=tbl)]
    sizes = {f.path: (f.size, f.mtime_ns) for f in listing.files}
    results = read_headers(changed, workers=workers)
    if results:
        store.run("instances_upsert", new_rows=_rows_table(results, sizes, run_id))
    apply_rules(store, rules or load_rules())
    counts = resolve_status(store, model_id)
    return SweepResult(
        files=len(listing.files), read=len(results), vanished=before - kept, counts=counts,
        unreadable_dirs=listing.unreadable_dirs,
    )
