"""Real Orthanc servers for the PACS client tests, and the small cohort uploaded to them.

``orthanc`` (DICOMweb and DIMSE on one server) holds :func:`pacs_cohort`'s
studies for the whole session; tests that store add studies dated 2019 and
tests that delete upload their own instance first, so the cohort's answers stay
as listed. ``limited_orthanc`` has result limits (2 studies or series, 2
instances per C-FIND). ``fresh_orthanc(**opts)`` gives a server of a test's
own, to stop or to configure otherwise. Orthanc takes ~0.1 s to start and
~3.5 s to stop, so servers are signalled together at teardown.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import dicom_factory
import orthanc_server


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str
    transfer_syntax: str
    pixels: np.ndarray
    path: Path


@dataclass(frozen=True)
class Cohort:
    """Three studies: A (DX, F, 2025-06-01, 3 instances in 2 series, one JPEG 2000),
    B (CR, M, 2025-07-10) and C (CR, F, 2024-03-15)."""

    instances: list[Instance] = field(default_factory=list)
    study_a: str = "2.25.9100"
    study_b: str = "2.25.9200"
    study_c: str = "2.25.9300"

    def of(self, study: str) -> list[Instance]:
        return [i for i in self.instances if i.study == study]

    def by_syntax(self, ts: str) -> Instance:
        return next(i for i in self.instances if i.transfer_syntax == ts)


def write_instance(folder: Path, *, sop: str, study: str, series: str, j2k: bool = False, **kw) -> Instance:
    """A 64x64 radiograph written with pydicom (JPEG 2000 lossless when ``j2k``)."""
    from pydicom.uid import JPEG2000Lossless

    px = dicom_factory.ramp(64, 64)
    ds = dicom_factory.dataset(px, sop_instance_uid=sop, study_instance_uid=study, series_instance_uid=series,
                               rows=64, cols=64, **kw)
    if j2k:
        ds.compress(JPEG2000Lossless, px, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    path = dicom_factory.write(ds, folder / f"{sop}.dcm")
    return Instance(study, series, sop, str(ds.file_meta.TransferSyntaxUID), px, path)


def build_cohort(folder: Path) -> Cohort:
    a = dict(study="2.25.9100", sex="F", study_date="20250601", modality="DX", patient_id="PA")
    b = dict(study="2.25.9200", sex="M", study_date="20250710", modality="CR", patient_id="PB")
    c = dict(study="2.25.9300", sex="F", study_date="20240315", modality="CR", patient_id="PC")
    return Cohort(instances=[
        write_instance(folder, sop="2.25.9101", series="2.25.91001", **a),
        write_instance(folder, sop="2.25.9102", series="2.25.91001", j2k=True, **a),
        write_instance(folder, sop="2.25.9103", series="2.25.91002", **a),
        write_instance(folder, sop="2.25.9201", series="2.25.92001", **b),
        write_instance(folder, sop="2.25.9301", series="2.25.93001", **c),
    ])


@pytest.fixture(scope="session")
def pacs_cohort(tmp_path_factory) -> Cohort:
    return build_cohort(tmp_path_factory.mktemp("pacs-cohort"))


@pytest.fixture
def make_instance(tmp_path):
    """``make_instance(sop=, study=, series=, **plan)``: :func:`write_instance` into the test's tmp folder."""
    return lambda **kw: write_instance(tmp_path / "made", **kw)


@pytest.fixture(scope="session")
def _session_servers():
    servers: list[orthanc_server.Orthanc] = []
    yield servers
    orthanc_server.stop_all(servers)


@pytest.fixture(scope="session")
def orthanc(_session_servers, pacs_cohort) -> orthanc_server.Orthanc:
    """One Orthanc for the session, DICOMweb and DIMSE, holding :func:`pacs_cohort`."""
    o = orthanc_server.Orthanc()
    _session_servers.append(o)
    o.start()
    answer = o.upload(i.path for i in pacs_cohort.instances)
    assert answer == {"accepted": len(pacs_cohort.instances), "refused": 0}
    return o


@pytest.fixture(scope="session")
def limited_orthanc(_session_servers, pacs_cohort) -> orthanc_server.Orthanc:
    """Orthanc with ``LimitFindResults`` 2 and ``LimitFindInstances`` 2, holding :func:`pacs_cohort`."""
    o = orthanc_server.Orthanc(limit_find_results=2, limit_find_instances=2)
    _session_servers.append(o)
    o.start()
    o.upload(i.path for i in pacs_cohort.instances)
    return o


@pytest.fixture
def fresh_orthanc():
    """``fresh_orthanc(**opts)``: a started Orthanc of the test's own; all are stopped at teardown."""
    servers: list[orthanc_server.Orthanc] = []

    def start(**opts) -> orthanc_server.Orthanc:
        o = orthanc_server.Orthanc(**opts)
        servers.append(o)
        return o.start()

    yield start
    orthanc_server.stop_all(servers)


@pytest.fixture
def silent_port():
    """A port on 127.0.0.1 that accepts connections (the kernel's backlog) and never answers: a hung PACS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]
