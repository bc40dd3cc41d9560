"""A real Orthanc on 127.0.0.1 for the PACS tests: DICOMweb and DIMSE on free ports.

Why a real server and only the standard library here: the clients under test
(:mod:`osteo_batch.pacs.dicomweb`, :mod:`osteo_batch.pacs.dimse`) must meet a
PACS that behaves like one (its limits, its refusals, its transfer syntaxes),
and the fixture must not share code or libraries with them, or a bug in one
would hide in the other. Upload, delete and count go through Orthanc's own
REST API with :mod:`urllib`.

Orthanc 1.10 has no bind-address setting: it listens on every interface, so
``RemoteAccessAllowed: false`` keeps the HTTP side to loopback and the ports are
free ones picked at start. The server is stopped by its PID, never by name.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
START_TIMEOUT_S = 10.0
STOP_GRACE_S = 5.0


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the test process that started it dies (a killed or timed-out
    pytest leaves no Orthanc behind). Starts must come from the main thread, as the fixtures do."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process with its own config, storage and log in a private temp folder.

    Use as a context manager, or call :meth:`start` and :meth:`stop`; a stopped
    server starts again on the same ports and storage (to test a PACS that went
    away and came back).
    """

    def __init__(
        self,
        *,
        dicomweb: bool = True,
        aet: str = "ORTHANC",
        limit_find_instances: int = 0,
        limit_find_results: int = 0,
        modalities: dict | None = None,
        extra: dict | None = None,
        storage_dir: Path | None = None,
    ) -> None:
        self.aet = aet
        self.folder = Path(tempfile.mkdtemp(prefix="osteo-orthanc-"))
        os.chmod(self.folder, 0o700)
        self.storage_dir = Path(storage_dir) if storage_dir is not None else self.folder / "storage"
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = self.http_url + "/dicom-web"
        self.log_path = self.folder / "orthanc.log"
        self.config_path = self.folder / "orthanc.json"
        self.start_s: float | None = None  # how long the last start took
        self._proc: subprocess.Popen | None = None
        self._log = None
        config = {
            "Name": "osteo-test",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "StorageCompression": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowStore": True,
            "LimitFindInstances": limit_find_instances,
            "LimitFindResults": limit_find_results,
            "DicomModalities": modalities or {},
            "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/", "StudiesMetadata": "Full",
                         "SeriesMetadata": "Full"},
            "DefaultEncoding": "Utf8",  # C-FIND answers in UTF-8, as a PACS with patients' names in Hangul must
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
        }
        config.update(extra or {})
        users = config.get("RegisteredUsers") or {}
        self._auth = None  # the fixture's own REST calls use the first registered user, when authentication is on
        if config.get("AuthenticationEnabled") and users:
            user, password = next(iter(users.items()))
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.config_path.write_text(json.dumps(config, indent=2))
        os.chmod(self.config_path, 0o600)

    # -- life cycle ---------------------------------------------------------

    def start(self) -> "Orthanc":
        if self.running:
            return self
        t0 = time.monotonic()
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [ORTHANC, str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.folder, preexec_fn=_die_with_parent,
        )
        while True:
            if self._proc.poll() is not None:
                self._close_log()
                raise RuntimeError(f"Orthanc exited with {self._proc.returncode} at start:\n{self.log_tail()}")
            try:
                self._request("GET", "/system", timeout=1.0)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() - t0 > START_TIMEOUT_S:
                self.stop()
                raise RuntimeError(f"Orthanc did not answer GET /system in {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.start_s = time.monotonic() - t0
        return self

    def terminate(self) -> None:
        """Send SIGTERM without waiting (:func:`stop_all` stops several servers at once this way)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; always reaps the process.

        Orthanc 1.10 takes about 3.5 s to stop (its HTTP and DICOM servers poll
        for the stop flag), so :func:`stop_all` signals every server first.
        """
        p, self._proc = self._proc, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
        if p is not None:
            try:
                p.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would (and 3.5 s sooner than :meth:`stop`); storage survives, SQLite recovers."""
        p, self._proc = self._proc, None
        if p is not None:
            if p.poll() is None:
                p.kill()
            p.wait()
        self._close_log()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop and remove the temp folder (storage included, when it is ours)."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- REST ---------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, *, timeout: float = 30.0,
                 content_type: str = "application/octet-stream"):
        req = urllib.request.Request(self.http_url + path, data=body, method=method)
        if self._auth:
            req.add_header("Authorization", self._auth)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def upload(self, paths: Iterable[Path]) -> dict:
        """POST each file to /instances; Orthanc answers 400 for what is not DICOM."""
        out = {"accepted": 0, "refused": 0}
        for p in paths:
            try:
                self._request("POST", "/instances", Path(p).read_bytes())
                out["accepted"] += 1
            except urllib.error.HTTPError as e:
                if e.code != 400:
                    raise
                out["refused"] += 1
        return out

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc's own ID of the instance, or None."""
        body = json.dumps({"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}}).encode()
        ids = self._request("POST", "/tools/find", body, content_type="application/json")
        return ids[0] if ids else None

    def delete_instance(self, sop_instance_uid: str) -> None:
        oid = self.find_instance(sop_instance_uid)
        if oid is None:
            raise KeyError("no such instance on this Orthanc")
        self._request("DELETE", f"/instances/{oid}")

    def instance_count(self) -> int:
        return int(self._request("GET", "/statistics")["CountInstances"])


def stop_all(servers: Iterable[Orthanc]) -> None:
    """Stop and remove several servers, signalled together so their shutdowns overlap."""
    servers = list(servers)
    for o in servers:
        o.terminate()
    for o in servers:
        o.close()
