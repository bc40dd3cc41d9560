"""``osteo-batch``: the command line's entry point, and how it ends: an exit status and at most one error line.

Errors a user can fix (a wrong flag, a missing path, a locked store, a broken
model folder: a :class:`~osteo_batch.errors.UserError`, or an OS error that
names its fix) print one line starting ``osteo-batch: error:`` and exit with
status 2, without a traceback; anything else is a bug of ours: one line that
says so (exit 1), and the traceback with ``--debug``. Which is which is the
error's class (:func:`osteo_batch.errors.is_user_error`), never a list here.

The commands live by area: :mod:`~osteo_batch.cli.run` (sweep, run, serve,
deploy-shards), :mod:`~osteo_batch.cli.followup` (worklist, refer, outcomes,
report), :mod:`~osteo_batch.cli.models` (train, calibrate, demo, study),
:mod:`~osteo_batch.cli.estimate` (estimate); the grammar is
:mod:`~osteo_batch.cli.parser`. Imports are lazy so that ``--help``, ``sweep``
and ``worklist`` start without loading torch.
"""

from __future__ import annotations

import os
import sys

from osteo_batch.cli.parser import build_parser


class _CleanText:
    """A text stream that drops terminal control characters from everything written to it.

    Why on the stream: whatever a command prints (a site name, a patient ID, an
    outcomes key) may come from a DICOM header, and one InstitutionName holding
    ``ESC [2J`` would clear the operator's screen. Values are cleaned where they
    are made too (:mod:`osteo_batch.text`); this catches every line the CLI
    prints to stdout, whichever code wrote it. Newlines and tabs pass.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, s: str) -> int:
        from osteo_batch.text import clean

        return self._stream.write(clean(s))

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):  # flush, fileno, isatty, buffer, encoding ...
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = sys.stdout
    sys.stdout = out if isinstance(out, _CleanText) else _CleanText(out)
    try:
        return _main(args)
    finally:
        sys.stdout = out


def _main(args) -> int:
    os.umask(0o077)  # everything this command writes is readable by its owner only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("osteo-batch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if args.debug:
            raise
        return _report(e, workdir=getattr(args, "workdir", None))


def _report(e: Exception, *, workdir) -> int:
    """Print the one line for ``e``; its exit status: 2 the user's to fix, 1 a bug of ours."""
    from osteo_batch.disk import os_error_message
    from osteo_batch.errors import OsteoError, is_user_error
    from osteo_batch.text import clean_cell

    disk = os_error_message(e, workdir=workdir)
    if disk:  # a full disk, a read-only or refused folder: the user's to fix, in one line
        print(f"osteo-batch: error: {disk}", file=sys.stderr)
        return 2
    if is_user_error(e):
        line = e.line() if isinstance(e, OsteoError) else str(e)
        print(f"osteo-batch: error: {clean_cell(line)}", file=sys.stderr)
        return 2
    # Our own errors' messages hold no patient data (osteo_batch.errors); a foreign one's
    # message may quote a DICOM value or an archive path, so only its type is shown.
    what = f"{type(e).__name__} ({e.code}): {clean_cell(e.line())}" if isinstance(e, OsteoError) else type(e).__name__
    print(f"osteo-batch: internal error: {what} (rerun with --debug for the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
