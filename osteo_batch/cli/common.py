"""What every command shares: its one user-facing error type and its progress lines on stderr."""

from __future__ import annotations

import sys

from osteo_batch.errors import UserError


class CliError(UserError):
    """A usage error the command line itself finds (two flags that do not mix, too few pairs): one line, exit 2.

    ``code`` says which, for scripts: ``bad_usage`` unless the raise names another.
    """

    code = "bad_usage"


def say(msg: str) -> None:
    """A progress line on stderr, so stdout keeps only results; control characters dropped."""
    from osteo_batch.text import clean

    print(clean(msg), file=sys.stderr, flush=True)


def source_args(args) -> dict:
    """The source flags (``--archive`` or ``--pacs`` with ``--since``, ``--calling-aet``) as load_settings overrides."""
    return {"archive": getattr(args, "archive", None), "pacs_url": getattr(args, "pacs", None),
            "since": getattr(args, "since", None), "calling_aet": getattr(args, "calling_aet", None)}


def need_source(settings) -> None:
    """A one-line error when neither a flag nor the config file names the archive."""
    if settings.archive is None and settings.pacs is None:
        raise CliError("an archive is required: give --archive DIR or --pacs URL (or [archive] path or [pacs] url in --config)",
                       code="no_archive")
