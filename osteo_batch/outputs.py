"""Output files readable by their owner only, written atomically.

Why: worklists, heat maps and the store hold protected health information on
shared drives. Folders are 0700 and files 0600, and each file is written to a
temporary name and renamed, so a reader never sees half a file.

A disk that fills while writing them is the user's to fix: see :mod:`osteo_batch.disk`.
"""

from __future__ import annotations

import os
import tempfile
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


def write_private(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically with mode 0600.

    ``durable=False`` skips the fsync: for files a crash may lose because they are fetched again
    (the PACS spool), where a sync per instance would cost more than the retrieval.
    """
    p = Path(path)
    private_dir(p.parent)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=p.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = tmp  # a failed write names no file; the message should name the folder
        raise
    return p


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
