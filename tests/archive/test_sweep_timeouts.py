"""A header that cannot be read in time is ``read_timeout``: recorded, retried the next night, never the end of a night."""

from __future__ import annotations

from dicom_factory import write_many

from osteo_batch.archive.sweep import HEADER_TIMEOUT_S, sweep
from osteo_batch.store import Store


def _reasons(db):
    with Store(db, read_only=True) as st:
        return dict(st.con.execute("SELECT path, read_reason FROM instances ORDER BY path").fetchall())


def test_a_header_past_its_time_limit_is_read_timeout_and_is_read_again_next_night(tmp_path):
    archive = tmp_path / "archive"
    files = write_many(archive, 3)
    db = tmp_path / "osteo.duckdb"
    with Store(db) as st:  # a limit no read can meet: the timer fires inside every header read
        first = sweep(st, archive, run_id="r1", workers=1, header_timeout_s=1e-6)
    assert first.conserved() and first.files == 3
    assert set(_reasons(db).values()) == {"read_timeout"}
    with Store(db) as st:  # the next night, with the real limit: the same files, unchanged, are read again
        second = sweep(st, archive, run_id="r2", workers=1)
    assert second.read == 3, "a file that timed out is read again, though its size and time are the same"
    assert set(_reasons(db).values()) == {None}
    assert {str(p) for p in files} == set(_reasons(db))
    assert HEADER_TIMEOUT_S >= 10, "the limit is for what never ends, not for a slow disk"


def test_in_worker_processes_too(tmp_path):
    archive = tmp_path / "archive"
    write_many(archive, 260, rows=4, cols=4)  # enough for the process pool (sweep._PARALLEL_MIN)
    from osteo_batch.archive import sweep as sweep_mod

    assert 260 >= sweep_mod._PARALLEL_MIN
    with Store(tmp_path / "osteo.duckdb") as st:
        res = sweep(st, archive, run_id="r1", workers=2, header_timeout_s=1e-6)
    assert res.conserved()
    assert set(_reasons(tmp_path / "osteo.duckdb").values()) == {"read_timeout"}
