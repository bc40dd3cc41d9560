"""The hostile suite: files and bad days built to break a night, each with the outcome it must get.

Puts ``tests/`` and ``tests/hostile/`` on ``sys.path`` so the case generators
(``cases``) and ``dicom_factory`` import by name.
"""

import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
for p in (_here, _here.parent):
    if str(p) not in sys.path:
        sys.path.append(str(p))  # after tests/: its conftest stays the one named conftest
