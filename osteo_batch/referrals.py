"""Referral tracking: what coordinators did, kept as an append-only log.

``osteo-batch refer PATIENT_ID --status referred`` records one action with
who did it and when. Nothing is ever updated or deleted; a patient's status
is her latest action, and the next night's worklist reads it.

Why a queue: a coordinator works in the daytime, but a nightly run over a
large backlog may still hold the store (DuckDB allows one writer). Then the
action waits ``wait_s`` seconds for the store, and if it is still held it is
written to ``WORKDIR/referral-queue/`` as one small private file. The next
command that can open the store (the nightly run's worklist stage, or the
next ``refer``) records queued actions first, in order, and deletes their
files. Each action carries an event ID, so a crash between recording and
deleting never records it twice.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from osteo_batch.store import Store, StoreLockedError

STATUSES = ("contacted", "referred", "declined", "unreachable", "dxa-done")
QUEUE_DIR = "referral-queue"


class ReferralError(ValueError):
    """An action that cannot be recorded (unknown status, empty patient ID); the message says the fix."""


@dataclass(frozen=True)
class Referral:
    event_id: str
    patient_id: str
    status: str
    note: str | None
    by_user: str
    acted_at: str  # ISO timestamp, local time of the action


def new_referral(patient_id: str, status: str, note: str | None = None, by_user: str | None = None,
                 acted_at: dt.datetime | None = None) -> Referral:
    pid = (patient_id or "").strip()
    if not pid:
        raise ReferralError("patient ID is empty")
    if status not in STATUSES:
        raise ReferralError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    who = (by_user or _user()).strip()
    when = (acted_at or dt.datetime.now()).isoformat(timespec="seconds")
    return Referral(secrets.token_hex(12), pid, status, (note or "").strip() or None, who, when)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container): still say something
        return f"uid-{os.getuid()}"


def record(store: Store, events: list[Referral]) -> int:
    """Append ``events`` (an event already recorded is skipped); returns how many were new."""
    import pyarrow as pa

    if not events:
        return 0
    before = store.scalar("count_referrals")
    cols = {k: pa.array([getattr(e, k) for e in events], pa.string()) for k in Referral.__dataclass_fields__}
    store.run("referrals_insert", ev=pa.table(cols))
    return store.scalar("count_referrals") - before


def queue(workdir: str | os.PathLike, event: Referral) -> Path:
    """Write ``event`` to the queue folder (0700/0600; the name holds a time and a random ID only)."""
    from osteo_batch.outputs import private_dir, write_private

    d = private_dir(Path(workdir) / QUEUE_DIR)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    final = d / f"{stamp}-{event.event_id}.json"
    tmp = d / f".{final.name}.tmp"
    write_private(tmp, json.dumps(asdict(event)))
    os.replace(tmp, final)  # the loader never sees half an action
    return final


def queued(workdir: str | os.PathLike) -> list[Path]:
    d = Path(workdir) / QUEUE_DIR
    return sorted(d.glob("*.json")) if d.is_dir() else []


def flush_queue(store: Store, workdir: str | os.PathLike) -> int:
    """Record every queued action in order, then delete the files; returns how many were new."""
    files = queued(workdir)
    if not files:
        return 0
    events = [Referral(**json.loads(f.read_text())) for f in files]
    added = record(store, events)
    for f in files:
        f.unlink(missing_ok=True)
    return added


@dataclass(frozen=True)
class ReferOutcome:
    how: str  # "recorded" or "queued"
    queue_file: Path | None
    flushed: int  # earlier queued actions recorded now
    known_patient: bool | None = None  # None when queued (the store could not be read)


def refer(store_path: str | os.PathLike, event: Referral, *, wait_s: float = 10.0,
          on_wait=None) -> ReferOutcome:
    """Record ``event`` now, or queue it when the store stays held for ``wait_s`` seconds.

    ``on_wait`` is called once, before waiting, if the store is held.
    """
    workdir = Path(store_path).parent
    if not Path(store_path).is_file():
        raise ReferralError(f"no store at {store_path}: pass the --workdir of the nightly runs")
    for attempt_wait in (0.0, wait_s) if wait_s > 0 else (0.0,):
        if attempt_wait and on_wait:
            on_wait()
        try:
            with Store(store_path, wait_s=attempt_wait) as st:
                flushed = flush_queue(st, workdir)
                record(st, [event])
                known = bool(st.scalar("patient_known", {"patient_id": event.patient_id}))
            return ReferOutcome("recorded", None, flushed, known)
        except StoreLockedError:
            continue
    return ReferOutcome("queued", queue(workdir, event), 0)


def history(store: Store, patient_id: str) -> list[dict]:
    return store.rows("referral_history", {"patient_id": patient_id})
