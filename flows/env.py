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
