"""Where the project's data files live: ``sql/`` and ``reports/`` at the repository root.

They sit beside the package (the design card keeps SQL and templates out of
Python), so an installed checkout finds them relative to this file. A
deployment that moves them sets ``OSTEO_BATCH_SQL_DIR`` / ``OSTEO_BATCH_REPORTS_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = Path(os.environ.get("OSTEO_BATCH_SQL_DIR", _ROOT / "sql"))
REPORTS_DIR = Path(os.environ.get("OSTEO_BATCH_REPORTS_DIR", _ROOT / "reports"))
