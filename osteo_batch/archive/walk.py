"""Walk an archive: every file once, nothing outside it opened, no symlink loops, no surprises.

Why by hand: ``os.walk`` with ``followlinks=True`` loops forever on a symlink
cycle and follows links out of the archive, and without it misses archives
mounted through links. The rule here: an entry belongs to the archive only if
its resolved path lies under the archive's resolved root or one of the roots
the configuration names (``[archive] allowed_roots``). A link that resolves
anywhere else (another folder, ``/etc``, ``/proc``, ``/dev``) is *refused*: it
gets one ``instances`` row of its own (``outside_archive``), is never opened
and, for a folder, never walked; so is a FIFO, socket or device node
(``not_regular_file``) and a dangling or looping link (``unreadable``). Only
links pay a ``realpath``: a non-link entry of a folder already known to be
inside is inside too, so the common case costs one ``lstat`` per file, as
``os.walk`` plus ``os.stat`` would. Links inside are followed, remembering each
directory's (device, inode) so a cycle is cut and counting each file by its
(device, inode) so a file reached through two paths appears once (under its
own name rather than a link's). Folders that cannot be listed are named by
what went wrong (``permission_denied``, ``io_error``, ``vanished``) so a night
that lost a folder says so; their files are kept as last seen by the sweep.
Entries that vanish mid-walk are skipped and counted.

The walk is the first gate only: a link swapped between the walk and the read
is caught by :func:`open_regular`, which checks the file the kernel opened.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

# reason codes written by the walk (osteo_batch.reasons.Reason values; not imported, to keep the walk light)
OUTSIDE_ARCHIVE = "outside_archive"
NOT_REGULAR_FILE = "not_regular_file"
UNREADABLE = "unreadable"

#: Why a folder could not be listed, by errno; anything else is ``io_error``.
DIR_REASONS = {
    errno.EACCES: "permission_denied", errno.EPERM: "permission_denied",
    errno.ENOENT: "vanished", errno.ENOTDIR: "vanished",
}


def dir_reason(e: OSError) -> str:
    """The code for a folder that could not be listed (a count key; never the folder's name)."""
    return DIR_REASONS.get(e.errno, "io_error")


@dataclass
class Listing:
    """What the walk found under ``root``, as columns (cheap at millions of files).

    ``paths``/``sizes``/``mtimes_ns``: regular files to read. ``refused_*``:
    entries that get a row with a reason and are never opened (a link that
    leaves the archive, a FIFO, a dangling link); their size and time are the
    entry's own (``lstat``), never the target's.
    """

    root: str
    roots: tuple[str, ...] = ()  # resolved roots, see real_roots
    paths: list[str] = field(default_factory=list)  # store form, see db_path
    sizes: list[int] = field(default_factory=list)
    mtimes_ns: list[int] = field(default_factory=list)
    refused_paths: list[str] = field(default_factory=list)
    refused_sizes: list[int] = field(default_factory=list)
    refused_mtimes_ns: list[int] = field(default_factory=list)
    refused_reasons: list[str] = field(default_factory=list)
    refused_details: list[str | None] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed (store form + sep)
    unreadable_reasons: list[str] = field(default_factory=list)  # one per folder, see dir_reason
    vanished: int = 0
    skipped_links: int = 0

    @property
    def unreadable_dirs(self) -> int:
        return len(self.unreadable)

    @property
    def unreadable_dir_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.unreadable_reasons:
            out[r] = out.get(r, 0) + 1
        return out

    def __len__(self) -> int:
        return len(self.paths) + len(self.refused_paths)

    def table(self):
        """Every entry, files to read and refused ones (``walk_reason`` set), as an Arrow table."""
        import pyarrow as pa

        n = len(self.paths)
        return pa.table({
            "path": pa.array(self.paths + self.refused_paths, pa.string()),
            "size": pa.array(self.sizes + self.refused_sizes, pa.int64()),
            "mtime_ns": pa.array(self.mtimes_ns + self.refused_mtimes_ns, pa.int64()),
            "walk_reason": pa.array([None] * n + self.refused_reasons, pa.string()),
            "walk_detail": pa.array([None] * n + self.refused_details, pa.string()),
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


def _kind(mode: int) -> str:
    """What a non-regular entry is, for ``read_detail``."""
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "char_device"),
                       (stat.S_ISBLK, "block_device"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "other"


_LINK_ERRORS = {errno.ENOENT: "dangling_link", errno.ELOOP: "link_loop", errno.EACCES: "permission_denied"}


class _Walk:
    """One walk's state; :func:`walk` is the interface."""

    def __init__(self, root_s: str, roots: tuple[str, ...]):
        self.out = Listing(root=root_s, roots=roots)
        self.roots = roots
        self.keys: list[tuple[int, int]] = []  # (device, inode) of each listed file
        self.via_link: set[int] = set()  # indices of files listed under a link's name
        self.refused_keys: set[tuple[int, int]] = set()  # non-regular files inside, each once
        self.linked_specials: list[tuple[str, os.stat_result, os.stat_result]] = []  # reached through a link
        st = os.stat(root_s)
        self.seen_dirs = {(st.st_dev, st.st_ino)}
        self.stack = [(root_s, os.path.realpath(root_s))]  # (folder to list, its resolved path)
        self.real_dirs: dict[str, str] = {}  # realpath of folders link targets lie in, per walk
        self.shared = False  # a file seen through a link or with several names

    def refuse(self, path: str, s: os.stat_result | None, reason: str, detail: str | None) -> None:
        o = self.out
        o.refused_paths.append(db_path(path))
        o.refused_sizes.append(s.st_size if s else 0)
        o.refused_mtimes_ns.append(s.st_mtime_ns if s else 0)
        o.refused_reasons.append(reason)
        o.refused_details.append(detail)

    def unlisted(self, d: str, e: OSError) -> None:
        self.out.unreadable.append(db_path(d) + os.sep)
        self.out.unreadable_reasons.append(dir_reason(e))

    def run(self) -> Listing:
        out = self.out
        paths, sizes, mtimes, keys, stack = out.paths, out.sizes, out.mtimes_ns, self.keys, self.stack
        S_ISREG, S_ISDIR = stat.S_ISREG, stat.S_ISDIR
        while stack:
            d, d_real = stack.pop()
            try:
                it = os.scandir(d)
            except OSError as e:
                self.unlisted(d, e)
                continue
            with it:
                try:
                    for e in it:
                        try:
                            if e.is_symlink():
                                self.link(e, d_real)
                            elif e.is_file(follow_symlinks=False):  # the fast path: no realpath
                                s = e.stat(follow_symlinks=False)
                                if s.st_nlink > 1:
                                    self.shared = True
                                paths.append(e.path if e.path.isascii() else db_path(e.path))
                                sizes.append(s.st_size)
                                mtimes.append(s.st_mtime_ns)
                                keys.append((s.st_dev, s.st_ino))
                            elif e.is_dir(follow_symlinks=False):
                                s = e.stat(follow_symlinks=False)
                                key = (s.st_dev, s.st_ino)
                                if key in self.seen_dirs:
                                    out.skipped_links += 1
                                else:
                                    self.seen_dirs.add(key)
                                    stack.append((e.path, os.path.join(d_real, e.name)))
                            else:  # FIFO, socket, device node (or a type that changed under us)
                                s = e.stat(follow_symlinks=False)
                                if S_ISREG(s.st_mode) or S_ISDIR(s.st_mode):
                                    out.vanished += 1  # replaced mid-walk: tomorrow's walk sees it
                                else:
                                    self.not_regular(e.path, s, s)
                        except OSError:  # vanished, permission
                            out.vanished += 1
                except OSError as err:  # the listing itself broke off part-way (I/O error)
                    self.unlisted(d, err)
        for path, own, target in self.linked_specials:  # after the walk: a FIFO's own name wins over a link's
            self.not_regular(path, own, target)
        if self.shared:
            self.drop_repeats()
        return out

    def not_regular(self, path: str, own: os.stat_result, target: os.stat_result) -> None:
        key = (target.st_dev, target.st_ino)
        if key in self.refused_keys:
            self.out.skipped_links += 1
            return
        self.refused_keys.add(key)
        self.refuse(path, own, NOT_REGULAR_FILE, _kind(target.st_mode))

    def resolve(self, e: os.DirEntry, d_real: str) -> tuple[str, os.stat_result | None]:
        """What ``os.path.realpath(e.path)`` answers, and the target's ``lstat`` when that was had on the way.

        Cheaper than ``realpath`` for the common link (to a file, not to another
        link): the link's target is read relative to its folder's known resolved
        path, the target's folder is resolved once per walk (cached), and one
        ``lstat`` tells whether the target is itself a link (then ``realpath``
        follows the chain). Only names are read: nothing is opened.
        """
        full = os.path.join(d_real, os.readlink(e.path))  # a relative target is read from the link's folder
        head, tail = os.path.split(full)
        if tail in ("", ".", ".."):
            return os.path.realpath(full), None
        rd = self.real_dirs.get(head)
        if rd is None:
            rd = self.real_dirs[head] = os.path.realpath(head)
        cand = os.path.join(rd, tail)
        try:
            s = os.lstat(cand)
        except OSError:
            return cand, None  # dangling (or unreachable): realpath would answer the same name
        if stat.S_ISLNK(s.st_mode):
            return os.path.realpath(cand), None  # a chain of links
        return cand, s

    def link(self, e: os.DirEntry, d_real: str) -> None:
        """A symbolic link: resolved by name only (``readlink``/``lstat``, as ``realpath``; nothing opened)."""
        real, s = self.resolve(e, d_real)
        own = e.stat(follow_symlinks=False)
        if not inside(real + os.sep, self.roots):  # + sep: a link to a root itself is inside
            self.refuse(e.path, own, OUTSIDE_ARCHIVE, None)
            return
        if s is None:
            try:
                s = e.stat(follow_symlinks=True)  # inside: stat the target (stat opens nothing)
            except OSError as err:
                self.refuse(e.path, own, UNREADABLE, _LINK_ERRORS.get(err.errno, "io_error"))
                return
        if stat.S_ISREG(s.st_mode):
            self.shared = True
            self.via_link.add(len(self.out.paths))
            self.out.paths.append(db_path(e.path))
            self.out.sizes.append(s.st_size)
            self.out.mtimes_ns.append(s.st_mtime_ns)
            self.keys.append((s.st_dev, s.st_ino))
        elif stat.S_ISDIR(s.st_mode):
            key = (s.st_dev, s.st_ino)
            if key in self.seen_dirs:
                self.out.skipped_links += 1
            else:
                self.seen_dirs.add(key)
                self.stack.append((e.path, real))
        else:
            self.linked_specials.append((e.path, own, s))

    def drop_repeats(self) -> None:
        """Keep one path of each (device, inode): the first not reached through a file link, else the first."""
        out, via = self.out, self.via_link
        best: dict[tuple[int, int], int] = {}
        for i, k in enumerate(self.keys):
            j = best.get(k)
            if j is None or (j in via and i not in via):
                best[k] = i
        if len(best) == len(self.keys):
            return
        out.skipped_links += len(self.keys) - len(best)
        keep = sorted(best.values())
        out.paths[:] = [out.paths[i] for i in keep]
        out.sizes[:] = [out.sizes[i] for i in keep]
        out.mtimes_ns[:] = [out.mtimes_ns[i] for i in keep]


def walk(root: str | os.PathLike, allowed_roots: "tuple[str, ...] | list[str]" = ()) -> Listing:
    """List every entry under ``root`` once (order unspecified): regular files to read, and
    refused entries (links that leave ``root`` and ``allowed_roots``, non-regular files,
    dangling links), each with its reason, never opened.

    One ``lstat`` per file, as ``os.walk`` plus ``os.stat`` would pay (entry
    types come from the directory read itself), plus a ``readlink`` and an
    ``lstat`` per link (:meth:`_Walk.resolve`).
    """
    root_s = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_s):
        raise NotADirectoryError(f"archive {root_s!r} is not a directory")
    return _Walk(root_s, real_roots(root_s, allowed_roots)).run()


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


def open_regular(stored: str, roots: "tuple[str, ...] | None" = None, *, follow: bool = True):
    """Open a stored archive path for binary reading, safely; the caller closes it.

    - ``O_NONBLOCK``: a FIFO put in a file's place opens at once instead of
      blocking the reader forever; ``fstat`` then refuses anything that is not
      a regular file (:class:`NotRegularFileError`) before a byte is read.
    - ``roots`` (from :func:`real_roots`): the file actually opened, as the
      kernel names it (``/proc/self/fd``), must lie under one of them, else
      :class:`OutsideArchiveError`. Checked before the open (a path that
      resolves outside is never opened) and again after it, on the file the
      kernel opened, so a link swapped in between cannot redirect the read.
    - ``follow=False``: a link is not followed at all (``O_NOFOLLOW``: the
      open fails with ``ELOOP``), for files the program writes itself.
    """
    if roots and not inside(os.path.realpath(fs_path(stored)), roots):
        raise OutsideArchiveError("resolves outside the archive root and every [archive] allowed_roots")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0) | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(fs_path(stored), flags)
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
