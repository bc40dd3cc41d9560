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

Why a queued file is checked like a typed-in action: the queue is a folder
anyone with access can drop a file into, and one file that cannot be read
(not JSON, wrong fields, an unknown status, a FIFO named ``*.json``, a huge
file) must not stop every later action and every night. Such a file is moved,
untouched, to ``referral-queue/quarantine/`` for a person to look at, counted
by reason (:data:`QUARANTINE_REASONS`), and the rest are recorded.

Why a fallback queue: when the work folder cannot take the action at all (its
disk is full, it is read-only, this user may not write there), the action goes
to this user's own state folder, ``$XDG_STATE_HOME/osteo-batch/referral-queue/<hash
of the work folder>/`` (default ``~/.local/state/...``), which :func:`flush_queue`
reads too: the next ``refer`` by the same user with the same ``--workdir``
records it (a nightly run records it as well when it runs as that user). If
even that fails, the CLI prints the action as a JSON line with the command that
enters it again. An action is never dropped silently.
"""

from __future__ import annotations

import datetime as dt
import errno
import getpass
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from osteo_batch.errors import UserError
from osteo_batch.store import Store, StoreLockedError

if TYPE_CHECKING:
    from osteo_batch.disk import DiskProblem

REFERRAL_STATUSES = ("contacted", "referred", "declined", "unreachable", "dxa-done")
QUEUE_DIR = "referral-queue"
QUARANTINE_DIR = "quarantine"
#: A queued action is a few hundred bytes; anything past this is not one, and is never read whole.
MAX_QUEUED_BYTES = 64 * 1024
#: Why a queued file was set aside (stable codes, counted by :func:`flush_queue`).
QUARANTINE_REASONS = {
    "not_a_file": "not a regular file (a folder, a FIFO, a link, a device)",
    "unreadable": "could not be opened or read (permissions)",
    "too_large": f"larger than {MAX_QUEUED_BYTES} bytes",
    "not_utf8": "not UTF-8 text",
    "bad_json": "not JSON",
    "not_an_action": "JSON, but not an object with exactly an action's fields",
    "wrong_types": "a field of the wrong type (IDs, status, user and time are text; the note text or null)",
    "bad_status": f"a status that is not one of {', '.join(REFERRAL_STATUSES)}",
    "empty_id": "an empty event ID, patient ID or user",
    "bad_time": "acted_at is not an ISO date and time",
}


class ReferralError(UserError, ValueError):
    """An action that cannot be recorded (an empty patient ID, an unknown status, no store); the message says the fix.

    Each raise names its ``code``: ``empty_patient_id``, ``unknown_referral_status``, ``no_store``.
    """

    code = "referral_refused"


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
        raise ReferralError("patient ID is empty", code="empty_patient_id", fix="give the patient ID as the worklist shows it")
    if status not in REFERRAL_STATUSES:
        raise ReferralError(f"status {status!r} is not one of {', '.join(REFERRAL_STATUSES)}",
                            code="unknown_referral_status")
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
    return _write_queued(Path(workdir) / QUEUE_DIR, event)


def queue_fallback(workdir: str | os.PathLike, event: Referral) -> Path:
    """Write ``event`` to this user's fallback queue for ``workdir`` (see the module docstring)."""
    d = fallback_dir(workdir)
    if d is None:
        raise OSError(errno.ENOENT, "no home folder for a fallback queue (set XDG_STATE_HOME)")
    return _write_queued(d, event)


def fallback_dir(workdir: str | os.PathLike) -> Path | None:
    """This user's fallback queue for ``workdir``: one folder per work folder, named by its path's hash."""
    from osteo_batch.text import path_hash
    from osteo_batch.outputs import state_dir

    base = state_dir()
    return None if base is None else base / QUEUE_DIR / path_hash(os.path.realpath(workdir))


def _write_queued(folder: Path, event: Referral) -> Path:
    """One action as one file, written whole: :func:`~osteo_batch.outputs.write_private` writes it under a
    hidden temporary name (``.tmp-*``) and renames it, and :func:`queued` skips hidden names, so the
    loader never sees half an action."""
    from osteo_batch.outputs import write_private

    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    return write_private(folder / f"{stamp}-{event.event_id}.json", json.dumps(asdict(event)))


