"""A bounded spool: instances retrieved from the PACS while the model scores the ones before them.

Why a spool folder and not memory: the DataLoader's workers are separate
processes; a file in ``WORKDIR/spool`` (0700, files 0600, named by a hash of
the instance's URI, never by patient data) is the simplest thing they can all
open, and it is read exactly like a file of a folder archive, so reduced-
resolution JPEG 2000 decoding and every check apply unchanged.

How it overlaps: a :class:`Prefetcher` thread retrieves the instances of a
shard in the order the DataLoader will ask for them, ``[pacs] parallel`` at a
time, and never holds more than ``[pacs] spool_max`` files that have not yet
been scored. A worker that reaches an instance waits for its file (or for the
``.err`` note of a failed retrieval, which becomes that instance's reason).
Once scored, a file is deleted, unless the image is flagged: then it stays
for its heat map, and the heat-map stage deletes it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from osteo_batch.outputs import private_dir
from osteo_batch.reasons import Reason

#: Seconds between looks for a file that is being retrieved.
_POLL_S = 0.02
#: A retriever that has not said it is alive for this long is gone (a killed thread): stop waiting.
STALE_S = 30.0
_ALIVE = ".alive"


@dataclass(frozen=True)
class Spool:
    """The spool folder; every name in it is derived from an instance URI."""

    root: Path

    @classmethod
    def at(cls, workdir: str | os.PathLike) -> "Spool":
        return cls(private_dir(Path(workdir) / "spool"))

    def _stem(self, uri: str) -> str:
        return hashlib.sha256(uri.encode("utf-8")).hexdigest()[:40]

    def path_for(self, uri: str) -> Path:
        return self.root / f"{self._stem(uri)}.dcm"

    def error_for(self, uri: str) -> Path:
        return self.root / f"{self._stem(uri)}.err"

    def fail(self, uri: str, reason: str) -> None:
        """Leave the reason a retrieval failed where the waiting worker finds it."""
        p = self.error_for(uri)
        tmp = p.with_suffix(".err.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(reason)
        os.replace(tmp, p)

    def alive(self) -> None:
        """Say a retriever is at work (the waiting workers look at this file's time)."""
        p = self.root / _ALIVE
        p.touch(mode=0o600)
        os.utime(p)

    def _stale(self, stale_s: float) -> bool:
        try:
            return time.time() - (self.root / _ALIVE).stat().st_mtime > stale_s
        except FileNotFoundError:
            return True

    def wait(self, uri: str, stale_s: float = STALE_S) -> tuple[Path | None, str | None]:
        """(file, None) once retrieved, (None, reason) if the retrieval failed.

        No deadline of its own: the instance may be far down a long queue while
        the model is slow. A retrieval that hangs is ended by the client's own
        timeout (``retrieve_timeout``); a retriever that is gone (no sign of life
        for ``stale_s`` seconds) ends the wait as ``retrieve_failed``.
        """
        path, err = self.path_for(uri), self.error_for(uri)
        n = 0
        while True:
            if path.exists():
                return path, None
            if err.exists():
                try:
                    return None, err.read_text().strip() or Reason.RETRIEVE_FAILED.value
                except OSError:
                    return None, Reason.RETRIEVE_FAILED.value
            n += 1
            if n % 50 == 0 and self._stale(stale_s):
                return None, Reason.RETRIEVE_FAILED.value
            time.sleep(_POLL_S)

    def remove(self, uri: str) -> None:
        for p in (self.path_for(uri), self.error_for(uri)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def clear(self) -> int:
        """Remove everything (a killed run's leftovers); returns how many files went."""
        n = 0
        for p in self.root.iterdir():
            if p.name == _ALIVE:
                continue
            try:
                p.unlink()
                n += 1
            except (FileNotFoundError, IsADirectoryError):
                pass
        return n


def retrieve_one(client, spool: Spool, uri: str) -> str | None:
    """Retrieve ``uri`` into the spool; None when done, else the reason (also left as its ``.err`` note)."""
    from osteo_batch.pacs.client import PacsError, RetrieveError
    from osteo_batch.pacs.sweep import uri_uids

    if spool.path_for(uri).exists():
        return None
    try:
        client.retrieve(*uri_uids(uri), spool.path_for(uri))
        return None
    except RetrieveError as e:
        reason = e.reason
    except PacsError:
        reason = Reason.RETRIEVE_FAILED.value
    except Exception:  # a bug in a client, or an answer nobody expected: this instance's loss only
        reason = Reason.RETRIEVE_FAILED.value
    spool.fail(uri, reason)
    return reason


class Prefetcher:
    """Retrieve ``uris`` in order into ``spool``, ``parallel`` at a time, at most ``limit`` unconsumed.

    Use as a context manager around the loop that consumes the files; call
    :meth:`done` for each URI once its file was used (scored or rejected), so
    the next one may be fetched. ``connect`` makes one client per retrieval
    thread (a DIMSE association or an HTTP session is not shared across threads).
    """

    def __init__(self, connect: Callable[[], object], spool: Spool, uris: Iterable[str], *,
                 parallel: int = 4, limit: int = 64) -> None:
        self.connect, self.spool, self.uris = connect, spool, list(uris)
        self.parallel, self.limit = max(1, parallel), max(1, limit)
        self._slots = threading.Semaphore(self.limit)
        self._stop = threading.Event()
        self._broken = threading.Event()
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.failed: dict[str, int] = {}

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self.connect()
            with self._lock:
                self._clients.append(c)
        return c

    def _fetch(self, uri: str) -> None:
        if self._stop.is_set():
            return
        try:
            try:
                reason = retrieve_one(self._client(), self.spool, uri)
            except Exception:  # no client could be made (credentials gone, say): this instance fails
                reason = Reason.RETRIEVE_FAILED.value
                self.spool.fail(uri, reason)
        except BaseException:  # not even its .err could be written (a full disk): stop saying we are alive, so
            self._broken.set()  # every waiting worker gives up (retrieve_failed) instead of waiting for ever
            raise
        if reason:
            with self._lock:
                self.failed[reason] = self.failed.get(reason, 0) + 1

    def _beat(self) -> None:
        while not self._stop.wait(1.0) and not self._broken.is_set():
            try:
                self.spool.alive()
            except OSError:  # cannot even touch the spool: the workers will see no sign of life
                return

    def _run(self) -> None:
        try:
            self._submit_all()
        except BaseException:  # the retrieval thread itself failed: no waiting worker may wait for ever
            self._broken.set()
            raise

    def _submit_all(self) -> None:
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="osteo-retrieve") as pool:
            for uri in self.uris:
                while not self._slots.acquire(timeout=0.2):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                pool.submit(self._fetch, uri)

    def __enter__(self) -> "Prefetcher":
        self.spool.alive()
        self._beater = threading.Thread(target=self._beat, name="osteo-prefetch-alive", daemon=True)
        self._beater.start()
        self._thread = threading.Thread(target=self._run, name="osteo-prefetch", daemon=True)
        self._thread.start()
        return self

    def done(self, uri: str, *, keep: bool = False) -> None:
        """``uri``'s file was used: delete it (unless ``keep``, for a heat map) and free its slot."""
        if keep:
            try:
                self.spool.error_for(uri).unlink()
            except FileNotFoundError:
                pass
        else:
            self.spool.remove(uri)
        self._slots.release()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._beater.join()
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass


def fetch_all(connect: Callable[[], object], spool: Spool, uris: list[str], parallel: int = 4) -> dict[str, str]:
    """Retrieve ``uris`` now (those not in the spool already); returns {uri: reason} for those that failed."""
    local = threading.local()
    clients: list = []
    lock = threading.Lock()

    def one(uri: str) -> tuple[str, str | None]:
        try:
            c = getattr(local, "client", None)
            if c is None:
                c = local.client = connect()
                with lock:
                    clients.append(c)
        except Exception:
            return uri, Reason.RETRIEVE_FAILED.value
        return uri, retrieve_one(c, spool, uri)

    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="osteo-retrieve") as pool:
            return {u: r for u, r in pool.map(one, uris) if r}
    finally:
        for c in clients:
            try:
                c.close()
            except Exception:
                pass


