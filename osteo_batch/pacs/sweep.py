"""Sweep a PACS: bring the ``instances`` index up to date with what the PACS lists, by study date.

Why the same index: every instance the PACS lists gets exactly one row in
``instances``, judged by the same eligibility rules and with a status and
reason from the same vocabulary as a file in a folder, so scoring, heat maps
and the worklist do not know where an image came from. Its ``path`` is the
instance's URI (``<PACS URL>/studies/<uid>/series/<uid>/instances/<uid>``:
DICOM UIDs, no patient data); ``size`` and ``mtime_ns`` are 0 (a DICOM
instance does not change under its UID).

Why incremental by date (:mod:`osteo_batch.pacs.query`): a PACS holds millions
of instances and lists them only by query. The first night asks from
``--since``; each later night from where the last complete query ended (kept
in ``pacs_state``) less an overlap, or from a look-back for late arrivals,
whichever is earlier. Windows are committed one by one, oldest first; a
window that fails (the PACS stops answering) ends tonight's queries and the
next night resumes there. Rows outside tonight's windows are never marked
vanished: a windowed query lists only part of the archive.

Why metadata per study: a study listed again with the instance count it had
is not asked for again (``pacs_studies``); for any other, WADO-RS study
metadata (one request) or C-FIND at IMAGE level returns what the rules need.
Pixels are retrieved later, only for eligible instances without a score from
the current model (:mod:`osteo_batch.pacs.spool`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from osteo_batch.archive.eligibility import Rules, load_rules
from osteo_batch.archive.sweep import SweepResult, apply_rules, resolve_status, rows_table
from osteo_batch.dicom.headers import judge_metadata
from osteo_batch.pacs.client import PacsClient, PacsError
from osteo_batch.pacs.config import PacsConfigError, PacsSettings
from osteo_batch.pacs.query import QueryTruncatedError, date_windows, filters_from_rules, find_window, tonight_range
from osteo_batch.store import Store

_URI = re.compile(r"/studies/([^/]+)/series/([^/]+)/instances/([^/]+)$")


def instance_uri(source: str, study: str | None, series: str | None, sop: str | None) -> str:
    """The URI that stands for one PACS instance in ``instances.path`` (WADO-RS form; UIDs only)."""
    return f"{source}/studies/{study or '-'}/series/{series or '-'}/instances/{sop or '-'}"


def is_uri(path: str) -> bool:
    """Whether an ``instances.path`` is a PACS instance's URI rather than a file's path."""
    return path.startswith(("http://", "https://", "dimse://"))


def uri_uids(uri: str) -> tuple[str, str, str]:
    """(study, series, SOP instance UID) of an :func:`instance_uri`."""
    m = _URI.search(uri)
    if not m:
        raise ValueError("not an instance URI")
    return m.group(1), m.group(2), m.group(3)


def source_prefix(source: str) -> str:
    return f"{source}/studies/"


@dataclass
class PacsSweep:
    """What a PACS sweep did tonight, beside the folder sweep's counts: counts and dates only."""

    source: str
    date_from: str | None = None
    date_to: str | None = None
    windows: int = 0
    windows_done: int = 0
    studies_listed: int = 0
    studies_fetched: int = 0
    complete_through: str | None = None
    stopped: str | None = None  # why the queries ended early (a one-line PACS error, or outside the hours)
    filters: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _judge(ds, source: str):
    uri = instance_uri(source, ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID"))
    return judge_metadata(ds, uri, has_pixel_data=getattr(ds, "osteo_has_pixel_data", None))


def sweep_pacs(
    store: Store,
    client: PacsClient,
    pacs: PacsSettings,
    *,
    run_id: str,
    rules: Rules | None = None,
    model_id: str | None = None,
    run_date: dt.date | None = None,
    progress: Callable[[int, int], None] | None = None,
    now: Callable[[], dt.datetime] = dt.datetime.now,
) -> tuple[SweepResult, PacsSweep]:
    """Index what ``client``'s PACS lists for tonight's study dates into ``store``.

    Raises :class:`PacsError` (one line) when the PACS fails before any window
    is complete, and :class:`PacsConfigError` when there is no ``--since`` on
    a first night. Otherwise returns what was done, with ``stopped`` set when
    the queries ended early; what was committed stays, and the next night resumes.
    """
    rules = rules or load_rules()
    run_date = run_date or dt.date.today()
    source, prefix = pacs.display, source_prefix(pacs.display)
    filt = filters_from_rules(rules)
    filters = json.dumps({"modalities": list(filt.modalities or []), "sex": filt.sex}, sort_keys=True)
    state = store.rows("pacs_state_get", {"source": source})
    through, queried_from = (state[0]["complete_through"], state[0]["queried_from"]) if state else (None, None)
    if state and state[0]["filters"] != filters:
        # the rules now let the PACS send other studies (a modality added, say): what was asked for before
        # under the old filters is asked again from the start, as on a first night
        through = None
    rng = tonight_range(run_date, through, pacs.since or queried_from, pacs.overlap_days, pacs.lookback_days,
                        queried_from)
    if rng is None:
        raise PacsConfigError(f"{source} has not been swept into this work folder before; give the backlog's first "
                              "study date with --since YYYY-MM-DD (or [pacs] since)")
    out = PacsSweep(source, rng[0].isoformat(), rng[1].isoformat(),
                    filters={"modalities": list(filt.modalities or []), "sex": filt.sex})
    try:
        n_read, vanished = _sweep_windows(store, client, pacs, out, rng, filt, run_id, now, source, prefix, through,
                                          queried_from, progress, filters)
    finally:  # whatever stopped the queries, every row committed so far gets its status from the same rules
        apply_rules(store, rules, run_date)
        counts = resolve_status(store, model_id)
    total = store.scalar("count_instances")
    return SweepResult(files=total, read=n_read, vanished=vanished, counts=counts), out


def _sweep_windows(store: Store, client: PacsClient, pacs: PacsSettings, out: PacsSweep, rng, filt, run_id: str,
                   now, source: str, prefix: str, through, queried_from, progress, filters: str) -> tuple[int, int]:
    """Tonight's windows, oldest first, each committed alone; returns (instances judged, rows dropped)."""
    import pyarrow as pa

    vanished = _refresh_gone(store, client, source, prefix, run_id)
    store.run("pacs_retry", {"prefix": prefix})
    windows = date_windows(rng[0], rng[1], pacs.window_days)
    out.windows = len(windows)
    n_read = 0
    for a, b in windows:
        if not pacs.may_query(now()):
            out.stopped = f"outside the PACS's query hours ({pacs.hours})"
            break
        try:
            hits = find_window(client, a, b, filt, pacs.query_limit)
            listed = pa.table({
                "study_instance_uid": pa.array([h.study_instance_uid for h in hits], pa.string()),
                "study_date": pa.array([h.study_date for h in hits], pa.date32()),
                "n_instances": pa.array([h.n_instances for h in hits], pa.int32()),
            })
            known = {r["study_instance_uid"] for r in store.rows("pacs_studies_known",
                                                                 {"source": source, "prefix": prefix}, hits=listed)}
            todo = [h.study_instance_uid for h in hits if h.study_instance_uid not in known]
            results = []
            for uid in todo:
                results.extend(_judge(ds, source) for ds in client.study_instances(uid))
        except (PacsError, QueryTruncatedError) as e:
            if out.windows_done == 0 and isinstance(e, PacsError):
                raise
            out.stopped = e.line()
            break
        rows = rows_table(_unique(results), run_id)
        with store.transaction():  # one window: all of it or none of it
            dropped = _replace_rows(store, prefix, rows, "pacs_window_apply",
                                    {"source": source, "prefix": prefix, "date_from": a, "date_to": b,
                                     "run_id": run_id},
                                    listed=listed, fetched=pa.table({"study_instance_uid": pa.array(todo, pa.string())}))
            # the earliest day asked for moves back (an earlier --since) only once tonight's windows from it have
            # reached the old one: a backfill that stops half-way is asked again from its start the next night
            if queried_from is None:
                first = rng[0]
            else:
                first = min(rng[0], queried_from) if b >= queried_from else queried_from
            if through is None or b > through or first != queried_from:
                through, queried_from = max(b, through or b), first
                store.run("pacs_state_set", {"source": source, "through": through, "from": first,
                                             "filters": filters, "run_id": run_id})
            vanished += dropped
        out.windows_done += 1
        out.studies_listed += len(hits)
        out.studies_fetched += len(todo)
        n_read += len(results)
        if progress:
            progress(out.windows_done, out.windows)
    out.complete_through = through.isoformat() if through else None
    return n_read, vanished


def _refresh_gone(store: Store, client: PacsClient, source: str, prefix: str, run_id: str) -> int:
    """Ask again, by UID, for the studies of instances that were gone when retrieved; returns rows dropped.

    A windowed query may never reach such a study again (its date is outside
    the look-back), so the study itself is asked for: an instance it still
    lists is retried tonight, one it no longer lists loses its row.
    """
    import pyarrow as pa

    uids = [r["study_instance_uid"] for r in store.rows("pacs_gone_studies", {"prefix": prefix})]
    if not uids:
        return 0
    results = []
    for uid in uids:
        results.extend(_judge(ds, source) for ds in client.study_instances(uid))
    rows = rows_table(_unique(results), run_id)
    with store.transaction():
        return _replace_rows(store, prefix, rows, "pacs_study_refresh", {"source": source, "prefix": prefix},
                             fetched=pa.table({"study_instance_uid": pa.array(uids, pa.string())}))


def _replace_rows(store: Store, prefix: str, rows, apply_sql: str, params: dict, **tables) -> int:
    """Run ``apply_sql`` (drops what the PACS no longer lists), then upsert ``rows``; returns the rows dropped.

    Call inside a transaction. Dropped = rows held before + paths new tonight - rows held after.
    """
    held = store.scalar("count_source_instances", {"prefix": prefix})
    new = store.scalar("count_new_paths", new_rows=rows)
    store.run(apply_sql, params, new_rows=rows, **tables)
    store.run("instances_upsert", new_rows=rows)
    return held + new - store.scalar("count_source_instances", {"prefix": prefix})


def _unique(results: list) -> list:
    """One result per URI (a PACS may list an instance twice across modality queries of one study)."""
    seen: dict[str, Any] = {}
    for r in results:
        seen.setdefault(r.path, r)
    return list(seen.values())
