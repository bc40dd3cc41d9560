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
from pathlib import Path


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime_ns: int


@dataclass
class Listing:
    root: str
    files: list[FileEntry] = field(default_factory=list)
    unreadable_dirs: int = 0
    vanished: int = 0
    skipped_links: int = 0


def path_hash(path: str | os.PathLike) -> str:
    """Short, stable hash of a path for logs and errors (paths can hold names)."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:12]


def walk(root: str | os.PathLike) -> Listing:
    """List every regular file under ``root``, sorted by path."""
    root_s = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_s):
        raise NotADirectoryError(f"archive {root_s!r} is not a directory")
    out = Listing(root=root_s)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    st = os.stat(root_s)
    seen_dirs.add((st.st_dev, st.st_ino))
    stack = [root_s]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            out.unreadable_dirs += 1
            continue
        with it:
            for e in it:
                try:
                    s = e.stat(follow_symlinks=True)
                except OSError:  # dangling link, vanished, permission
                    out.vanished += 1
                    continue
                key = (s.st_dev, s.st_ino)
                if stat.S_ISDIR(s.st_mode):
                    if key in seen_dirs:
                        out.skipped_links += 1
                        continue
                    seen_dirs.add(key)
                    stack.append(e.path)
                elif stat.S_ISREG(s.st_mode):
                    if key in seen_files:
                        out.skipped_links += 1
                        continue
                    seen_files.add(key)
                    out.files.append(FileEntry(e.path, s.st_size, s.st_mtime_ns))
    out.files.sort(key=lambda f: f.path)
    return out