def queued(workdir: str | os.PathLike) -> list[Path]:
    """Queued action files for ``workdir``: its queue, then this user's fallback queue for it, oldest first.

    A name that starts with ``.`` is a file still being written (see :func:`_write_queued`): never read.
    """
    out = []
    for d in (Path(workdir) / QUEUE_DIR, fallback_dir(workdir)):
        try:
            if d is not None and d.is_dir():
                out.extend(f for f in d.glob("*.json") if not f.name.startswith("."))
        except OSError:  # a queue folder we cannot list is not a reason to stop a night
            continue
    return sorted(out, key=lambda p: p.name)  # names start with the time queued


@dataclass
class QueueFlush:
    """What :func:`flush_queue` did: actions recorded, files set aside by reason, and where they went."""

    recorded: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)  # reason (QUARANTINE_REASONS) -> files
    quarantine_dirs: list[str] = field(default_factory=list)

    @property
    def set_aside(self) -> int:
        return sum(self.quarantined.values())


def flush_queue(store: Store, workdir: str | os.PathLike) -> QueueFlush:
    """Record every readable queued action in order, delete their files, and set the rest aside.

    A file that is not a valid action is moved, name unchanged, to the
    ``quarantine/`` folder beside it (0700, files 0600) and counted by
    reason; it never stops the others. Files that are not regular files are
    never opened.
    """
    out = QueueFlush()
    events: dict[str, Referral] = {}
    read: list[Path] = []
    for f in queued(workdir):
        got = read_queued(f)
        if got is None:  # gone meanwhile
            continue
        if isinstance(got, str):
            out.quarantined[got] = out.quarantined.get(got, 0) + 1
            qd = _quarantine(f)
            if qd and qd not in out.quarantine_dirs:
                out.quarantine_dirs.append(qd)
            continue
        events.setdefault(got.event_id, got)  # a copied file is one action, recorded once
        read.append(f)
    out.recorded = record(store, list(events.values()))
    for f in read:
        try:
            f.unlink(missing_ok=True)
        except OSError:  # recorded; its event ID keeps a second load from counting it twice
            pass
    return out


def read_queued(path: Path) -> Referral | str | None:
    """The action in a queued file, or the reason code it cannot be one, or None if the file is gone.

    ``lstat`` first, so a FIFO, a device or a link is never opened; then the
    open (:func:`osteo_batch.archive.walk.open_regular` with ``follow=False``:
    ``O_NOFOLLOW | O_NONBLOCK``, checked again with ``fstat``) catches a file
    swapped between the two, and at most ``MAX_QUEUED_BYTES + 1`` bytes are read.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return "unreadable"
    if not stat.S_ISREG(st.st_mode):
        return "not_a_file"
    if st.st_size > MAX_QUEUED_BYTES:
        return "too_large"
    from osteo_batch.archive.walk import NotRegularFileError, open_regular

    try:
        f = open_regular(str(path), follow=False)
    except FileNotFoundError:
        return None
    except NotRegularFileError:
        return "not_a_file"
    except OSError as e:
        return "not_a_file" if e.errno in (errno.ELOOP, errno.ENXIO) else "unreadable"
    try:
        with f:
            raw = f.read(MAX_QUEUED_BYTES + 1)
    except OSError:
        return "unreadable"
    if len(raw) > MAX_QUEUED_BYTES:
        return "too_large"
    return parse_queued(raw)


def parse_queued(raw: bytes) -> Referral | str:
    """An action from a queued file's bytes, checked as :func:`new_referral` checks one; else a reason code."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        return "bad_json"
    if not isinstance(d, dict) or set(d) != set(Referral.__dataclass_fields__):
        return "not_an_action"
    if not all(isinstance(d[k], str) for k in ("event_id", "patient_id", "status", "by_user", "acted_at")) or not (
            d["note"] is None or isinstance(d["note"], str)):
        return "wrong_types"
    if d["status"] not in REFERRAL_STATUSES:
        return "bad_status"
    if not (d["event_id"].strip() and d["patient_id"].strip() and d["by_user"].strip()):
        return "empty_id"
    try:
        when = dt.datetime.fromisoformat(d["acted_at"])
    except ValueError:
        return "bad_time"
    if when.tzinfo is not None:  # the store keeps local time, as new_referral writes it
        when = when.astimezone().replace(tzinfo=None)
    return Referral(d["event_id"].strip(), d["patient_id"].strip(), d["status"], d["note"], d["by_user"].strip(),
                    when.isoformat(timespec="seconds"))


