"""A sweep killed with SIGKILL mid-way, then run again: no duplicates, no gaps."""

import os
import signal
import subprocess
import sys
import textwrap

from osteo_batch import pipeline
from osteo_batch.store import Store

from dicom_factory import write_many

KILLABLE = textwrap.dedent(
    """
    import sys, time
    from osteo_batch.store import Store
    from osteo_batch.archive.sweep import sweep

    def progress(done, total):
        print(done, flush=True)
        if done >= 600:
            time.sleep(60)  # the test kills us here, between committed batches

    with Store(sys.argv[2]) as st:
        sweep(st, sys.argv[1], run_id="killed", workers=1, batch=200, progress=progress)
    """
)


def test_sigkill_midway_then_rerun_leaves_no_duplicates_and_no_gaps(tmp_path):
    archive = tmp_path / "archive"
    files = write_many(archive, 1500)
    store = tmp_path / "work" / "osteo.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(archive), str(store)], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if int(line) >= 600:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Store(store, read_only=True) as st:
        partial = st.con.execute("SELECT count(*) FROM instances").fetchall()[0][0]
    assert 600 <= partial < len(files), "committed batches survive the kill"

    s = pipeline.load_settings(None, workdir=store.parent, archive=archive, workers=1)
    out = pipeline.sweep_stage(pipeline.RunContext.for_index(s, "rerun"))
    assert out["headers_read"] == len(files) - partial, "only the unread files are read again"
    with Store(store, read_only=True) as st:
        n, distinct = st.con.execute("SELECT count(*), count(DISTINCT path) FROM instances").fetchall()[0]
        unjudged = st.con.execute(
            "SELECT count(*) FROM instances WHERE read_reason IS NULL AND rules_digest IS NULL").fetchall()[0][0]
    assert n == distinct == len(files)
    assert unjudged == 0, "files committed before the kill were judged by the rules on the rerun"
    assert out["by_status"] == {"pending": len(files)}
