"""Sweep: bring the ``instances`` header index up to date with the archive.

Why incremental: a nightly run over millions of files can only afford to read
what is new. Files are matched by path, size and modification time; only new
or changed files have their headers read (in parallel processes, headers only),
and the index is written as Arrow batches, never row by row. Eligibility is then
re-evaluated for every readable file from the stored header keywords, so a
changed rule file takes effect without re-reading the archive, and statuses
are derived in SQL (``sql/resolve_status.sql``). The built-in study date check
(``ineligible:study_date``) is re-derived against each night's run date.

Conservation: every entry the walk lists has exactly one row after a sweep,
so files swept = scored + ineligible + duplicate + rejected + pending. That
includes entries the walk refuses (a link that leaves the archive, a FIFO, a
dangling link, see ``osteo_batch.archive.walk``): they are written with their
reason straight from the listing, never handed to the header reader, and the
next sweep rewrites them when the entry changes.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from osteo_batch.archive.walk import walk
from osteo_batch.errors import UserError
from osteo_batch.dicom.headers import HeaderResult, read_header
from osteo_batch.archive.eligibility import STUDY_DATE_REASON, Rules, load_rules, study_date_params
from osteo_batch.reasons import Reason
from osteo_batch.store import Store
from osteo_batch.timeouts import ItemTimeout, time_limit

#: Below this many files, a process pool costs more than it saves.
_PARALLEL_MIN = 256
#: Files per committed batch: a killed sweep loses at most this much work.
BATCH = 2000

INSTANCE_COLUMNS = (
    "sop_instance_uid", "sop_class_uid", "study_instance_uid", "series_instance_uid", "transfer_syntax_uid",
    "patient_id", "patient_name", "sex", "birth_date", "age", "study_date", "accession_number", "modality",
    "view", "body_part", "institution_name", "manufacturer", "photometric", "rows", "columns", "bits_stored",
    "header_issues",
)


class ArchiveEmptyError(UserError, RuntimeError):
    """The archive lists nothing while the index is full: refuse to wipe the index."""

    code = "archive_empty"


@dataclass
class SweepResult:
    files: int
    read: int
    vanished: int
    counts: dict[str, int] = field(default_factory=dict)  # by status
    unreadable_dirs: int = 0
    unreadable_dir_reasons: dict[str, int] = field(default_factory=dict)  # folders not listed, by why
    refused: int = 0  # entries written from the listing alone tonight (links out, FIFOs, ...)

    def conserved(self) -> bool:
        return sum(self.counts.values()) == self.files


#: Seconds one header may take to open and read. A header reads in about a millisecond; the limit is
#: for a file that blocks (a hung network mount), which would otherwise hold its worker all night.
HEADER_TIMEOUT_S = 60.0


def _read_one(path: str, roots: tuple[str, ...] | None, limit_s: float | None) -> HeaderResult:
    """One header, within ``limit_s`` (``read_timeout`` past it); the worker goes on with the next."""
    try:
        with time_limit(limit_s):
            return read_header(path, roots=roots)
    except ItemTimeout:
        return HeaderResult(path=path, reason=Reason.READ_TIMEOUT.value, detail=f"no header within {limit_s:g} s")


def _read_many(paths: list[str], roots: tuple[str, ...] | None = None,
               limit_s: float | None = HEADER_TIMEOUT_S) -> list[HeaderResult]:
    # the header reader refuses paths that resolve outside ``roots`` (a link swapped in after the walk)
    return [_read_one(p, roots, limit_s) for p in paths]


def iter_headers(paths: list[str], *, workers: int | None = None, batch: int = BATCH,
                 roots: tuple[str, ...] | None = None, header_timeout_s: float | None = HEADER_TIMEOUT_S):
    """Yield header results in batches of about ``batch``, in order.

    Parallel processes read when there are many files; each batch is handed
    back as soon as it is read, so the caller can commit progress as it goes.
    ``roots`` (``osteo_batch.archive.walk.real_roots``) go to every header read.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    if len(paths) < _PARALLEL_MIN or workers <= 1:
        for i in range(0, len(paths), batch):
            yield _read_many(paths[i : i + batch], roots, header_timeout_s)
        return
    from osteo_batch.workers import context, watch_parent

    chunk = max(16, min(256, len(paths) // (workers * 8)))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    out: list[HeaderResult] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context(), initializer=watch_parent,
                             initargs=(os.getpid(),)) as pool:
        for part in pool.map(functools.partial(_read_many, roots=roots, limit_s=header_timeout_s), chunks):
            out.extend(part)
            if len(out) >= batch:
                yield out
                out = []
    if out:
        yield out


def rows_table(results: list[HeaderResult], run_id: str, sizes: dict[str, tuple[int, int]] | None = None):
    """``instances`` rows (Arrow) for header results; ``sizes``: path -> (size, mtime_ns), (0, 0) when absent
    (a PACS instance, which does not change under its UID)."""
    import pyarrow as pa

    cols: dict[str, list] = {c: [] for c in ("path", "size", "mtime_ns", *INSTANCE_COLUMNS, "header", "read_reason", "read_detail")}
    for r in results:
        size, mtime = sizes[r.path] if sizes is not None else (0, 0)
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


def apply_rules(store: Store, rules: Rules, run_date: dt.date | None = None) -> int:
    """Evaluate eligibility from stored headers; returns how many files were evaluated.

    Only files not yet judged by these exact rules are evaluated (new or
    changed files, or every file after a rule change), so an unchanged night
    costs nothing here and a rule change needs no re-read of the archive.
    Files whose study date check answers otherwise on ``run_date`` (today on
    this machine when None) than when they were judged are evaluated again: a
    study date after the run date, before 1900 or unparseable makes a file
    ``ineligible:study_date`` whatever the rules say, until its date is fine.
    """
    import pyarrow as pa

    params = {"digest": rules.digest, **study_date_params(run_date or dt.date.today())}
    paths, reasons = [], []
    for row in store.rows("eligibility_inputs", params):
        paths.append(row["path"])
        if row["study_date_problem"]:
            reasons.append(STUDY_DATE_REASON)  # the age was computed from a date we cannot trust
            continue
        header = json.loads(row["header"]) if row["header"] else {}
        reasons.append(rules.reason(header, {"age": row["age"]}))
    elig = pa.table({"path": pa.array(paths, pa.string()), "eligibility_reason": pa.array(reasons, pa.string())})
    store.run("eligibility_update", {"digest": rules.digest}, elig=elig)
    return len(paths)


def study_date_files(store: Store, run_date: dt.date) -> list[dict]:
    """Files left out for an untrusted study date: accession_number, study_date, sop_instance_uid, problem.

    ``problem`` is a key of :data:`osteo_batch.archive.eligibility.STUDY_DATE_PROBLEMS`.
    No patient names: this list is for the PACS administrator.
    """
    return store.rows("study_dates", study_date_params(run_date))


STATUSES = ("scored", "ineligible", "duplicate", "rejected", "pending")


def by_status(rows: list[dict]) -> dict[str, int]:
    """Files per status from ``sql/status_counts.sql`` rows (status, reason, n)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + r["n"]
    return counts


def by_reason(rows: list[dict]) -> dict[str, int]:
    """Files per reason (per status for scored files, which have none) from the same rows."""
    return {(r["reason"] or r["status"]): r["n"] for r in rows}


def resolve_status(store: Store, model_id: str | None) -> dict[str, int]:
    store.run("resolve_status", {"model_id": model_id})
    return by_status(store.rows("status_counts"))


def sweep(
    store: Store,
    archive: str | os.PathLike,
    *,
    run_id: str,
    rules: Rules | None = None,
    model_id: str | None = None,
    workers: int | None = None,
    progress=None,
    batch: int = BATCH,
    run_date: dt.date | None = None,
    allowed_roots: "tuple[str, ...] | list[str]" = (),
    header_timeout_s: float | None = HEADER_TIMEOUT_S,
) -> SweepResult:
    """Index ``archive`` into ``store``; statuses reflect scores from ``model_id``.

    ``run_date`` is the day study dates are judged against (today on this
    machine when None; the pipeline passes today in the archive's time zone).
    ``allowed_roots``: folders outside ``archive`` that links may lead into
    (archives mounted through links); links to anywhere else are refused.
    """
    listing = walk(archive, tuple(allowed_roots))
    tbl = listing.table()
    before = store.scalar("count_instances")
    if before and not len(listing):
        raise ArchiveEmptyError(
            f"archive {listing.root} lists no files but the index holds {before}; is it mounted? "
            "Nothing was changed. To start an empty index on purpose, use a new --workdir."
        )
    store.run("sweep_remove_vanished", {"unlisted": listing.unreadable}, listing=tbl)
    kept = store.scalar("count_instances")
    changed, refused = [], []
    for r in store.rows("sweep_changed", listing=tbl):
        if r["walk_reason"] is None:
            changed.append(r["path"])
        else:  # refused by the walk: the row comes from the listing, nothing is opened
            refused.append(HeaderResult(path=r["path"], reason=r["walk_reason"], detail=r["walk_detail"]))
    sizes = dict(zip(listing.paths, zip(listing.sizes, listing.mtimes_ns)))
    if refused:
        sizes.update(zip(listing.refused_paths, zip(listing.refused_sizes, listing.refused_mtimes_ns)))
        for i in range(0, len(refused), batch):
            with store.transaction():
                store.run("instances_upsert", new_rows=rows_table(refused[i : i + batch], run_id, sizes))
    n_read = 0
    for part in iter_headers(changed, workers=workers, batch=batch, roots=listing.roots,
                             header_timeout_s=header_timeout_s):
        with store.transaction():  # all of a batch or none of it
            store.run("instances_upsert", new_rows=rows_table(part, run_id, sizes))
        n_read += len(part)
        if progress:
            progress(n_read, len(changed))
    apply_rules(store, rules or load_rules(), run_date)
    counts = resolve_status(store, model_id)
    return SweepResult(
        files=len(listing), read=n_read, vanished=before - kept, counts=counts,
        unreadable_dirs=listing.unreadable_dirs, unreadable_dir_reasons=listing.unreadable_dir_reasons,
        refused=len(refused),
    )
