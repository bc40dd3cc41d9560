"""A full disk, a read-only folder, a refused permission: conditions the user fixes on the machine, not bugs.

:func:`os_error_message` says which, where, and the fix, in one line (the CLI
prints it and exits 2, and Prefect does not retry it). It knows them however
they arrive: an OSError's errno (pyarrow sets it too), the store's own
:class:`~osteo_batch.store.StoreDiskError`, or DuckDB's exception text.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from osteo_batch.outputs import state_dir

#: The conditions a user fixes on the machine (make room, remount, grant access), not bugs:
#: errno -> (its name, what happened, the fix). ``{f}`` is the folder.
_CONDITIONS = {
    errno.ENOSPC: ("ENOSPC", "no space left on device writing to {f}",
                   "free space there or point --workdir at a disk with room"),
    errno.EDQUOT: ("EDQUOT", "disk quota exceeded writing to {f}",
                   "free space in your quota there, ask for a larger quota, or point --workdir at a disk with room"),
    errno.EROFS: ("EROFS", "read-only file system at {f}",
                  "remount it read-write or point --workdir at a writable folder"),
    errno.EACCES: ("EACCES", "permission denied at {f}",
                   "give this user access to it (chown/chmod) or point --workdir at a folder it owns"),
    errno.EPERM: ("EPERM", "operation not permitted at {f}",
                  "run as the folder's owner or point --workdir at a folder this user owns"),
}
#: The same conditions as DuckDB and other libraries spell them in their messages (strerror text).
_TEXTS = {os.strerror(n): n for n in _CONDITIONS}
#: Errors that only a write can give: the folder is an output folder, safe to name.
_WRITE_ONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
NOTHING_LOST = "Nothing from this run is lost: the next run picks up where this one stopped."


@dataclass(frozen=True)
class DiskProblem:
    """A full disk, an exceeded quota, a read-only file system or a refused permission, said in one line.

    ``folder`` is a work-folder path (they hold no patient data: run IDs are
    random, heat maps hashed), or, for a path that may be an archive file's,
    only its hash.
    """

    code: str  # "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM"
    folder: str
    what: str  # e.g. "no space left on device writing to /data/work/scores (ENOSPC)"
    fix: str

    def line(self, then: str = NOTHING_LOST) -> str:
        return f"{self.what}; {self.fix}. {then}".strip()


def errno_of_text(message: str) -> int | None:
    """The condition a library's message names by its strerror text ("No space left on device"), if any."""
    for text, n in _TEXTS.items():
        if text in message:
            return n
    return None


def problem_for(err: int, path: str | os.PathLike | None, *, workdir: str | os.PathLike | None = None) -> DiskProblem:
    """The :class:`DiskProblem` for errno ``err`` at ``path`` (a file or a folder; None: the work folder)."""
    code, what, fix = _CONDITIONS[err]
    folder = _folder_shown(err, path, workdir)
    return DiskProblem(code, folder, f"{what.format(f=folder)} ({code})", fix)


def disk_problem(e: BaseException, *, workdir: str | os.PathLike | None = None) -> DiskProblem | None:
    """The condition behind ``e`` (it, its cause or its context, as a traceback reads them), or None.

    Knows OSErrors by errno (pyarrow sets it too), :class:`osteo_batch.store.StoreDiskError`
    (DuckDB's own exceptions, translated by the store), and DuckDB exceptions by their text.
    """
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(getattr(x, "problem", None), DiskProblem):  # osteo_batch.store.StoreDiskError
            return x.problem
        if isinstance(x, OSError) and x.errno in _CONDITIONS:
            return problem_for(x.errno, x.filename, workdir=workdir)
        if type(x).__module__.lstrip("_").startswith("duckdb"):
            n = errno_of_text(str(x))
            if n is not None:
                return problem_for(n, _quoted_path(str(x)), workdir=workdir)
        x = x.__cause__ or (None if x.__suppress_context__ else x.__context__)
    return None


def os_error_message(e: BaseException, *, workdir: str | os.PathLike | None = None) -> str | None:
    """The one-line user message for a full disk, a read-only or a refused folder behind ``e``; None otherwise.

    What ``osteo-batch`` prints (exit 2) instead of an internal error, and
    what tells Prefect not to retry (:func:`osteo_batch.pipeline.is_user_error`).
    """
    p = disk_problem(e, workdir=workdir)
    return p.line() if p else None


def _quoted_path(message: str) -> str | None:
    """The file a DuckDB message names in double quotes ('Could not write file "/w/osteo.duckdb.wal": ...')."""
    import re

    m = re.search(r'"(/[^"]+)"', message)
    return m.group(1) if m else None


def _folder_shown(err: int, path, workdir) -> str:
    """The folder to name: the path's folder when it is an output folder, else only a hash of it."""
    if path is None:
        return str(workdir) if workdir is not None else "the work folder"
    p = Path(os.fsdecode(path))
    folder = p if p.is_dir() else p.parent
    if err in _WRITE_ONLY or _inside(folder, workdir) or _inside(folder, state_dir()):
        return str(folder)
    from osteo_batch.text import path_hash  # EACCES/EPERM can come from a read: maybe an archive file

    return f"a folder outside the work folder (path hash {path_hash(folder)})"


def _inside(p: Path, root) -> bool:
    if root is None:
        return False
    try:
        return Path(os.path.abspath(p)).is_relative_to(os.path.abspath(root))
    except (OSError, ValueError):
        return False
