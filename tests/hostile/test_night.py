"""The whole hostile set through one real nightly run, under a memory limit on the whole process tree.

Every case of ``cases_*.py`` is written into one archive (links that leave it
point into a folder beside it). One ``osteo-batch run``, through Prefect's
temporary server, runs in a memory cgroup of 2.5 GiB that holds the run and
everything it starts: the Prefect server, the forkserver, header and decode
workers. The test checks that:

- the run finishes (exit 0) inside the limit;
- every file the cases wrote has exactly one ``instances`` row, with the
  status and reason its case expects, and nothing outside the archive has one;
- nothing planted in a name, ID or accession appears in anything printed
  (stdout, stderr, Prefect's console log) or logged (Prefect's database under
  ``PREFECT_HOME``: flow and task logs, artifacts), or in a run page;
- when the run has ended no process is left in the cgroup.

It prints the figures for the issue's note: files in, rows by status and
reason, peak memory. Run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cases import MARKER, Case, all_cases, planted
from dicom_factory import dataset, write

pytestmark = pytest.mark.slow

LIMIT = int(2.5 * 1024**3)
V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """A memory cgroup (v1 or v2) with a hard limit; processes join it from ``preexec_fn``."""

    def __init__(self, name: str, limit: int):
        if (V1 / "memory.limit_in_bytes").exists() and os.access(V1, os.W_OK):
            self.path, self.v2 = V1 / name, False
        elif "memory" in (V2 / "cgroup.controllers").read_text(errors="ignore").split() and os.access(V2, os.W_OK):
            self.path, self.v2 = V2 / name, True
        else:
            pytest.skip("no writable memory cgroup on this machine (v1 or v2)")
        self.path.mkdir()
        if self.v2:
            (self.path / "memory.max").write_text(str(limit))
            (self.path / "memory.swap.max").write_text("0") if (self.path / "memory.swap.max").exists() else None
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
            sw = self.path / "memory.memsw.limit_in_bytes"
            if sw.exists():
                try:
                    sw.write_text(str(limit))
                except OSError:
                    pass

    def join(self) -> None:  # in the child, before exec
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int:
        f = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / f).read_text())

    def oom_kills(self) -> int:
        if self.v2:
            ev = dict(ln.split() for ln in (self.path / "memory.events").read_text().splitlines())
            return int(ev.get("oom_kill", 0))
        ctl = dict(ln.split() for ln in (self.path / "memory.oom_control").read_text().splitlines())
        return int(ctl.get("oom_kill", 0))

    def procs(self) -> list[int]:
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.2)


def _good(archive: Path, outside: Path) -> list[str]:
    """Six intact images of eligible women, with planted data: they must be scored."""
    out = []
    for i in range(6):
        ds = planted(dataset(sop_instance_uid=f"2.25.{880000 + i}", rows=96, cols=80), f"GOOD{i}")
        write(ds, archive / "good" / f"IM{i}")
        out.append(f"good/IM{i}")
    return out


GOOD = Case("good-images", _good, "scored", None, stage="score")


def _grep_tree(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            if needle in p.name.encode() or needle in p.read_bytes():
                hits.append(str(p.relative_to(root)))
    return hits


def test_the_hostile_set_runs_through_one_night_under_a_memory_limit(tmp_path, tiny_model):
    archive, outside, work = tmp_path / "archive", tmp_path / "outside", tmp_path / "work"
    archive.mkdir()
    outside.mkdir()
    cases = [GOOD, *all_cases()]
    expect: dict[str, Case] = {}
    t0 = time.monotonic()
    for case in cases:
        for rel in case.write(archive, outside):
            assert rel not in expect, f"{case.name} wrote {rel}, which another case wrote"
            expect[rel] = case
    written_s = time.monotonic() - t0
    prefect_home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(prefect_home)
    cg = MemoryCgroup(f"osteo-hostile-{os.getpid()}", LIMIT)
    try:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "osteo_batch.cli", "run", "--archive", str(archive), "--workdir",
                            str(work), "--model", str(tiny_model.model_dir), "--workers", "2"],
                           capture_output=True, text=True, timeout=900, env=env, preexec_fn=cg.join)
        run_s = time.monotonic() - t0
        deadline = time.monotonic() + 15
        while cg.procs() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = cg.procs()
        peak, ooms = cg.peak(), cg.oom_kills()
    finally:
        cg.remove()
    assert r.returncode == 0, r.stderr[-4000:]
    assert ooms == 0, "a process of the run was OOM-killed"
    assert not left, f"processes outlived the run: {left}"

    import duckdb

    con = duckdb.connect(str(work / "osteo.duckdb"), read_only=True)
    rows = con.execute("SELECT path, status, reason FROM instances").fetchall()
    con.close()
    got = {os.path.relpath(p, archive) if not p.startswith("hex:") else p: (s, why) for p, s, why in rows}
    assert len(rows) == len(got), "one row per file"
    missing = sorted(set(expect) - set(got))
    extra = sorted(set(got) - set(expect))
    assert not missing, f"files with no row: {missing[:20]}"
    assert not extra, f"rows for files no case wrote (outside the archive?): {extra[:20]}"
    wrong = []
    for rel, case in expect.items():
        status, why = got[rel]
        if case.status is not None and status != case.status:
            wrong.append((case.name, rel, status, why))
        elif case.reasons is not None and why not in case.reasons:
            wrong.append((case.name, rel, status, why))
        elif status != "scored" and not why:
            wrong.append((case.name, rel, status, "no reason"))
    assert not wrong, f"{len(wrong)} files got another outcome than their case's: {wrong[:20]}"

    printed = r.stdout + r.stderr
    assert MARKER not in printed, "planted patient data was printed: " + next(
        ln for ln in printed.splitlines() if MARKER in ln)[:300]
    assert not _grep_tree(prefect_home, MARKER.encode()), "planted data in Prefect's logs or artifacts"
    assert not _grep_tree(work / "runs", MARKER.encode()) or all(
        p.endswith("study-dates.csv") for p in _grep_tree(work / "runs", MARKER.encode())), "planted data on a run page"
    assert not [p for p in work.rglob("*") if MARKER in p.name], "a work file named with planted data"

    by = Counter((s, why) for s, why in got.values())
    report = {
        "files_in": len(expect), "cases": len(cases), "rows_out": len(rows),
        "by_status_and_reason": {f"{s}:{why or '-'}": n for (s, why), n in sorted(by.items(), key=str)},
        "peak_memory_mib": round(peak / 2**20), "limit_mib": LIMIT // 2**20, "leaks": 0, "orphans": len(left),
        "write_cases_s": round(written_s, 1), "run_s": round(run_s, 1),
    }
    print("\nhostile night:", json.dumps(report, indent=1))
