"""The hostile set: every case a committed generator, each with the outcome it must get.

A :class:`Case` writes its file(s) into an archive folder (and, for links that
leave the archive, into a folder outside it) and says what the night must
record for each file it wrote: one ``instances`` row with this status and one
of these reasons. Cases live in ``cases_*.py`` modules by what they attack
(headers, pixels, the file system); :func:`all_cases` gathers them.

Every DICOM case carries planted data (:func:`planted`): a patient name, ID,
birth date, accession number and institution that hold a marker token. The
standing test (``test_night.py``) greps everything the run printed or logged
for those tokens: any hit is a leak.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: Every planted value contains this marker; nothing printed or logged may.
MARKER = "ZQXPLANT"


@dataclass(frozen=True)
class Case:
    name: str  # unique, [a-z0-9-]+
    #: (archive_dir, outside_dir) -> paths, relative to archive_dir, of the files it wrote there
    #: (each must get one instances row; a case may also plant files in outside_dir, which must get none)
    write: Callable[[Path, Path], list[str]]
    status: str | None  # expected status of each file (None: any status, e.g. random mutants)
    reasons: frozenset[str] | None = None  # the reason must be one of these (None: any, or none when scored)
    stage: str = "sweep"  # where the outcome is decided: "sweep" (headers) or "score" (pixels)


def planted(ds, token: str):
    """Put planted patient data, marked with ``MARKER`` and ``token``, into dataset ``ds`` (in place)."""
    tag = f"{MARKER}{token}"
    ds.PatientName = f"{tag}^Jane"
    ds.PatientID = f"PID{tag}"[:64]
    ds.AccessionNumber = f"A{tag}"[:16]
    ds.InstitutionName = f"Hospital {tag}"
    ds.PatientBirthDate = "19580214"
    return ds


def all_cases() -> list[Case]:
    """Every case of every ``cases_*`` module beside this one (each module has ``CASES: list[Case]``)."""
    here = Path(__file__).resolve().parent
    out: list[Case] = []
    for m in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if m.name.startswith("cases_"):
            out.extend(importlib.import_module(m.name).CASES)
    names = [c.name for c in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"hostile case names must be unique: {sorted(dupes)}")
    return out
