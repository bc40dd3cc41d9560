"""A PACS over DICOMweb: QIDO-RS to list studies, WADO-RS for headers and files, STOW-RS for our results.

Why dicomweb-client on a ``requests.Session`` we build: the session carries
the ``Authorization`` header from :class:`~osteo_batch.pacs.credentials.Credentials`
(never a user name or password in the URL), and its connection pool is reused
across the night's thousands of requests. The library's own HTTP retries are
off: a refused request is the sweep's to count and the next night's to catch up,
and exponential back-off inside one call would stall the run for a minute.

What never leaves this module: the library logs every request URL (which
holds study, series and instance UIDs) at DEBUG and INFO, and a failed STOW-RS
item with its SOP Instance UID at ERROR; ``urllib3`` logs the request line at
DEBUG. :func:`_quiet_library_logs` raises the ``dicomweb_client`` logger to
CRITICAL and drops ``urllib3.connectionpool``'s DEBUG records when the first
client is built, so none of it reaches stderr whatever the root logger's
level. Our errors say the operation, the HTTP status and :attr:`display_url`.

Headers (:meth:`DicomwebClient.study_instances`) come without bulk data: every
element the metadata gives as a ``BulkDataURI`` (Pixel Data first) is left
out, and ``ds.osteo_has_pixel_data`` says whether the metadata listed a
pixel-data element: ``True``, or ``None`` when it did not, which is *not*
evidence of no pixels (Orthanc 1.10 with DICOMweb 1.7 leaves encapsulated Pixel
Data out of its metadata altogether; only native pixel data is listed).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

from osteo_batch.errors import UserError
from osteo_batch.outputs import write_private
from osteo_batch.pacs.client import PacsError, PacsLimitError, RetrieveError, StudyHit, StudyQuery
from osteo_batch.pacs.credentials import Credentials

#: Pixel Data, Float Pixel Data, Double Float Pixel Data: their presence in metadata sets ``osteo_has_pixel_data``.
PIXEL_DATA_TAGS = ("7FE00010", "7FE00008", "7FE00009")
#: Study-level fields QIDO-RS is asked for.
STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "NumberOfStudyRelatedInstances")
#: What WADO-RS retrieve asks for: the instance in the transfer syntax it is stored in.
AS_STORED = (("application/dicom", "*"),)


class PacsUrlError(UserError):
    """The PACS URL cannot be used as given (credentials in it, or not http/https)."""

    code = "pacs_url_invalid"
    fix = "give the DICOMweb root as http(s)://HOST[:PORT]/PATH, and credentials in a credentials file or variable"


def display_url(url: str) -> str:
    """``url`` without user information (``user:password@``), for messages and the store."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


class _DropDebug(logging.Filter):
    """Drops DEBUG records: ``urllib3`` writes the request line, UIDs and all, at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _quiet_library_logs() -> None:
    """Keep the libraries' URL-bearing log records off every handler (see the module docstring)."""
    logging.getLogger("dicomweb_client").setLevel(logging.CRITICAL)
    # dicomweb-client wraps requests in ``retrying``, which logs each failed attempt with its traceback,
    # and a connection error's text holds the request URL (UIDs): drop every record it writes
    logging.getLogger("retrying").setLevel(logging.CRITICAL + 10)
    pool = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _DropDebug) for f in pool.filters):
        pool.addFilter(_DropDebug())


def _http_status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


