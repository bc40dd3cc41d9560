"""Bad days for the work folder: a full disk, a read-only mount, a store held by another process.

Each fault is real: the work folder is a small ``tmpfs`` mount (filled to the
last byte by a filler file right before the stage under test, or remounted
read-only), and the store is held by another process with ``duckdb.connect``.
The commands are the real CLI in subprocesses. For each fault the command
must end with exit 2 and one error line that names the folder (no traceback,
no "internal error"); once the fault is gone the next run must complete with
every file accounted for exactly once, and no referral action may be lost.

To reach a stage exactly, the faulty command runs the CLI's ``main`` through
:data:`WRAP`, which fills the disk (or holds the store) just before that
stage function (or that Parquet write) and changes nothing else.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from osteo_batch.store import Store

REPO = Path(__file__).resolve().parents[1]
HOLD = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])       # another writer: a nightly run, a notebook
    print("held", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 120)
""")

#: python -c WRAP FAULT WHERE TARGET CLI-ARGS...: FAULT "fill" (fill the disk holding TARGET with the file
#: TARGET) or "hold" (hold the store TARGET); WHERE a stage name, or "write:N" (the N-th Parquet write).
WRAP = f"HOLD = {HOLD!r}\nHERE = {str(Path(__file__).resolve().parent)!r}\n" + textwrap.dedent("""
    import subprocess, sys
    from pathlib import Path
    sys.path.insert(0, HERE)
    from test_disk import fill as fill_file  # the same filler the tests use in-process
    from osteo_batch import cli, pipeline
    from osteo_batch.scoring import score as scoring
    fault, where, target, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    holders = []

    def fill():
        fill_file(Path(target))

    def hold():
        p = subprocess.Popen([sys.executable, "-c", HOLD, target], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        holders.append(p)

    act = {"fill": fill, "hold": hold}[fault]
    if where.startswith("write:"):
        n, calls, write = int(where[6:]), [0], scoring._write_atomic
        def faulty_write(table, final):
            calls[0] += 1
            if calls[0] == n:
                act()
            return write(table, final)
        scoring._write_atomic = faulty_write
    else:
        stage = pipeline.STAGES[where]
        def faulty_stage(*a, **kw):
            act()
            return stage(*a, **kw)
        pipeline.STAGES[where] = faulty_stage
    try:
        rc = cli.main(argv)
    finally:
        for p in holders:
            p.kill()
            p.wait()
    sys.exit(rc)
""")


# ------------------------------------------------------------------ mounts


class Mounts:
    """tmpfs mounts made by a test, always unmounted after it."""

    def __init__(self):
        self.made: list[Path] = []

    def tmpfs(self, path: Path, size_kb: int = 65536, *, ro: bool = False) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size_kb}k,mode=0700" + (",ro" if ro else "")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({p.stderr.strip() or p.returncode}); these tests "
                        "need root on a machine that allows mounts (CI and the dev machine do)")
        self.made.append(path)
        return path

    @staticmethod
    def remount(path: Path, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)

    def unmount_all(self) -> None:
        for path in reversed(self.made):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach it anyway
        self.made.clear()


@pytest.fixture
def mounts():
    m = Mounts()
    try:
        yield m
    finally:
        m.unmount_all()


