"""Make text from an archive safe to print, write to a CSV cell or put on a page.

Why: every string that reaches a terminal, a spreadsheet or a browser may have
come from a DICOM header, and a header is written by whoever sent the study.
An InstitutionName holding ``ESC [2J`` clears the operator's terminal, ``ESC ]``
sets its title or hides text, a NUL or a CR lets a CSV reader split a cell, a
BEL rings, a C1 ``CSI`` (U+009B) is an escape introducer on its own on some
terminals, and the Unicode bidi overrides and isolates ("Trojan Source") make a
line read differently from the bytes it holds. Jinja's autoescape handles
``< > &`` but none of these.

:func:`clean` removes them all and keeps ``\\n`` and ``\\t`` (multi-line text
stays multi-line); :func:`clean_cell` also folds ``\\n``, ``\\t`` (and the Unicode
line and paragraph separators) into single spaces, for anything that must stay
on one line: a CSV cell, an HTML table cell, a one-line terminal field.

Both are pure functions: a compiled character class finds out whether there is
anything to do (most values hold nothing: about 0.2 µs for a short one), and
one ``str.translate`` table does it, so they are cheap enough to run on every value.
"""

from __future__ import annotations

import hashlib
import os
import re

__all__ = ["clean", "clean_cell", "csv_cell", "path_hash", "REMOVED"]

#: Code points :func:`clean` removes: C0 controls but ``\t`` and ``\n``, DEL,
#: C1 controls (U+0080–U+009F) and the bidi embeddings/overrides/isolates.
REMOVED: frozenset[int] = frozenset(
    [c for c in range(0x00, 0x20) if c not in (0x09, 0x0A)]
    + [0x7F]
    + list(range(0x80, 0xA0))
    + list(range(0x202A, 0x202F))  # LRE RLE PDF LRO RLO
    + list(range(0x2066, 0x206A))  # LRI RLI FSI PDI
)

_CLEAN = {c: None for c in REMOVED}
# One-line text: tab, newline and the Unicode line/paragraph separators become a space.
_CELL = {**_CLEAN, 0x09: " ", 0x0A: " ", 0x2028: " ", 0x2029: " "}


def _any_of(codes) -> re.Pattern:
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(codes)) + "]")


_FIND_CLEAN = _any_of(_CLEAN)
_FIND_CELL = _any_of(_CELL)


def clean(s: str) -> str:
    """``s`` without the control characters a terminal, CSV reader or browser could act on.

    Keeps ``\\n`` and ``\\t``; removes every other C0 control (NUL, BEL, BS, VT,
    FF, CR, ESC, ...), DEL, the C1 controls U+0080–U+009F and the bidi
    overrides/isolates U+202A–U+202E, U+2066–U+2069.
    """
    return s.translate(_CLEAN) if _FIND_CLEAN.search(s) else s


def clean_cell(s: str) -> str:
    """:func:`clean`, then each ``\\n``, ``\\t``, U+2028 and U+2029 as one space: text for one cell or one line.

    A CR vanishes (it is a C0 control), so ``\\r\\n`` becomes one space too.
    """
    return s.translate(_CELL) if _FIND_CELL.search(s) else s


#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_SIGNS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v: str | None) -> str:
    """A CSV text cell: :func:`clean_cell`, then a leading formula sign quoted with ``'`` so a spreadsheet
    shows the text instead of running it. None is an empty cell.

    Cleaning comes first, so a NUL or ESC cannot hide an ``=`` from the guard.
    """
    v = clean_cell(v or "")
    return "'" + v if v[:1] in FORMULA_SIGNS else v


def path_hash(path: str | os.PathLike) -> str:
    """Short, stable hash of a path for logs and errors: paths can hold names, so a message names this instead."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:12]