class DicomwebClient:
    """A :class:`~osteo_batch.pacs.client.PacsClient` for one DICOMweb service root (e.g. ``.../dicom-web``).

    ``result_limit`` is the PACS's own QIDO-RS answer limit, when it has one:
    Orthanc (1.10, DICOMweb 1.7) cuts a study query at ``LimitFindResults``
    (it returned one more than the limit) without a Warning header, and
    ``offset`` pages past it come back empty, so a cut answer cannot be told
    from a complete one. A query that reaches ``result_limit`` below the
    ``limit`` asked for raises :class:`~osteo_batch.pacs.client.PacsLimitError`.
    """

    def __init__(self, url: str, credentials: Credentials | None = None, timeout_s: float = 30.0, *,
                 result_limit: int | None = None) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsUrlError("the DICOMweb URL must start with http:// or https:// and name a host")
        if parts.username is not None or parts.password is not None:
            raise PacsUrlError(f"the DICOMweb URL {display_url(url)} holds credentials; they would be logged with it")
        _quiet_library_logs()
        self.display_url = display_url(url)
        self.timeout_s = float(timeout_s)
        self.result_limit = result_limit
        self._session = requests.Session()
        # No gzip: requests asks for it by default, and a PACS that obliges (Orthanc does) compresses every
        # instance on the fly; pixel data is mostly compressed already, and the CPU is what the night lacks
        # (a 2.7 MB instance took 243 ms from Orthanc with gzip, 15 ms without, on the CI machine)
        self._session.headers["Accept-Encoding"] = "identity"
        if credentials is not None:
            self._session.headers["Authorization"] = credentials.authorization()
        self._web = DICOMwebClient(url=self.display_url, session=self._session, timeout=self.timeout_s)
        self._web.set_http_retry_params(retry=False)

    # -- faults ---------------------------------------------------------------

    def _pacs_error(self, op: str, e: BaseException) -> PacsError:
        """One line for a failed whole operation: what we did, what came back, where; never a UID."""
        import requests

        status = _http_status(e)
        if status is not None:
            what = f"answered HTTP {status}"
        elif isinstance(e, requests.Timeout):
            what = f"did not answer within {self.timeout_s:g} s"
        elif isinstance(e, requests.ConnectionError):
            what = "could not be reached (connection refused or broken off)"
        else:
            what = f"sent an answer that cannot be read ({type(e).__name__})"
        return PacsError(f"DICOMweb {op} at {self.display_url} {what}")

    def _retrieve_error(self, e: BaseException) -> RetrieveError:
        import requests

        status = _http_status(e)
        if status in (404, 410):
            return RetrieveError("retrieve_gone", f"HTTP {status}")
        if status is not None:
            return RetrieveError("retrieve_failed", f"HTTP {status}")
        if isinstance(e, requests.Timeout):
            return RetrieveError("retrieve_timeout", f"no answer within {self.timeout_s:g} s")
        if isinstance(e, requests.ConnectionError):
            return RetrieveError("retrieve_failed", "connection refused or broken off")
        return RetrieveError("retrieve_failed", f"unreadable answer ({type(e).__name__})")

    # -- the protocol ---------------------------------------------------------

    def echo(self) -> None:
        try:
            self._web.search_for_studies(limit=1, fields=["StudyInstanceUID"])
        except Exception as e:
            raise self._pacs_error("echo (QIDO-RS)", e) from None

    def find_studies(self, query: StudyQuery) -> list[StudyHit]:
        """QIDO-RS studies by study date window, ModalitiesInStudy and PatientSex, at most ``query.limit``."""
        filters: dict[str, str] = {"StudyDate": f"{query.date_from:%Y%m%d}-{query.date_to:%Y%m%d}"}
        if query.modality:
            filters["ModalitiesInStudy"] = query.modality
        if query.sex:
            filters["PatientSex"] = query.sex
        if query.study_time():  # a full day, split by study time
            filters["StudyTime"] = query.study_time()
        try:
            found = self._web.search_for_studies(search_filters=filters, fields=list(STUDY_FIELDS), limit=query.limit)
            hits = [_study_hit(js) for js in found][: query.limit]
        except Exception as e:
            raise self._pacs_error("study query (QIDO-RS)", e) from None
        if self.result_limit and self.result_limit <= len(hits) < query.limit:
            raise PacsLimitError(f"DICOMweb study query (QIDO-RS) at {self.display_url} reached the PACS's own "
                                 f"limit ({len(hits)} answers), below the {query.limit} asked for", returned=len(hits))
        return hits

    def study_instances(self, study_instance_uid: str) -> list:
        """WADO-RS study metadata as header-only Datasets; ``[]`` when the study is gone (HTTP 404)."""
        try:
            found = self._web.retrieve_study_metadata(study_instance_uid)
        except Exception as e:
            if _http_status(e) == 404:
                return []
            raise self._pacs_error("study metadata (WADO-RS)", e) from None
        try:
            return [header_dataset(js) for js in found]
        except Exception as e:
            raise self._pacs_error("study metadata (WADO-RS)", e) from None

    def retrieve(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, dest: Path) -> None:
        """WADO-RS instance as stored (``transfer-syntax=*``), written to ``dest`` atomically with mode 0600."""
        try:
            ds = self._web.retrieve_instance(study_instance_uid, series_instance_uid, sop_instance_uid,
                                             media_types=AS_STORED)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
        except Exception as e:
            raise self._retrieve_error(e) from None
        write_private(dest, buf.getvalue(), durable=False)  # the spool: fetched again after a crash

    def store(self, datasets: Sequence) -> None:
        """STOW-RS; refused when the PACS lists any instance as failed."""
        if not datasets:
            return
        try:
            answer = self._web.store_instances(list(datasets))
        except Exception as e:
            raise self._pacs_error("store (STOW-RS)", e) from None
        failed = len(getattr(answer, "FailedSOPSequence", None) or [])
        if failed:
            raise PacsError(f"DICOMweb store (STOW-RS) at {self.display_url} refused {failed} of "
                            f"{len(datasets)} instances")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "DicomwebClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _study_hit(js: dict) -> StudyHit:
    import pydicom

    return StudyHit.from_dataset(pydicom.Dataset.from_json(js))


def _without_bulk_data(js: dict) -> dict:
    """A copy of DICOM JSON without pixel data and without any element given by BulkDataURI, nested ones too."""
    out = {}
    for tag, elem in js.items():
        if tag.upper() in PIXEL_DATA_TAGS or (isinstance(elem, dict) and "BulkDataURI" in elem):
            continue
        if isinstance(elem, dict) and elem.get("vr") == "SQ" and elem.get("Value"):
            elem = {**elem, "Value": [_without_bulk_data(item) for item in elem["Value"]]}
        out[tag] = elem
    return out


def header_dataset(js: dict):
    """One instance's WADO-RS metadata as a header-only pydicom Dataset.

    Group 0002 elements, where a PACS sends them, go to ``file_meta`` (so the
    stored Transfer Syntax UID is known before the file is fetched);
    ``osteo_has_pixel_data`` is ``True`` when a pixel-data element was listed,
    else ``None`` (unknown: see the module docstring).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset

    listed = any(tag.upper() in PIXEL_DATA_TAGS for tag in js)
    body = {t: e for t, e in js.items() if not t.startswith("0002")}
    meta = {t: e for t, e in js.items() if t.startswith("0002")}
    ds = pydicom.Dataset.from_json(_without_bulk_data(body))
    if meta:
        ds.file_meta = FileMetaDataset(pydicom.Dataset.from_json(_without_bulk_data(meta)))
    ds.osteo_has_pixel_data = True if listed else None
    return ds
