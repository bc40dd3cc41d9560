"""Where the project's data files live: the SQL and the templates, shipped inside the package.

The repository keeps them at its top level (``sql/``, ``reports/``, as the
design card fixes: SQL and templates stay out of Python); ``pyproject.toml``
maps them to ``osteo_batch.sql`` and ``osteo_batch.reports``, so a wheel, a
container image and an editable checkout find them the same way, through
:mod:`importlib.resources`. A deployment that keeps its own copies sets
``OSTEO_BATCH_SQL_DIR`` / ``OSTEO_BATCH_REPORTS_DIR``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def _folder(package: str, env: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env])
    # Both the wheel and the editable install (setuptools' package-dir map)
    # resolve these packages to real folders, so a plain Path serves.
    return Path(str(resources.files(package)))


SQL_DIR = _folder("osteo_batch.sql", "OSTEO_BATCH_SQL_DIR")
REPORTS_DIR = _folder("osteo_batch.reports", "OSTEO_BATCH_REPORTS_DIR")