# ------------------------------------------------------------------ running the CLI


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Ten files: six eligible images, a man's image, a text file, an empty file and a truncated image."""
    from dicom_factory import dataset, write, write_many

    a = tmp_path_factory.mktemp("faults") / "archive"
    images = write_many(a, 6, rows=64, cols=64)
    write(dataset(sex="M", sop_instance_uid="2.25.77", patient_id="M1"), a / "men" / "IM1")
    (a / "notes.txt").write_text("not an image")
    (a / "empty").write_bytes(b"")
    raw = images[0].read_bytes()
    (a / "trunc").write_bytes(raw[: len(raw) // 2])
    return a


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    e["XDG_STATE_HOME"] = str(tmp_path / "state")  # this user's fallback queue: in the test's folder
    e["PYTHONPATH"] = str(REPO)
    return e


def config(tmp_path: Path) -> Path:
    c = tmp_path / "faults.toml"
    # a low threshold flags every image, so the heat maps and the worklist have work to do
    c.write_text("[run]\nstore_wait_s = 1\ncommit_every = 2\nbatch_size = 2\nworkers = 0\nthreshold = 0.05\n")
    return c


def cli(env, *args, wrap: tuple[str, str, Path] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    pre = ["-c", WRAP, wrap[0], wrap[1], str(wrap[2])] if wrap else ["-m", "osteo_batch.cli"]
    return subprocess.run([sys.executable, *pre, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def run(env, work, archive, model, cfg, *, wrap=None):
    return cli(env, "run", "--no-prefect", "--archive", archive, "--workdir", work, "--model", model, "--config", cfg,
               wrap=wrap)


def refer(env, work, pid, status, note="", *, wait="1"):
    return cli(env, "refer", pid, "--status", status, "--note", note, "--by", "coord", "--wait", wait,
               "--workdir", work)


def one_error_line(p: subprocess.CompletedProcess, *must_name: str) -> str:
    """The single ``osteo-batch: error:`` line of a command that failed the user's way (exit 2)."""
    assert p.returncode == 2, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("osteo-batch: error: "), p.stderr
    for s in must_name:
        assert s in errors[0], (s, errors[0])
    return errors[0]


def fill(path: Path) -> Path:
    """Fill the file system holding ``path`` to the last byte with the file ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 14, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return path


# ------------------------------------------------------------------ what must hold after


def archive_files(archive: Path) -> int:
    return sum(1 for p in archive.rglob("*") if p.is_file())


def accounted_for(work: Path, archive: Path, model_id: str) -> dict:
    """Every file one row, statuses summing to the files, one score per (image, model), nothing pending."""
    with Store(work / "osteo.duckdb", read_only=True) as st:
        q = lambda s: st.con.execute(s).fetchall()  # noqa: E731
        rows, distinct = q("SELECT count(*), count(DISTINCT path) FROM instances")[0]
        by_status = dict(q("SELECT status, count(*) FROM instances GROUP BY status"))
        scores, keys = q("SELECT count(*), count(DISTINCT (sop_instance_uid, model_id)) FROM scores")[0]
        scored_uids = q("SELECT count(DISTINCT sop_instance_uid) FROM instances WHERE status = 'scored'")[0][0]
        with_score = q(f"SELECT count(DISTINCT sop_instance_uid) FROM scores WHERE model_id = '{model_id}'")[0][0]
        finished = q("SELECT count(*) FROM runs WHERE status = 'finished' AND kind = 'nightly'")[0][0]
    n = archive_files(archive)
    assert rows == distinct == n == sum(by_status.values()), (rows, distinct, n, by_status)
    assert scores == keys and scored_uids == with_score > 0, (scores, keys, scored_uids, with_score)
    assert by_status.get("pending", 0) == 0, by_status
    assert finished >= 1
    return by_status


def referrals_in(work: Path) -> list[tuple]:
    with Store(work / "osteo.duckdb", read_only=True) as st:
        return st.con.execute("SELECT patient_id, status, note FROM referrals ORDER BY patient_id, note").fetchall()


def some_patients(work: Path, n: int) -> list[str]:
    with Store(work / "osteo.duckdb", read_only=True) as st:
        return [r[0] for r in st.con.execute(
            "SELECT DISTINCT patient_id FROM instances WHERE status = 'scored' ORDER BY 1 LIMIT ?", [n]).fetchall()]


@pytest.fixture(scope="module")
def finished_work(archive, tiny_model, tmp_path_factory) -> Path:
    """A work folder after one complete run (copied into each test's mount)."""
    root = tmp_path_factory.mktemp("finished")
    e = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    e["XDG_STATE_HOME"] = str(root / "state")
    p = run(e, root / "work", archive, tiny_model.model_dir, config(root))
    assert p.returncode == 0, p.stderr
    return root / "work"


def copy_work(src: Path, dst: Path) -> Path:
    """Copy a work folder's contents into ``dst`` (a mount point), keeping modes."""
    for p in src.iterdir():
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, dst / p.name)
    return dst


# ------------------------------------------------------------------ disk full


@pytest.mark.slow
@pytest.mark.parametrize("where,names", [
    ("sweep", ""),          # DuckDB's writes of the header index
    ("write:3", ""),        # the second Parquet score part (the plan and one part are on disk)
    ("worklist", "worklists"),  # the worklist's HTML and CSV
])
def test_disk_full_at_a_stage_then_the_next_run_completes(where, names, mounts, archive, tiny_model, tmp_path, env):
    work = mounts.tmpfs(tmp_path / "work")
    cfg = config(tmp_path)
    filler = work / "filler"
    p = run(env, work, archive, tiny_model.model_dir, cfg, wrap=("fill", where, filler))
    line = one_error_line(p, str(work / names) if names else str(work), "(ENOSPC)", "free space there")
    assert "Nothing from this run is lost" in line
    filler.unlink()  # space freed
    p = run(env, work, archive, tiny_model.model_dir, cfg)
    assert p.returncode == 0, p.stderr
    accounted_for(work, archive, tiny_model.model_id)
    assert not list((work / "scores").rglob("*.tmp")), "no half-written part is left or loaded"


def test_disk_full_during_refer_queues_the_action_and_the_next_command_records_it(
        mounts, finished_work, tmp_path, env):
    """The store cannot take the action; the queue (another file system here) can."""
    work = copy_work(finished_work, mounts.tmpfs(tmp_path / "work"))
    mounts.tmpfs(work / "referral-queue", 1024)
    pid, pid2 = some_patients(work, 2)
    filler = fill(work / "filler")
    p = refer(env, work, pid, "referred", "full disk")
    one_error_line(p, str(work), "(ENOSPC)")
    assert p.stdout.startswith("queued: the store could not be written"), p.stdout
    assert len(list((work / "referral-queue").glob("*.json"))) == 1
    assert referrals_in(work) == []
    filler.unlink()
    p = refer(env, work, pid2, "contacted", "after")
    assert p.returncode == 0 and "also recorded 1 earlier change(s)" in p.stdout, p.stdout + p.stderr
    assert referrals_in(work) == sorted([(pid, "referred", "full disk"), (pid2, "contacted", "after")])


def test_disk_full_for_store_and_queue_keeps_the_action_in_the_fallback_queue(mounts, finished_work, tmp_path, env):
    work = copy_work(finished_work, mounts.tmpfs(tmp_path / "work"))
    pid, pid2 = some_patients(work, 2)
    filler = fill(work / "filler")
    p = refer(env, work, pid, "declined", "no room anywhere")
    line = one_error_line(p, str(work), "(ENOSPC)", str(tmp_path / "state"))
    assert pid not in line, "no patient data on stderr"
    action = json.loads(p.stdout.splitlines()[-1])["action"]
    assert action["patient_id"] == pid and action["status"] == "declined"
    saved = list((tmp_path / "state" / "osteo-batch" / "referral-queue").rglob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["event_id"] == action["event_id"]
    assert referrals_in(work) == []
    filler.unlink()
    p = refer(env, work, pid2, "contacted")
    assert p.returncode == 0 and "also recorded 1 earlier change(s)" in p.stdout, p.stdout + p.stderr
    assert [r[:2] for r in referrals_in(work)] == sorted([(pid, "declined"), (pid2, "contacted")])
    assert not list((tmp_path / "state").rglob("*.json")), "recorded once, then removed"


def test_an_action_that_fits_nowhere_is_printed_with_the_command_to_enter_it(mounts, finished_work, tmp_path, env):
    work = copy_work(finished_work, mounts.tmpfs(tmp_path / "work"))
    pid = some_patients(work, 1)[0]
    state = mounts.tmpfs(tmp_path / "state", 64)
    fill(state / "filler")
    filler = fill(work / "filler")
    p = refer(env, work, pid, "unreachable", "three calls")
    one_error_line(p, str(work), "(ENOSPC)", "saved nowhere")
    assert "NOT SAVED" in p.stdout
    command = next(line.strip() for line in p.stdout.splitlines() if line.strip().startswith("osteo-batch refer"))
    assert json.loads(p.stdout.splitlines()[-1])["action"]["note"] == "three calls"
    filler.unlink()
    import shlex

    argv = shlex.split(command)[1:]
    again = cli(env, *argv)
    assert again.returncode == 0, again.stderr
    assert referrals_in(work) == [(pid, "unreachable", "three calls")]


# ------------------------------------------------------------------ read-only


@pytest.fixture
def read_only_work(mounts, finished_work, tmp_path) -> Path:
    """A finished work folder on its own mount, remounted read-only (the test makes it writable again)."""
    work = copy_work(finished_work, mounts.tmpfs(tmp_path / "work"))
    mounts.remount(work, "ro")
    return work


@pytest.mark.slow
def test_read_only_work_folder_for_run(read_only_work, mounts, archive, tiny_model, tmp_path, env):
    work, cfg = read_only_work, config(tmp_path)
    one_error_line(run(env, work, archive, tiny_model.model_dir, cfg), str(work), "(EROFS)", "read-write")
    pid = some_patients(work, 1)[0]
    one_error_line(refer(env, work, pid, "referred", "read-only day"), "(EROFS)")  # to the fallback queue
    mounts.remount(work, "rw")
    p = run(env, work, archive, tiny_model.model_dir, cfg)
    assert p.returncode == 0, p.stderr
    accounted_for(work, archive, tiny_model.model_id)
    assert referrals_in(work) == [(pid, "referred", "read-only day")], "the run (same user) recorded it"


@pytest.mark.slow
def test_read_only_work_folder_for_worklist(read_only_work, mounts, env):
    work = read_only_work
    one_error_line(cli(env, "worklist", "--workdir", work), str(work / "worklists"), "(EROFS)", "read-write")
    mounts.remount(work, "rw")
    p = cli(env, "worklist", "--workdir", work)
    assert p.returncode == 0 and "worklist: " in p.stdout, p.stderr


def test_read_only_work_folder_for_refer_keeps_the_action_for_the_next_refer(read_only_work, mounts, tmp_path, env):
    work = read_only_work
    pid, pid2 = some_patients(work, 2)
    p = refer(env, work, pid, "referred", "read-only day")
    line = one_error_line(p, str(work), "(EROFS)", str(tmp_path / "state"))
    assert pid not in line and p.stdout.startswith("saved outside the work folder"), p.stdout
    mounts.remount(work, "rw")
    p = refer(env, work, pid2, "contacted", "next day")
    assert p.returncode == 0 and "also recorded 1 earlier change(s)" in p.stdout, p.stdout + p.stderr
    assert referrals_in(work) == sorted([(pid, "referred", "read-only day"), (pid2, "contacted", "next day")])


# ------------------------------------------------------------------ the store held by another process


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sweep", "score", "explain", "worklist"])
def test_store_held_at_a_stage_fails_in_one_line_and_the_next_run_completes(
        stage, archive, tiny_model, tmp_path, env):
    work = tmp_path / "work"
    cfg = config(tmp_path)
    p = run(env, work, archive, tiny_model.model_dir, cfg, wrap=("hold", stage, work / "osteo.duckdb"))
    one_error_line(p, str(work / "osteo.duckdb"), "in use by another process")
    p = run(env, work, archive, tiny_model.model_dir, cfg)
    assert p.returncode == 0, p.stderr
    accounted_for(work, archive, tiny_model.model_id)


@pytest.mark.slow
def test_refer_while_the_store_is_held_queues_and_the_next_run_records_it(finished_work, archive, tiny_model,
                                                                          tmp_path, env):
    work = tmp_path / "work"
    shutil.copytree(finished_work, work)
    pids = some_patients(work, 2)
    q = work / "referral-queue"
    q.mkdir(exist_ok=True)
    (q / "20261125T100000000000-0bad.json").write_text('{"patient_id": "ZQXPLANT"')  # and one broken file
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work / "osteo.duckdb"), "60"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        outs = [refer(env, work, pid, "contacted", "held") for pid in pids]
        p = run(env, work, archive, tiny_model.model_dir, config(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    assert all(o.returncode == 0 and o.stdout.startswith("queued: the store is held") for o in outs)
    one_error_line(p, "in use by another process")
    p = run(env, work, archive, tiny_model.model_dir, config(tmp_path))
    assert p.returncode == 0, p.stderr
    assert [r[:2] for r in referrals_in(work)] == sorted((pid, "contacted") for pid in pids)
    assert (q / "quarantine" / "20261125T100000000000-0bad.json").is_file()
    assert "ZQXPLANT" not in p.stdout + p.stderr
    accounted_for(work, archive, tiny_model.model_id)


# ------------------------------------------------------------------ the message itself


def test_the_message_names_work_folders_only_and_is_a_user_error(tmp_path):
    from osteo_batch.disk import os_error_message
    from osteo_batch.pipeline import is_user_error

    work = tmp_path / "work"
    (work / "scores").mkdir(parents=True)
    archive_file = str(tmp_path / "archive" / "DOE^JANE" / "IM1")
    msg = os_error_message(PermissionError(errno.EACCES, "Permission denied", archive_file), workdir=work)
    assert "DOE^JANE" not in msg and "path hash" in msg and "(EACCES)" in msg
    msg = os_error_message(OSError(errno.EACCES, "Permission denied", str(work / "scores" / "p.parquet")), workdir=work)
    assert f"at {work / 'scores'} (EACCES)" in msg
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("a library wrapped it")
    except RuntimeError as e:
        wrapped = e
    assert f"writing to {work} (EDQUOT)" in os_error_message(wrapped, workdir=work) and is_user_error(wrapped)
    assert os_error_message(ValueError("x")) is None and os_error_message(OSError(errno.EIO, "I/O error")) is None
