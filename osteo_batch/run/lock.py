"""One run at a time per work folder: an OS file lock, refused at once when held.

Why a lock beside DuckDB's: a nightly run opens the store stage by stage, so
between stages a second run could slip in and interleave (two sweeps, or two
shard plans over the same pending images). Why ``flock``: the kernel drops it
when the holder dies, SIGKILL included, so a crashed run never blocks the
next one and nobody has to delete a stale lock file by hand. Scheduled runs
also carry Prefect's own guard (the served deployment's concurrency limit
with the CANCEL_NEW collision strategy, see ``flows/nightly.py``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from osteo_batch.errors import UserError

LOCK_FILE = "run.lock"

#: Work folders (resolved) whose lock this process holds, with a hold count: the
#: CLI takes the lock before Prefect starts (a refused run must not start a
#: server), and the flow it then runs in this process takes it again.
_held: dict[str, int] = {}


class RunLockedError(UserError, RuntimeError):
    """Another run holds this work folder; the message says which and what to do."""

    code = "run_locked"


@contextmanager
def hold(workdir: str | os.PathLike, run_id: str) -> Iterator[None]:
    """Hold the work folder's run lock for the ``with`` block, or raise :class:`RunLockedError`."""
    from osteo_batch.outputs import private_dir

    path = private_dir(Path(workdir)) / LOCK_FILE
    key = str(path.resolve())
    if _held.get(key):  # this process holds it already (the CLI, around its own flow)
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            raise RunLockedError(
                f"another run is using {Path(workdir).name}/ (run {holder.get('run_id', '?')}, "
                f"process {holder.get('pid', '?')}, started {holder.get('started', '?')}); "
                "this run was not started. Wait for that one to finish, or stop it, then start again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"run_id": run_id, "pid": os.getpid(),
                                  "started": dt.datetime.now().isoformat(timespec="seconds")}).encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
