"""Run the installed ``osteo-batch`` as a user does, and read its one-line errors (shared by tests across the tree)."""

import re
import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).parent / "osteo-batch")


def cli(*args, cwd=None, timeout=600):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def one_line_error(p):
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and re.match(r"osteo-batch( \w+)?: error: ", lines[0]), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]
