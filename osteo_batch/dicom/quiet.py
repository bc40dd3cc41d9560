"""Keep pydicom from printing header values: its warnings quote them, and headers hold patient data.

Why: pydicom reports a damaged value by quoting it ("Invalid value for VR UI:
'2.25.1001\\x00...Jane'"), through :mod:`warnings` and through the
``pydicom`` logger, and either can reach a console, a log file or Prefect's
log handler. A damaged UID that ran into Patient Name prints the name. So
every process that reads DICOM calls :func:`silence_pydicom` (the header
reader and the pixel reader do it themselves; worker processes get it from
``osteo_batch.workers.watch_parent``), and every read runs inside
:func:`reading`, which records what pydicom warns (to be counted, never
shown). Damaged values are counted instead of printed: see
``osteo_batch.dicom.headers`` (``header_issues``).

This is process-wide configuration by design (pydicom's settings are
global); :func:`silence_pydicom` is idempotent and cheap once applied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

#: Warnings issued from these modules are dropped outside :func:`reading` too.
_MODULES = r"pydicom(\..*)?$"
_QUIET_LEVEL = logging.CRITICAL + 10


def _filter_present() -> bool:
    for action, _message, _category, module, _lineno in warnings.filters:
        if action == "ignore" and module is not None and getattr(module, "pattern", None) == _MODULES:
            return True
    return False


def silence_pydicom() -> None:
    """Make pydicom quiet in this process: no validation on read, no warnings shown, no log records.

    - ``reading_validation_mode = IGNORE``: values are not validated (and so
      not quoted) while a file is read or a value converted; the header reader
      validates them itself and counts what fails.
    - a warnings filter for everything pydicom's modules warn;
    - the ``pydicom`` logger drops every record (level above CRITICAL, a
      NullHandler, no propagation), whatever handlers the host (Prefect) adds
      to the root logger.
    """
    import pydicom.config as config

    if config.settings.reading_validation_mode != config.IGNORE:
        config.settings.reading_validation_mode = config.IGNORE
    if not _filter_present():
        warnings.filterwarnings("ignore", module=_MODULES)
    log = logging.getLogger("pydicom")
    if log.level != _QUIET_LEVEL:
        log.setLevel(_QUIET_LEVEL)
    log.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())


@contextlib.contextmanager
def reading() -> Iterator[list[warnings.WarningMessage]]:
    """Silence pydicom and record every warning raised inside the block (nothing is shown).

    The list it yields holds the recorded warnings, to count with
    :func:`pydicom_warnings`; their messages may quote patient data, so never
    print or log them.
    """
    silence_pydicom()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def pydicom_warnings(caught: list[warnings.WarningMessage]) -> int:
    """How many of ``caught`` pydicom raised (what it found wrong while reading)."""
    marker = os.sep + "pydicom" + os.sep
    return sum(1 for w in caught if marker in (w.filename or ""))