def checked_file(spool_dir: str, uri: str) -> tuple[str, tuple[str, ...], str | None]:
    """Wait for ``uri``'s retrieved file and give it the checks a folder's file gets at the sweep.

    Returns (path, roots, None), or (uri, (), reason) when it is not to be
    decoded: the retrieval failed, or the file fails a check the PACS's
    metadata could not show (no Pixel Data, pixels shorter than the header
    says, a transfer syntax no decoder reads, a truncated transfer), with the
    same reason a file of a folder archive gets.
    """
    from osteo_batch.dicom.headers import read_header

    spool = Spool(Path(spool_dir))
    path, reason = spool.wait(uri)
    if reason:
        return uri, (), reason
    roots = (str(spool.root.resolve()),)
    res = read_header(str(path), roots=roots)
    if res.reason:
        return uri, (), res.reason
    return str(path), roots, None


@dataclass(frozen=True)
class Retrieval:
    """Where PACS instances come from and wait (a run's PACS and spool), for any stage that decodes them.

    Scoring, the heat maps, training and calibration all read images through
    :class:`osteo_batch.scoring.tensors.DicomDataset`; given this, an item whose
    path is an instance URI is retrieved into the spool ahead of the workers.
    """

    pacs: object  # osteo_batch.pacs.config.PacsSettings
    spool_dir: str

    def prefetcher(self, uris: list[str], *, at_least: int = 1) -> Prefetcher:
        from osteo_batch.pacs.connect import connect

        pacs = self.pacs
        return Prefetcher(lambda: connect(pacs), self.spool(), uris,
                          parallel=pacs.parallel, limit=max(pacs.spool_max, at_least))

    def spool(self) -> Spool:
        return Spool(private_dir(self.spool_dir))

    def fetch(self, uris: list[str]) -> dict[str, str]:
        """Retrieve ``uris`` now (:func:`fetch_all`); {uri: reason} for those that failed."""
        from osteo_batch.pacs.connect import connect

        pacs = self.pacs
        return fetch_all(lambda: connect(pacs), self.spool(), uris, pacs.parallel)
