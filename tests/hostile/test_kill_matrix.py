"""SIGKILL at each stage of a real nightly run, then the next run: exactly-once scores, no orphans.

One work folder, one archive, one model. A run of the real CLI (through
Prefect's temporary server, which must die with it) is killed at the sweep,
then the next at the score stage, the next at the heat maps and the next at
the worklist; a last run completes. After each kill, every process the run had
started (the Prefect server, the forkserver, decode and header workers) must
be gone within seconds; at the end every eligible image has exactly one score
per model, every file one row, and the killed runs are marked
``ended_abnormally``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osteo_batch.store import Store

from dicom_factory import dataset, ramp

pytestmark = pytest.mark.slow


def _children() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(d)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(pid: int) -> set[int]:
    parents = _children()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier and c not in found}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _run(work: Path, archive: Path, model: Path, config: Path, *, prefect: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "osteo_batch.cli", "run", "--archive", str(archive), "--workdir", str(work),
           "--model", str(model), "--config", str(config), "--workers", "2"]
    if not prefect:
        cmd.append("--no-prefect")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(work.parent / "prefect-home")  # the CLI's own temporary server, not the test harness
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> set[int]:
    """SIGKILL ``proc`` once ``ready()`` holds; returns the processes it had started."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{what} never happened")
        time.sleep(0.05)
    tree = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()  # a survivor may hold the pipes: the orphan check names it
    proc.stderr.close()
    return tree


def _assert_no_orphans(tree: set[int], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.2)
    left = {p: _cmdline(p)[:120] for p in tree if alive(p)}
    assert not left, f"killed at {what}, these processes outlived the run: {left}"


def _bulk(folder: Path, n: int) -> None:
    """``n`` tiny images of men: read by the sweep, never scored."""
    ds = dataset(ramp(8, 8), rows=8, cols=8, sex="M")
    for i in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.{7 * 10**12 + i}"
        p = folder / f"d{i % 50:02d}" / f"IM{i:06d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(p, enforce_file_format=True)


def _files(d: Path, pattern: str) -> list[Path]:
    return list(d.glob(pattern)) if d.is_dir() else []


def test_sigkill_at_each_stage_then_rerun_scores_each_image_once_and_leaves_no_process(tmp_path, cohort_dir,
                                                                                         tiny_model):
    archive = tmp_path / "archive"
    shutil.copytree(cohort_dir.archive, archive)
    _bulk(archive / "bulk", 2500)  # a sweep long enough to be killed in
    work = tmp_path / "work"
    config = tmp_path / "osteo.toml"
    config.write_text("[run]\ncommit_every = 4\nbatch_size = 4\nstore_wait_s = 5\n")
    model = tiny_model.model_dir

    def running_run_id() -> bool:
        lock = work / "run.lock"
        return lock.is_file() and lock.stat().st_size > 0

    # 1. the sweep, through Prefect: its temporary server must not outlive the run
    p = _run(work, archive, model, config, prefect=True)
    server = []

    def sweeping() -> bool:
        server[:] = [c for c in descendants(p.pid) if "uvicorn" in _cmdline(c)]
        if not (running_run_id() and server and (work / "osteo.duckdb").exists()):
            return False
        sweeping.since = getattr(sweeping, "since", None) or time.monotonic()
        return time.monotonic() - sweeping.since > 1.5  # the run is recorded and its sweep under way

    tree = _kill_when(p, sweeping, "the sweep")
    assert set(server) <= tree, "the Prefect server was one of the run's processes"
    _assert_no_orphans(tree, "the sweep")
    assert not _files(work / "scores" / "plans", "*.parquet"), "the kill came before the score stage"

    # 2. the score stage, after some part files are written
    p = _run(work, archive, model, config, prefect=False)
    tree = _kill_when(p, lambda: len(_files(work / "scores", "run_date=*/*.parquet")) >= 2, "scoring")
    _assert_no_orphans(tree, "scoring")

    # 3. the heat maps
    p = _run(work, archive, model, config, prefect=False)
    tree = _kill_when(p, lambda: bool(_files(work / "heatmaps", "**/*.png")), "the heat maps")
    _assert_no_orphans(tree, "the heat maps")

    # 4. the worklist
    p = _run(work, archive, model, config, prefect=False)
    tree = _kill_when(p, lambda: bool(_files(work / "worklists", "*.html")) or bool(_files(work, "worklist*.html")),
                      "the worklist")
    _assert_no_orphans(tree, "the worklist")

    # 5. a run that finishes
    p = _run(work, archive, model, config, prefect=False)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]

    with Store(work / "osteo.duckdb", read_only=True) as st:
        q = lambda s: st.con.execute(s).fetchall()  # noqa: E731
        n_scores, n_distinct = q("SELECT count(*), count(DISTINCT (sop_instance_uid, model_id)) FROM scores")[0]
        statuses = dict(q("SELECT status, count(*) FROM instances GROUP BY 1"))
        n_files = q("SELECT count(*) FROM instances")[0][0]
        runs = dict(q("SELECT status, count(*) FROM runs WHERE kind = 'nightly' GROUP BY 1"))
        scored_without_score = q("SELECT count(*) FROM instances i WHERE status = 'scored' AND NOT EXISTS "
                                 "(SELECT 1 FROM scores s WHERE s.sop_instance_uid = i.sop_instance_uid)")[0][0]
    assert n_scores == n_distinct, "an image was scored twice for one model"
    assert n_files == sum(1 for f in archive.rglob("*") if f.is_file())
    assert statuses.get("pending", 0) == 0 and statuses["scored"] >= 40 and statuses["ineligible"] >= 2500
    assert scored_without_score == 0
    assert runs.get("ended_abnormally") == 4 and runs.get("finished") == 1, runs
    assert "running" not in runs
