"""Environment for running Prefect offline; call before importing prefect.

Why: hospitals run air-gapped. Without these settings Prefect's ephemeral
server tries to send telemetry (and logs errors when it cannot), and its 20 s
start-up timeout is too short on a loaded 2-core machine. Values already set
by the user win, so a site with a real Prefect server keeps its PREFECT_API_URL.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_ENABLED": "false",
    # the library's own loggers (per-shard progress) in the flow run's logs
    "PREFECT_LOGGING_EXTRA_LOGGERS": "osteo_batch",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # library calls outside a flow run
    # nothing may download weights at run time
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def configure(workdir: str | os.PathLike | None = None) -> None:
    for k, v in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(k, v)
    if workdir is not None and "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        home = Path(workdir).resolve() / ".prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        os.environ["PREFECT_HOME"] = str(home)


def library_logs(level: int = 20) -> None:
    """Let the library's INFO lines (per-shard progress) through to the flow run's logs.

    Prefect copies its handlers to the extra loggers but not a level, so
    ``osteo_batch`` would inherit the root logger's WARNING and drop them.
    A level the user set already is kept.
    """
    import logging

    lib = logging.getLogger("osteo_batch")
    if lib.level == logging.NOTSET:
        lib.setLevel(level)


def _die_with_parent(parent: int) -> None:
    """In the server's child process, before exec: SIGKILL it when its parent dies.

    ``PR_SET_PDEATHSIG`` survives ``exec`` and fires when the thread that
    started the child ends, so the server must be started from the main thread
    (as :func:`tie_ephemeral_server` does). If the parent died already, exit.
    """
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def tie_ephemeral_server():
    """Start Prefect's temporary API server now, tied to this process's life; None if not used.

    Why: Prefect starts its temporary (ephemeral) server lazily and stops it
    only from ``atexit``, which a SIGKILL, an OOM kill or a container stop
    never runs; each killed run left a uvicorn process of about 200 MB on
    loopback. Started here, from the main thread, the server gets
    ``PR_SET_PDEATHSIG`` = SIGKILL: the kernel ends it with the run, however
    the run ends, the same way the decode workers watch the run's PID.
    Prefect's own later calls find this server running and use it. A site
    that points ``PREFECT_API_URL`` at its own server is left alone.
    """
    import threading

    if os.environ.get("PREFECT_API_URL") or threading.current_thread() is not threading.main_thread():
        return None
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    import functools
    import subprocess

    from prefect.server.api import server as prefect_server

    server = prefect_server.SubprocessASGIServer()  # the instance Prefect's clients use (port None)
    if server.running:
        return server
    run_uvicorn = server._run_uvicorn_command

    def tied() -> "subprocess.Popen":
        popen = subprocess.Popen
        subprocess.Popen = functools.partial(popen, preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        try:
            return run_uvicorn()
        finally:
            subprocess.Popen = popen

    server._run_uvicorn_command = tied
    server.start()
    return server
