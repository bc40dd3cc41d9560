"""Walk an archive: every regular file once, no symlink loops, no surprises.

Why by hand: ``os.walk`` with ``followlinks=True`` loops forever on a symlink
cycle, and without it misses archives mounted through links. We follow
directory links but remember each directory's (device, inode), and count each
file by its (device, inode) so a file reached through two paths appears once.
Files that vanish or cannot be stat'ed mid-walk are skipped and counted; they
are not in the archive any more by the time we would read them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field


@dataclass
class Listing:
    """Every regular file under ``root``, as columns (cheap at millions of files)."""

    root: str
    paths: list[str] = field(default_factory=list)  # store form, see db_path
    sizes: list[int] = field(default_factory=list)
    mtimes_ns: list[int] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed
    vanished: int = 0
    skipped_links: int = 0

    @property
    def unreadable_dirs(self) -> int:
        return len(self.unreadable)

    def __len__(self) -> int:
        return len(self.paths)

    def table(self):
        import pyarrow as pa

        return pa.table({
            "path": pa.array(self.paths, pa.string()),
            "size": pa.array(self.sizes, pa.int64()),
            "mtime_ns": pa.array(self.mtimes_ns, pa.int64()),
        })


_RAW = "hex:"  # absolute paths never start with this


def db_path(path: str) -> str:
    """The store's text form of a path: itself, or ``hex:<bytes>`` when the name is
    not valid UTF-8 (Latin-1 names from old PACS exports). Reversible by :func:`fs_path`."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return _RAW + os.fsencode(path).hex()


def fs_path(stored: str) -> str:
    """The path to open for a stored path (with surrogate escapes for names that are not UTF-8)."""
    return os.fsdecode(bytes.fromhex(stored[len(_RAW):])) if stored.startswith(_RAW) else stored


def path_hash(path: str | os.PathLike) -> str:
    """Short, stable hash of a path for logs and errors (paths can hold names)."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:12]


def walk(root: str | os.PathLike) -> Listing:
    """List every regular file under ``root`` once (order unspecified).

    One stat per file, as ``os.walk`` plus ``os.stat`` would pay: directory
    entries' types come from the directory read itself. Directory links are
    followed once each (a cycle is cut); a file reached twice, through a link
    or a hard link, is listed once.
    """
    root_s = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_s):
        raise NotADirectoryError(f"archive {root_s!r} is not a directory")
    out = Listing(root=root_s)
    paths, sizes, mtimes = out.paths, out.sizes, out.mtimes_ns
    keys: list[tuple[int, int]] = []  # (device, inode) of each listed file
    shared = False  # a file seen through a link or with several names
    st = os.stat(root_s)
    seen_dirs = {(st.st_dev, st.st_ino)}
    stack = [root_s]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            out.unreadable.append(db_path(d) + os.sep)
            continue
        with it:
            for e in it:
                try:
                    link = e.is_symlink()
                    if not link and e.is_file(follow_symlinks=False):
                        s = e.stat(follow_symlinks=False)
                        if s.st_nlink > 1:
                            shared = True
                    else:
                        s = e.stat(follow_symlinks=True)
                except OSError:  # dangling link, vanished, permission
                    out.vanished += 1
                    continue
                if stat.S_ISREG(s.st_mode):
                    shared = shared or link
                    paths.append(e.path if e.path.isascii() else db_path(e.path))
                    sizes.append(s.st_size)
                    mtimes.append(s.st_mtime_ns)
                    keys.append((s.st_dev, s.st_ino))
                elif stat.S_ISDIR(s.st_mode):
                    key = (s.st_dev, s.st_ino)
                    if key in seen_dirs:
                        out.skipped_links += 1
                        continue
                    seen_dirs.add(key)
                    stack.append(e.path)
    if shared:
        _drop_repeats(out, keys)
    return out


def _drop_repeats(out: Listing, keys: list[tuple[int, int]]) -> None:
    """Keep the first path of each (device, inode)."""
    seen: set[tuple[int, int]] = set()
    keep = []
    for i, k in enumerate(keys):
        if k in seen:
            out.skipped_links += 1
        else:
            seen.add(k)
            keep.append(i)
    out.paths[:] = [out.paths[i] for i in keep]
    out.sizes[:] = [out.sizes[i] for i in keep]
    out.mtimes_ns[:] = [out.mtimes_ns[i] for i in keep]


class OutsideArchiveError(OSError):
    """A path whose real location is outside the archive and every allowed root: never opened."""


class NotRegularFileError(OSError):
    """A path that is not a regular file (a FIFO, a device, a socket, a folder): never read."""


def real_roots(root: str | os.PathLike, allowed: "tuple[str, ...] | list[str]" = ()) -> tuple[str, ...]:
    """The resolved archive root and allowed roots, each ending in the path separator."""
    out = []
    for r in (root, *allowed):
        rp = os.path.realpath(os.fspath(r))
        out.append(rp if rp.endswith(os.sep) else rp + os.sep)
    return tuple(out)


def inside(real: str, roots: "tuple[str, ...]") -> bool:
    """True when the resolved path ``real`` lies under one of ``roots`` (from :func:`real_roots`)."""
    return any(real.startswith(r) for r in roots)


def open_regular(stored: str, roots: "tuple[str, ...] | None" = None):
    """Open a stored archive path for binary reading, safely; the caller closes it.

    - ``O_NONBLOCK``: a FIFO put in a file's place opens at once instead of
      blocking the reader forever; ``fstat`` then refuses anything that is not
      a regular file (:class:`NotRegularFileError`) before a byte is read.
    - ``roots`` (from :func:`real_roots`): the file actually opened, as the
      kernel names it (``/proc/self/fd``), must lie under one of them, else
      :class:`OutsideArchiveError`. Checked before the open (a path that
      resolves outside is never opened) and again after it, on the file the
      kernel opened, so a link swapped in between cannot redirect the read.
    """
    if roots and not inside(os.path.realpath(fs_path(stored)), roots):
        raise OutsideArchiveError("resolves outside the archive root and every [archive] allowed_roots")
    fd = os.open(fs_path(stored), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"not a regular file (mode {stat.filemode(st.st_mode)})")
        if roots:
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # no /proc: resolve the name instead
                real = os.path.realpath(fs_path(stored))
            if not inside(real, roots):
                raise OutsideArchiveError("resolves outside the archive root and every [archive] allowed_roots")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
