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

PRELOAD = ["numpy", "PIL.Image", "pydicom", "torch", "osteo_batch.tensors", "osteo_batch.dicom.headers"]


def context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server first starts
    return ctx
