"""Worker processes for header reading and DICOM decoding: one forkserver, preloaded.

Why forkserver: the parent may hold threads (Prefect's event loop, torch's
thread pools), which plain ``fork`` copies in an unsafe state. Why preload:
each DataLoader worker otherwise imports torch and pydicom itself, seconds per
worker at every start; with the modules loaded once in the server, workers
fork ready. The server is a separate process, so the parent (a sweep, say)
still never imports torch itself.
"""

from __future__ import annotations

import multiprocessing

PRELOAD = ["numpy", "PIL.Image", "pydicom", "torch", "glymur", "osteo_batch.scoring.tensors", "osteo_batch.dicom.headers",
           "osteo_batch.dicom.quiet"]


def context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server first starts
    return ctx


def watch_parent(pid: int, *_: object) -> None:
    """In a worker: exit as soon as process ``pid`` (the run that started us) is gone.

    Why: a worker forked by the forkserver is the server's child, not the
    run's, and it holds the server's liveness pipe open. When the run is
    SIGKILLed, neither DataLoader's parent check nor the server's own EOF
    check fires, and the workers would wait on their queues forever, each
    holding torch in memory. A daemon thread polling the run's PID ends them
    within a second. Use as ``worker_init_fn`` (DataLoader) or
    ``initializer`` (ProcessPoolExecutor).

    It also silences pydicom in the worker (:func:`osteo_batch.dicom.quiet.silence_pydicom`):
    every worker reads DICOM, and pydicom's warnings quote header values
    (patient names among them) to the worker's stderr, which is the run's.
    """
    import os
    import threading
    import time

    from osteo_batch.dicom.quiet import silence_pydicom

    silence_pydicom()

    def check() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # alive, another user's (cannot happen for our own run)
                pass

    threading.Thread(target=check, name="osteo-parent-watch", daemon=True).start()
