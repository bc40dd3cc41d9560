import subprocess
import sys
import time

import pytest

from osteo_batch.store import Store, StoreLockedError, StoreMissingError


def test_reader_of_a_missing_store_gets_the_fix(tmp_path):
    with pytest.raises(StoreMissingError, match="run `osteo-batch sweep`"):
        Store(tmp_path / "none.duckdb", read_only=True).open()


def test_store_file_is_private(tmp_path):
    with Store(tmp_path / "s.duckdb"):
        pass
    assert (tmp_path / "s.duckdb").stat().st_mode & 0o077 == 0


def test_locked_store_waits_then_says_what_to_do(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError, match="in use by another process"):
            Store(path, wait_s=1.0).open()
        assert time.monotonic() - t0 >= 1.0
    finally:
        holder.kill()
        holder.wait()
    with Store(path, wait_s=5):  # free again
        pass