def _quarantine(f: Path) -> str | None:
    """Move ``f`` (whatever it is) into ``quarantine/`` beside it; returns that folder, or None if it stays."""
    from osteo_batch.outputs import private_dir

    try:
        qd = private_dir(f.parent / QUARANTINE_DIR)
        dest = qd / f.name
        if os.path.lexists(dest):  # a second file of the same name: keep both
            dest = qd / f"{f.name}.{secrets.token_hex(3)}"
        os.rename(f, dest)
        mode = os.lstat(dest).st_mode
        if stat.S_ISDIR(mode):
            os.chmod(dest, 0o700)
        elif not stat.S_ISLNK(mode):  # chmod would follow a link to its target
            os.chmod(dest, 0o600)
        return str(qd)
    except OSError:  # cannot move it (read-only, refused): it stays, and is counted again next time
        return None


@dataclass(frozen=True)
class ReferOutcome:
    #: "recorded" (in the store), "queued" (WORKDIR/referral-queue/), "fallback" (this user's
    #: fallback queue), or "unsaved" (nowhere: the caller must show the action to the user)
    how: str
    queue_file: Path | None
    flushed: int  # earlier queued actions recorded now
    known_patient: bool | None = None  # None when queued (the store could not be read)
    set_aside: QueueFlush | None = None  # queued files that could not be read (quarantined)
    problem: "DiskProblem | None" = None  # what kept it from the store or the queue, if anything


def refer(store_path: str | os.PathLike, event: Referral, *, wait_s: float = 10.0,
          on_wait=None) -> ReferOutcome:
    """Record ``event`` now, or queue it when the store stays held for ``wait_s`` seconds.

    ``on_wait`` is called once, before waiting, if the store is held. When the
    work folder's disk is full, read-only or refused, the action is queued
    there if it can be, else in this user's fallback queue, else returned
    ``unsaved``; ``problem`` then says what is wrong, in one line.
    """
    from osteo_batch.disk import disk_problem

    workdir = Path(store_path).parent
    if not Path(store_path).is_file():
        raise ReferralError(f"no store at {store_path}: pass the --workdir of the nightly runs", code="no_store")
    problem = None
    for attempt_wait in (0.0, wait_s) if wait_s > 0 else (0.0,):
        if attempt_wait and on_wait:
            on_wait()
        try:
            with Store(store_path, wait_s=attempt_wait) as st:
                flushed = flush_queue(st, workdir)
                record(st, [event])
                known = bool(st.scalar("patient_known", {"patient_id": event.patient_id}))
            return ReferOutcome("recorded", None, flushed.recorded, known, flushed)
        except StoreLockedError:
            continue
        except Exception as e:
            problem = disk_problem(e, workdir=workdir)
            if problem is None:
                raise
            break
    try:
        return ReferOutcome("queued", queue(workdir, event), 0, problem=problem)
    except OSError as e:  # whatever it is, the action goes on to the fallback, never away
        problem = disk_problem(e, workdir=workdir) or problem or _other_problem(e, workdir / QUEUE_DIR)
    try:
        return ReferOutcome("fallback", queue_fallback(workdir, event), 0, problem=problem)
    except OSError:
        return ReferOutcome("unsaved", None, 0, problem=problem)


def _other_problem(e: OSError, folder: Path):
    """A :class:`~osteo_batch.disk.DiskProblem` for an OSError that is none of the known conditions."""
    from osteo_batch.disk import DiskProblem

    code = errno.errorcode.get(e.errno or 0, type(e).__name__)
    return DiskProblem(code, str(folder), f"could not write to {folder} ({code})",
                       "check that it is a folder this user can write to")


def history(store: Store, patient_id: str) -> list[dict]:
    return store.rows("referral_history", {"patient_id": patient_id})
