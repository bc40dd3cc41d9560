"""A time limit on one item of work: one header read, one image decoded.

Why per item: a night over millions of files must not stop at one that
blocks (a hung mount, a FIFO swapped in) or decodes forever. The item gets a
rejection with its reason (``read_timeout``, ``decode_timeout``) and the
worker goes on with the next.
"""

from __future__ import annotations

import contextlib


class ItemTimeout(BaseException):
    """One image ran past its time limit.

    A ``BaseException``, like ``KeyboardInterrupt``: it must unwind through
    every ``except Exception`` in pydicom and the pixel pipeline (which would
    turn it into a decoding failure) to reach :meth:`DicomDataset.__getitem__`.
    """


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`ItemTimeout` in this thread if the block runs past ``seconds``.

    SIGALRM from ``ITIMER_REAL``: it interrupts a blocking system call (an
    ``open`` or ``read`` on a hung mount returns EINTR, and Python runs the
    handler) and Python code; C code that never returns to the interpreter
    (a decoder stuck in a loop) is not interrupted until it does. Signals are
    delivered to the main thread only, so elsewhere (``workers=0`` under a
    threaded caller) and when a timer is already running (the caller's own
    limit, which is left alone) the block runs unbounded. DataLoader workers
    run items in their main thread.
    """
    import signal
    import threading

    if (not seconds or seconds <= 0 or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield
        return

    armed = [True]  # raise at most once, and never once the block is over (a late signal is ignored)

    def expired(signum, frame):
        if armed[0]:
            armed[0] = False
            raise ItemTimeout(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
