"""What every PACS client offers, whatever it speaks: the contract the sweep, the spool and the write-back use.

Why a small protocol: the sweep must not care whether instances arrive over
DICOMweb or DIMSE. Both clients (:mod:`osteo_batch.pacs.dicomweb`,
:mod:`osteo_batch.pacs.dimse`) answer the same five questions, return pydicom
data sets (never raw JSON or identifiers in strings), and fail with the two
typed errors below, whose messages never hold patient data (a URL without its
credentials, a count, a status code; never a name, an ID or a UID).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from osteo_batch.errors import UserError


class PacsError(UserError, ConnectionError):
    """The PACS cannot be reached, refused us or broke off: one line, no patient data.

    Raised for whole operations (a query, a store); the sweep keeps what it
    indexed before and the next night catches up.
    """

    code = "pacs_unreachable"
    fix = "check that the PACS is up and that its URL, AE titles and credentials are right"


class PacsLimitError(PacsError):
    """The PACS cut a query short at its own result limit, below the ``limit`` asked for.

    Fewer answers than asked would read as a complete window, so this is
    raised instead; ``returned`` is how many came back (the PACS's limit, or near it).
    """

    code = "pacs_result_limit"
    fix = "lower the query limit to at most the PACS's own result limit, or raise that limit on the PACS"

    def __init__(self, message: str, *, returned: int) -> None:
        super().__init__(message)
        self.returned = returned


class RetrieveError(Exception):
    """One instance could not be retrieved; ``reason`` is a code of :mod:`osteo_batch.reasons`.

    Not a UserError: it is recorded as that instance's rejection
    (``retrieve_failed``, ``retrieve_timeout``, ``retrieve_gone``) and retried
    the next night, and the run goes on.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StudyHit:
    """One study a study-level query listed."""

    study_instance_uid: str
    study_date: dt.date | None
    n_instances: int | None  # NumberOfStudyRelatedInstances, when the PACS says

    @classmethod
    def from_dataset(cls, ds) -> "StudyHit":
        """The hit a study-level answer (QIDO-RS JSON read into a Dataset, or a C-FIND identifier) stands for."""
        try:
            day = dt.datetime.strptime(str(ds.get("StudyDate") or ""), "%Y%m%d").date()
        except ValueError:
            day = None
        n = ds.get("NumberOfStudyRelatedInstances")
        try:
            count = int(n) if n not in (None, "") else None
        except (TypeError, ValueError):
            count = None
        return cls(str(ds.StudyInstanceUID), day, count)


@dataclass(frozen=True)
class StudyQuery:
    """A study-level query: a study-date window, narrowed at the PACS where it can filter.

    ``modality`` matches ModalitiesInStudy (one value per query), ``sex``
    matches PatientSex. ``limit`` is the most answers asked for: a window that
    comes back with ``limit`` answers may be truncated, and the caller splits it.
    """

    date_from: dt.date
    date_to: dt.date  # inclusive
    modality: str | None = None
    sex: str | None = None
    limit: int = 1000
    time_from: dt.time | None = None  # StudyTime range within a one-day window (a full day split by time)
    time_to: dt.time | None = None

    def study_time(self) -> str | None:
        """The StudyTime range (DICOM TM, ``HHMMSS-HHMMSS``) when the day is split by time, else None."""
        if self.time_from is None and self.time_to is None:
            return None
        a, b = self.time_from or dt.time(0, 0), self.time_to or dt.time(23, 59, 59)
        return f"{a:%H%M%S}-{b:%H%M%S}"


class PacsClient(Protocol):
    """A connection to one PACS. Methods raise :class:`PacsError` for the whole call
    (:class:`RetrieveError` for one instance in :meth:`retrieve`)."""

    #: what the store and messages may show: the URL without credentials
    display_url: str

    def echo(self) -> None:
        """Check the PACS answers (C-ECHO, or a QIDO-RS query with limit 1)."""

    def find_studies(self, query: StudyQuery) -> list[StudyHit]:
        """Studies in ``query``'s window, at most ``query.limit`` of them."""

    def study_instances(self, study_instance_uid: str) -> list:
        """Every instance of one study as a header-only pydicom Dataset (no pixel values).

        DICOMweb: WADO-RS study metadata. DIMSE: C-FIND at IMAGE level asking for
        :data:`osteo_batch.pacs.client.INSTANCE_KEYWORDS`, per series when the study
        answer reaches the PACS's result limit. Each Dataset holds at least
        SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID and SOPClassUID.
        """

    def retrieve(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, dest: Path) -> None:
        """Write the instance as a DICOM Part 10 file at ``dest``, in the transfer syntax it is stored in.

        DICOMweb: WADO-RS with ``transfer-syntax=*``; DIMSE: C-GET offering every
        transfer syntax pydicom can decode. Raises :class:`RetrieveError` for this instance
        (gone from the PACS, timed out, refused); writes ``dest`` atomically (never a partial file).
        """

    def store(self, datasets: Sequence) -> None:
        """Store data sets (our SRs) on the PACS: STOW-RS or C-STORE. Idempotent by SOP Instance UID."""

    def close(self) -> None:
        """Release connections."""


#: What a DIMSE C-FIND at IMAGE level asks for: what the sweep indexes
#: (:data:`osteo_batch.dicom.headers.HEADER_KEYWORDS` and the identifying fields).
INSTANCE_KEYWORDS = (
    "SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
    "PatientSex", "PatientBirthDate", "PatientAge", "StudyDate", "SeriesDate", "AcquisitionDate",
    "AccessionNumber", "Modality", "ViewPosition", "BodyPartExamined", "InstitutionName", "Manufacturer",
    "ManufacturerModelName", "StudyDescription", "SeriesDescription", "ProtocolName", "ImageType",
    "PresentationIntentType", "PhotometricInterpretation", "Rows", "Columns", "BitsStored", "BitsAllocated",
    "SamplesPerPixel", "NumberOfFrames", "PixelRepresentation", "ImageLaterality", "SeriesNumber",
    "InstanceNumber",
)
