"""One family of errors: each carries a stable ``code`` and the ``fix``, and its class says whose it is.

Why a family and not a list: the command line must tell a failure the user
can fix (a setting, a file, a held store: one line, exit 2, never retried by
Prefect) from a bug (a traceback with ``--debug``, exit 1). A hand-kept list
of exception types drifted: plain ``ValueError``s a user could fix were shown
as internal errors. Now the class decides: a :class:`UserError` is the user's,
anything else is ours.

Messages never hold patient data: they name a file by
:func:`osteo_batch.text.path_hash` or by its name in the work folder, a
setting by its key, a DICOM attribute by its keyword.
"""

from __future__ import annotations


class OsteoError(Exception):
    """Base of every error osteo-batch raises on purpose.

    ``code`` is stable (snake_case), for scripts and for the docs; ``fix`` says
    what to do, when the message alone does not. ``str(e)`` is the message;
    :meth:`line` is what the command line prints.
    """

    code: str = "error"
    fix: str = ""

    def __init__(self, message: str = "", *, code: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if fix is not None:
            self.fix = fix

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def line(self) -> str:
        """One line: the message, then the fix when the message does not already say it."""
        msg = self.message or self.code.replace("_", " ")
        if self.fix and self.fix not in msg:
            msg = f"{msg}; {self.fix}"
        return " ".join(msg.split())


class UserError(OsteoError):
    """Something the user fixes: bad input, a missing file, a held store. One line, exit 2."""

    code = "user_error"


class InternalError(OsteoError):
    """A broken promise inside osteo-batch: a bug to report. A traceback with ``--debug``."""

    code = "internal_error"


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is the user's to fix (:class:`UserError`), or an OS error that names a fix.

    The OS errors are the ones a user fixes and no code of ours raised: a file
    or folder not found or not permitted, a full disk, a read-only folder.
    """
    if isinstance(e, UserError):
        return True
    if isinstance(e, OsteoError):
        return False
    from osteo_batch.disk import os_error_message

    return isinstance(e, (FileNotFoundError, NotADirectoryError, PermissionError)) or os_error_message(e) is not None
