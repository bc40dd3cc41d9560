"""Output files readable by their owner only, written atomically.

Why: worklists, heat maps and the store hold protected health information on
shared drives. Folders are 0700 and files 0600, and each file is written to a
temporary name and renamed, so a reader never sees half a file.

A disk that fills, a folder that turns read-only or a permission refused are
the user's to fix, not bugs: :func:`os_error_message` says which, where, and
the fix, in one line (the CLI prints it and exits 2).
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{p} exists and is not a folder; choose another --workdir")
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        q = q.parent
    for d in reversed(missing):  # every folder we create is private, not just the leaf
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)
    os.chmod(p, 0o700)
    return p


def write_private(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    p = Path(path)
    private_dir(p.parent)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=p.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = tmp  # a failed write names no file; the message should name the folder
        raise
    return p


# ---------------------------------------------------------------- a full disk, a read-only folder

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
    from osteo_batch.store import StoreDiskError

    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, StoreDiskError):
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


def state_dir() -> Path | None:
    """``$XDG_STATE_HOME/osteo-batch`` (default ``~/.local/state/osteo-batch``): this user's own state, off the work folder.

    Where an action goes when the work folder cannot take it (see
    :func:`osteo_batch.followup.referrals.refer`). None when there is no home to use.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        try:
            base = str(Path.home() / ".local" / "state")
        except (RuntimeError, KeyError):
            return None
    return Path(base) / "osteo-batch"
