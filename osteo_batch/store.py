"""The DuckDB store: schema, named SQL, Arrow in and out, and the single writer.

Why one module: every other stage talks to the store through here, so locking,
read-only access and where SQL lives are decided once. SQL is data, kept in
``sql/<name>.sql`` and run with bound parameters, never assembled in Python.

DuckDB lets one process open a file for writing. A nightly run is that writer;
readers (the worklist renderer, ad-hoc queries) open the file read-only. When
another process holds the lock we wait up to ``wait_s`` and then raise
:class:`StoreLockedError`, which says what to do.

DuckDB reports a full disk or a read-only folder with its own exceptions
(``TransactionException: Failed to commit: Could not write file ".../osteo.duckdb.wal":
No space left on device``); the store turns them into :class:`StoreDiskError`,
one line that names the folder and the fix. A commit that failed wrote nothing,
so the next run, once there is room, starts from the last commit.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from osteo_batch.errors import InternalError, UserError
from osteo_batch.resources import SQL_DIR


class StoreError(UserError, RuntimeError):
    """Base class for store problems a user fixes; the message says the fix."""

    code = "store_error"


class StoreLockedError(StoreError):
    """Another process holds the store past the wait (a coordinator's query, a second run)."""

    code = "store_locked"


class StoreMissingError(StoreError):
    """A reader opened a work folder that has no store yet."""

    code = "store_missing"


class SqlMissingError(InternalError):
    """A named SQL statement is not in the package: a broken install, not the user's input."""

    code = "sql_missing"


class StoreDiskError(StoreError):
    """The store's folder is full, over quota, read-only or refused; the message names it and the fix."""

    code = "store_disk"

    def __init__(self, problem):
        super().__init__(problem.line())
        self.problem = problem  # an osteo_batch.disk.DiskProblem


@lru_cache(maxsize=None)
def sql(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    p = SQL_DIR / f"{name}.sql"
    if not p.is_file():
        raise SqlMissingError(f"no SQL named {name!r} in {SQL_DIR}; reinstall osteo-batch")
    return p.read_text()


def _is_lock_error(e: Exception) -> bool:
    msg = str(e)
    return "lock" in msg.lower() and ("Could not set lock" in msg or "Conflicting lock" in msg or "locked" in msg)


class Store:
    """A connection to ``osteo.duckdb``; use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False, wait_s: float = 60.0):
        self.path = Path(path)
        self.read_only = read_only
        self.wait_s = wait_s
        self.con = None

    def __enter__(self) -> "Store":
        self.open()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close_quietly()

    def open(self) -> None:
        import duckdb

        if self.read_only and not self.path.exists():
            raise StoreMissingError(
                f"no store at {self.path}: run `osteo-batch sweep` or `osteo-batch run` with this --workdir first"
            )
        if not self.read_only:
            from osteo_batch.outputs import private_dir

            private_dir(self.path.parent)
        deadline = time.monotonic() + self.wait_s
        delay = 0.2
        while True:
            try:
                with self._disk_errors():
                    self.con = duckdb.connect(str(self.path), read_only=self.read_only)
                break
            except duckdb.IOException as e:
                if not _is_lock_error(e):
                    raise StoreError(f"cannot open store {self.path}: {e}") from None
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"store {self.path} is in use by another process (a nightly run?); "
                        f"waited {self.wait_s:.0f}s. Try again when it finishes, or raise --wait."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 1.5, 2.0)
        if not self.read_only:
            try:
                os.chmod(self.path, 0o600)
                with self._disk_errors():
                    self.con.execute(sql("schema")).fetchall()
            except BaseException:
                self.close_quietly()
                raise

    def close(self) -> None:
        """Close (DuckDB may checkpoint here, so a full disk can show here too)."""
        if self.con is not None:
            con, self.con = self.con, None
            with self._disk_errors():
                con.close()

    def close_quietly(self) -> None:
        try:
            self.close()
        except Exception:  # already failing: the first error says more
            pass

    @contextmanager
    def _disk_errors(self):
        """DuckDB's exceptions for a full disk, a read-only or refused folder, as :class:`StoreDiskError`."""
        import duckdb

        try:
            yield
        except duckdb.Error as e:
            from osteo_batch.disk import errno_of_text, problem_for

            n = errno_of_text(str(e))
            if n is None:
                raise
            raise StoreDiskError(problem_for(n, self.path.parent, workdir=self.path.parent)) from e

    @contextmanager
    def transaction(self):
        """Everything inside commits together or not at all (a kill mid-way leaves no half)."""
        with self._disk_errors():
            self.con.execute("BEGIN TRANSACTION").fetchall()
        try:
            yield self
        except BaseException:
            try:
                self.con.execute("ROLLBACK").fetchall()
            except Exception:  # a failed write may have ended the transaction already
                pass
            raise
        with self._disk_errors():
            self.con.execute("COMMIT").fetchall()

    # -- running named SQL -------------------------------------------------
    def run(self, name: str, params: dict[str, Any] | None = None, **relations: Any) -> list[dict]:
        """Run ``sql/<name>.sql`` with bound ``params`` and return the last
        statement's rows as dicts. ``relations`` are Arrow tables registered under
        their keyword names for the statement's duration."""
        return self._run(name, params, relations, lambda s, p: _dicts(self._execute(s, p)))

    rows = run

    def scalar(self, name: str, params: dict[str, Any] | None = None, **relations: Any) -> Any:
        return self._run(name, params, relations, lambda s, p: self._execute(s, p).fetchall()[0][0])

    def arrow(self, name: str, params: dict[str, Any] | None = None, **relations: Any):
        """The last statement's result as an Arrow table (DuckDB's relation API: no extra copy)."""
        return self._run(name, params, relations, lambda s, p: self.con.sql(s, params=p or None).to_arrow_table())

    def _execute(self, statement: str, used: dict[str, Any]):
        return self.con.execute(statement, used) if used else self.con.execute(statement)

    def _run(self, name, params, relations, last):
        """Run every statement but the last here; ``last(statement, params)`` runs and fetches the last."""
        for k, v in relations.items():
            self.con.register(k, v)
        try:
            stmts = [s for s in _split(sql(name)) if s.strip()]
            with self._disk_errors():
                for s in stmts[:-1]:
                    self._execute(s, _used(params, s)).fetchall()
                return last(stmts[-1], _used(params, stmts[-1]))
        finally:
            for k in relations:
                self.con.unregister(k)


def _used(params: dict[str, Any] | None, statement: str) -> dict[str, Any]:
    """The parameters a statement names (DuckDB refuses unused ones)."""
    return {k: v for k, v in (params or {}).items() if f"${k}" in statement}


def _dicts(cur) -> list[dict]:
    if cur.description is None:
        return []
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _split(text: str) -> list[str]:
    """Split a .sql file into statements on ';' at line ends (no ';' in our literals)."""
    out, buf = [], []
    for line in text.splitlines():
        if line.strip().startswith("--"):
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(buf))
            buf = []
    if "".join(buf).strip():
        out.append("\n".join(buf))
    return out


def open_store(settings: Any, *, read_only: bool = False) -> "Store":
    """The work folder's store, for ``settings`` (an :class:`osteo_batch.settings.Settings`).

    A writer makes the work folder (0700) first; a reader never creates anything.
    """
    from osteo_batch.outputs import private_dir

    if not read_only:
        private_dir(settings.workdir)
    return Store(settings.store_path, read_only=read_only, wait_s=settings.store_wait_s)
