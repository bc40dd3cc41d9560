"""Which studies to ask the PACS for tonight: date windows, filters from the rules, and splits at the result limit.

Why windows: a PACS answers a query with at most its result limit (Orthanc's
``LimitFindResults``, a vendor's 500 or 1000) and often says nothing when it
cuts the list short. Asking for a few days at a time, and splitting any
window whose answer is as long as the limit we asked for (or that the PACS
says it cut at its own limit, ``[pacs] result_limit``: Orthanc's QIDO-RS
cuts without saying so), means no study is
dropped silently: a one-day window that is still full is split by study
time, down to a minute; a minute still full is a :class:`QueryTruncatedError`
(raise ``[pacs] query_limit`` or the PACS's own limit). A PACS decides
whether a study without a StudyTime matches a time range; on a day that needs
splitting by time, such studies may be listed only when the day is not split.

Why filters from the rules: the PACS should only send what can be eligible.
When every rule asks for Modality in a set, the query asks for those
modalities (one query each, as ModalitiesInStudy takes one value); when every
rule asks for one PatientSex, so does the query. Everything else is decided
locally, on the instances' metadata, by the same rules as for a folder.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Iterator

from osteo_batch.archive.eligibility import Rules
from osteo_batch.errors import UserError
from osteo_batch.pacs.client import PacsClient, PacsLimitError, StudyHit, StudyQuery


class QueryTruncatedError(UserError):
    """A window the size of one minute still returns the query limit: the PACS would drop studies silently."""

    code = "pacs_query_truncated"
    fix = "raise [pacs] query_limit (it must not exceed the PACS's own result limit) or the PACS's limit"


@dataclass(frozen=True)
class Filters:
    """What the PACS is asked to filter on, derived from the rules (None: no filter)."""

    modalities: tuple[str, ...] | None = None
    sex: str | None = None


def _values(cond) -> set[str] | None:
    if cond.one_of is not None:
        return {str(v) for v in cond.one_of}
    if cond.equals is not None:
        return {str(cond.equals)}
    return None


def filters_from_rules(rules: Rules) -> Filters:
    """The filters every rule agrees on: a PACS query may only leave out what no rule would take.

    A rule without a Modality ``in``/``equals`` condition takes any modality, so
    then no modality filter is sent; likewise for PatientSex (a single value in
    every rule, and the same one).
    """
    mods: set[str] | None = set()
    sexes: set[str] | None = set()
    for rule in rules.rules:
        m = s = None
        for c in rule.conditions:
            if c.derived:
                continue
            if c.source == "Modality" and _values(c) is not None:
                m = _values(c) if m is None else (m & _values(c))
            if c.source == "PatientSex" and _values(c) is not None:
                s = _values(c) if s is None else (s & _values(c))
        mods = None if mods is None or m is None else mods | m
        sexes = None if sexes is None or s is None else sexes | s
    if not rules.rules:
        return Filters()
    return Filters(tuple(sorted(mods)) if mods else None,
                   next(iter(sexes)) if sexes is not None and len(sexes) == 1 else None)


def date_windows(start: dt.date, end: dt.date, days: int) -> list[tuple[dt.date, dt.date]]:
    """``[start, end]`` cut into windows of ``days`` days (inclusive ends), oldest first."""
    out = []
    d = start
    while d <= end:
        e = min(end, d + dt.timedelta(days=days - 1))
        out.append((d, e))
        d = e + dt.timedelta(days=1)
    return out


def _full(hits: list, limit: int) -> bool:
    return len(hits) >= limit


def _split_times(a: dt.time, b: dt.time) -> tuple[tuple[dt.time, dt.time], tuple[dt.time, dt.time]] | None:
    """Halve [a, b] (inclusive, minute resolution); None when it is one minute."""
    ma, mb = a.hour * 60 + a.minute, b.hour * 60 + b.minute
    if mb <= ma:
        return None
    mid = (ma + mb) // 2

    def t(m: int, end: bool = False) -> dt.time:
        return dt.time(m // 60, m % 60, 59 if end else 0)

    return (t(ma), t(mid, True)), (t(mid + 1), t(mb, True))


def find_window(client: PacsClient, start: dt.date, end: dt.date, filters: Filters, limit: int) -> list[StudyHit]:
    """Every study in ``[start, end]`` that passes ``filters``, splitting wherever an answer is full."""
    found: dict[str, StudyHit] = {}
    for modality in filters.modalities or (None,):
        q = StudyQuery(start, end, modality=modality, sex=filters.sex, limit=limit)
        for h in _find(client, q):
            found.setdefault(h.study_instance_uid, h)
    return list(found.values())


def _find(client: PacsClient, q: StudyQuery) -> Iterator[StudyHit]:
    try:
        hits = client.find_studies(q)
    except PacsLimitError as e:  # the PACS cut the answer at its own limit, below ours: as good as full
        hits = [None] * max(e.returned, q.limit)
    if not _full(hits, q.limit):
        yield from hits
        return
    if q.date_from < q.date_to:
        mid = q.date_from + (q.date_to - q.date_from) // 2
        yield from _find(client, replace(q, date_to=mid))
        yield from _find(client, replace(q, date_from=mid + dt.timedelta(days=1)))
        return
    halves = _split_times(q.time_from or dt.time(0, 0), q.time_to or dt.time(23, 59, 59))
    if halves is None:
        raise QueryTruncatedError(
            f"the PACS returned {q.limit} or more studies (the query limit) for one minute of one day; "
            "some would be missed")
    for a, b in halves:
        yield from _find(client, replace(q, time_from=a, time_to=b))


def tonight_range(run_date: dt.date, complete_through: dt.date | None, since: dt.date | None,
                  overlap_days: int, lookback_days: int,
                  queried_from: dt.date | None = None) -> tuple[dt.date, dt.date] | None:
    """The study dates to ask for tonight, or None when there is no backlog start yet.

    First night: from ``since``. Later nights: from ``overlap_days`` before where the
    last complete query ended, or ``lookback_days`` before today, whichever is
    earlier (late arrivals: a prior migrated tonight may carry an old study date,
    which only a look-back, or a ``--since`` given again, catches). A ``since``
    before the earliest day ever asked for (``queried_from``) reaches back to it:
    a longer backlog; one after it changes nothing, so a ``--since`` left in a
    nightly command does not re-ask the whole backlog every night.
    """
    if complete_through is None:
        return (since, run_date) if since is not None else None
    start = min(complete_through - dt.timedelta(days=overlap_days), run_date - dt.timedelta(days=lookback_days))
    if since is not None and (queried_from is None or since < queried_from):
        start = min(start, since)
    return start, run_date
