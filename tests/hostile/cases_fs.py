"""Hostile file-system entries: links that leave the archive, FIFOs, sockets, devices, dangling links, cycles.

The rule they test (``osteo_batch.archive.walk.walk``): a file is in the archive
only if its resolved path lies under the archive's resolved root or an
``[archive] allowed_roots`` folder. Anything else gets exactly one
``instances`` row, rejected with its own reason, and is never opened; a link
to a folder outside gets one row for the link and nothing under it is walked.
Each case writes its entries into the archive under names that start with the
case name, so all of them can share one archive; planted patient data lives
only in ``outside_dir`` and must never reach a row, a log or a worklist.

Allowed roots need a setting, which a :class:`Case` cannot carry: they are
tested in ``test_archive_hostile.py``.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from cases import Case, planted
from dicom_factory import dataset, write

REJECTED = "rejected"
OUTSIDE = frozenset({"outside_archive"})
NOT_REGULAR = frozenset({"not_regular_file"})
UNREADABLE = frozenset({"unreadable"})


def _dicom(path: Path, token: str, uid: str, **kw) -> Path:
    return write(planted(dataset(sop_instance_uid=uid, **kw), token), path)


def _outside_file(a: Path, o: Path) -> list[str]:
    _dicom(o / "fs-outside-file" / "IM1", "FSOUTFILE", "2.25.77001")
    os.symlink(o / "fs-outside-file" / "IM1", a / "fs-outside-file")
    return ["fs-outside-file"]


def _outside_folder(a: Path, o: Path) -> list[str]:
    for i in range(3):
        _dicom(o / "fs-outside-folder" / f"IM{i}", f"FSOUTDIR{i}", f"2.25.7701{i}")
    os.symlink(o / "fs-outside-folder", a / "fs-outside-folder", target_is_directory=True)
    return ["fs-outside-folder"]


def _outside_relative(a: Path, o: Path) -> list[str]:
    """A relative link that climbs out of the archive (``../``) to planted data."""
    _dicom(o / "fs-outside-relative" / "IM1", "FSOUTREL", "2.25.77002")
    (a / "fs-outside-relative").mkdir()
    os.symlink(os.path.relpath(o / "fs-outside-relative" / "IM1", a / "fs-outside-relative"),
               a / "fs-outside-relative" / "IM1")
    return ["fs-outside-relative/IM1"]


def _link_to(name: str, target: str) -> Case:
    def write_(a: Path, o: Path) -> list[str]:
        os.symlink(target, a / name)
        return [name]

    return Case(name, write_, REJECTED, OUTSIDE)


def _fifo(a: Path, o: Path) -> list[str]:
    os.mkfifo(a / "fs-fifo")
    return ["fs-fifo"]


def _socket(a: Path, o: Path) -> list[str]:
    # bind where the name is short (AF_UNIX paths are limited to ~108 bytes), then move it in
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(os.path.join(short, "s"))
        finally:
            s.close()
        os.rename(os.path.join(short, "s"), a / "fs-socket")
    return ["fs-socket"]


def _link_to_outside_fifo(a: Path, o: Path) -> list[str]:
    os.mkfifo(o / "fs-outside-fifo")
    os.symlink(o / "fs-outside-fifo", a / "fs-outside-fifo")
    return ["fs-outside-fifo"]


def _link_to_inside_fifo(a: Path, o: Path) -> list[str]:
    os.mkfifo(a / "fs-inside-fifo")
    os.symlink(a / "fs-inside-fifo", a / "fs-inside-fifo-link")
    return ["fs-inside-fifo"]  # the link is the same FIFO: one row


def _dangling(a: Path, o: Path) -> list[str]:
    os.symlink(a / "fs-dangling-target-gone", a / "fs-dangling")
    return ["fs-dangling"]


def _cycle(a: Path, o: Path) -> list[str]:
    os.symlink("fs-cycle-b", a / "fs-cycle-a")
    os.symlink("fs-cycle-a", a / "fs-cycle-b")
    return ["fs-cycle-a", "fs-cycle-b"]


def _folder_cycle(a: Path, o: Path) -> list[str]:
    """A link back to the archive root and one to its own folder: cut, no rows of their own."""
    _dicom(a / "fs-folder-cycle" / "IM1", "FSCYCLE", "2.25.77003", sex="M")
    os.symlink(a, a / "fs-folder-cycle" / "to-root", target_is_directory=True)
    os.symlink(".", a / "fs-folder-cycle" / "to-self", target_is_directory=True)
    return ["fs-folder-cycle/IM1"]


def _inside_link(a: Path, o: Path) -> list[str]:
    """A link to another file of the archive: the file is listed once, under its own name."""
    _dicom(a / "fs-inside-target", "FSINSIDE", "2.25.77004", sex="M")  # ineligible whatever the stage
    os.symlink(a / "fs-inside-target", a / "fs-inside-link")
    os.symlink("fs-inside-target", a / "fs-inside-link-relative")
    return ["fs-inside-target"]


CASES: list[Case] = [
    Case("fs-outside-file", _outside_file, REJECTED, OUTSIDE),
    Case("fs-outside-folder", _outside_folder, REJECTED, OUTSIDE),
    Case("fs-outside-relative", _outside_relative, REJECTED, OUTSIDE),
    _link_to("fs-etc-passwd", "/etc/passwd"),
    _link_to("fs-etc-shadow", "/etc/shadow"),
    _link_to("fs-proc-environ", "/proc/self/environ"),
    _link_to("fs-dev-zero", "/dev/zero"),
    _link_to("fs-dangling-outside", "/nonexistent-osteo-target/IM1"),
    Case("fs-outside-fifo", _link_to_outside_fifo, REJECTED, OUTSIDE),
    Case("fs-fifo", _fifo, REJECTED, NOT_REGULAR),
    Case("fs-socket", _socket, REJECTED, NOT_REGULAR),
    Case("fs-inside-fifo", _link_to_inside_fifo, REJECTED, NOT_REGULAR),
    Case("fs-dangling", _dangling, REJECTED, UNREADABLE),
    Case("fs-cycle", _cycle, REJECTED, UNREADABLE),
    Case("fs-folder-cycle", _folder_cycle, "ineligible", frozenset({"ineligible:sex"})),
    Case("fs-inside-link", _inside_link, "ineligible", frozenset({"ineligible:sex"})),
]
