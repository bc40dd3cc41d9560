"""A PACS over DIMSE: C-FIND to list studies and instances, C-GET for files, C-STORE for our results.

Why C-GET and not C-MOVE: C-GET brings the instance back on the association
we opened, so the PACS needs no route back to us (no AE title, host and port
of ours configured on the PACS, no listening port on the batch host).

Why one presentation context per (SOP class, transfer syntax) pair: a context
has one accepted transfer syntax, so a context proposing several would make
the PACS pick one and transcode. Offering each syntax pydicom can decode on a
context of its own lets the PACS send the instance as it is stored, and the
handler writes the encoded bytes it received (:meth:`Event.encoded_dataset`),
file meta included, without decoding them.

Each operation opens its own association and releases it (aborts it after a
fault): the night's calls are seconds apart and a held association would time
out at the PACS in between.

Result limits: a PACS may stop a C-FIND after its own number of answers.
Orthanc (1.10) does so with ``LimitFindResults`` for study and series queries
and ``LimitFindInstances`` for image queries, and ends the answer with status
0xFE00 (Cancel) that we did not ask for. :meth:`DimseClient.study_instances`
then asks series by series; a study query the PACS cut short below the limit we
asked for raises :class:`PacsLimitError`, since fewer answers than asked would
read as a complete window.

pynetdicom logs identifiers and UIDs (at DEBUG and INFO, some at ERROR): the
``pynetdicom`` logger is raised to CRITICAL when the first client is built.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

from osteo_batch.outputs import write_private
from osteo_batch.pacs.client import INSTANCE_KEYWORDS, PacsError, PacsLimitError, RetrieveError, StudyHit, StudyQuery

#: Storage SOP classes :meth:`DimseClient.retrieve` accepts: chest radiographs and their secondary captures.
RETRIEVE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture Image Storage
)
PENDING = (0xFF00, 0xFF01)
CANCELLED = 0xFE00
#: C-STORE warnings: the PACS kept the instance (coerced, or already had it).
STORE_OK = (0x0000, 0xB000, 0xB006, 0xB007)
FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
VERIFICATION = "1.2.840.10008.1.1"


def decodable_transfer_syntaxes() -> list[str]:
    """Every transfer syntax pydicom (with the plugins installed here) can decode, native ones first."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import AllTransferSyntaxes

    out = []
    for ts in AllTransferSyntaxes:
        try:
            if get_decoder(ts).is_available:
                out.append(str(ts))
        except NotImplementedError:
            continue
    return sorted(out, key=lambda ts: (ts not in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"), ts))


def _quiet_pynetdicom() -> None:
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def _query(level: str, **keys):
    """A C-FIND identifier: ``keys`` with their values, ``None`` for a return key."""
    from pydicom import Dataset

    q = Dataset()
    # Ask for UTF-8 answers (PS3.4 C.4.1.1.3.1: an SCP may answer in the query's character set); a PACS
    # that answers in a narrower one drops what it cannot encode (Orthanc: set DefaultEncoding to Utf8)
    q.SpecificCharacterSet = "ISO_IR 192"
    q.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(q, keyword, value)
    return q


def _header(identifier):
    """A C-FIND answer as a header Dataset: without the query's own keys and without empty (unknown) values."""
    for keyword in ("QueryRetrieveLevel", "RetrieveAETitle"):
        if keyword in identifier:
            delattr(identifier, keyword)
    for elem in list(identifier):
        if elem.VR != "SQ" and (elem.value is None or elem.value == ""):
            del identifier[elem.tag]
    identifier.osteo_has_pixel_data = None  # C-FIND cannot say
    return identifier


class DimseClient:
    """A :class:`~osteo_batch.pacs.client.PacsClient` for one DICOM AE (C-ECHO, C-FIND, C-GET, C-STORE).

    ``result_limit`` is the PACS's own C-FIND answer limit, when it is known
    and the PACS truncates without saying so (Orthanc says so: see the module
    docstring); an image query that reaches it is asked again series by series.
    """

    def __init__(self, host: str, port: int, called_aet: str, calling_aet: str = "OSTEO", timeout_s: float = 30.0,
                 *, result_limit: int | None = None) -> None:
        _quiet_pynetdicom()
        self.host, self.port = host, int(port)
        self.called_aet, self.calling_aet = called_aet, calling_aet
        self.timeout_s = float(timeout_s)
        self.result_limit = result_limit
        self.display_url = f"dicom://{f'[{host}]' if ':' in host else host}:{self.port}/{called_aet}"
        self._syntaxes: list[str] | None = None  # what retrieve offers, found once per client

    # -- associations -------------------------------------------------------

    @contextlib.contextmanager
    def _association(self, op: str, contexts: Sequence[tuple[str, Sequence[str] | None]], *, roles=(),
                     handlers=()) -> Iterator:
        """An established association for ``op``, released after (aborted after a fault)."""
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, attr, self.timeout_s)
        for abstract, syntaxes in contexts:
            ae.add_requested_context(abstract, syntaxes) if syntaxes else ae.add_requested_context(abstract)
        t0 = time.monotonic()
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, ext_neg=list(roles) or None,
                                 evt_handlers=list(handlers) or None)
        except (OSError, ValueError, RuntimeError) as e:
            raise PacsError(f"DIMSE {op} at {self.display_url} could not start ({type(e).__name__})") from None
        if not assoc.is_established:
            if assoc.is_rejected:
                what = "rejected the association (check the AE titles)"
            elif self._timed_out(t0):
                what = f"did not answer within {self.timeout_s:g} s"
            else:
                what = "could not be reached (connection refused or broken off)"
            raise PacsError(f"DIMSE {op} at {self.display_url} {what}")
        ok = False
        try:
            yield assoc
            ok = True
        finally:
            if assoc.is_established:
                assoc.release() if ok else assoc.abort()

    def _timed_out(self, t0: float) -> bool:
        return time.monotonic() - t0 >= self.timeout_s * 0.9

    def _lost(self, op: str, t0: float) -> PacsError:
        what = f"did not answer within {self.timeout_s:g} s" if self._timed_out(t0) else "broke off the association"
        return PacsError(f"DIMSE {op} at {self.display_url} {what}")

    def _find(self, assoc, identifier, op: str, *, limit: int | None = None) -> tuple[list, bool]:
        """The C-FIND answers (at most ``limit``; C-CANCEL after that) and whether the PACS cut them short."""
        answers: list = []
        cancelled = False
        t0 = time.monotonic()
        for status, found in assoc.send_c_find(identifier, FIND_MODEL):
            code = status.get("Status")
            if code is None:
                raise self._lost(op, t0)
            t0 = time.monotonic()
            if code in PENDING:
                if limit is None or len(answers) < limit:
                    if found is not None:
                        answers.append(found)
                elif not cancelled:
                    assoc.send_c_cancel(1, query_model=FIND_MODEL)
                    cancelled = True
                continue
            if code == CANCELLED:
                return answers, not cancelled
            if code != 0x0000:
                raise PacsError(f"DIMSE {op} at {self.display_url} failed with status 0x{code:04X}")
            return answers, False
        raise self._lost(op, t0)

    # -- the protocol -------------------------------------------------------

    def echo(self) -> None:
        with self._association("echo (C-ECHO)", [(VERIFICATION, None)]) as assoc:
            status = assoc.send_c_echo()
        code = status.get("Status") if status is not None else None
        if code != 0x0000:
            raise PacsError(f"DIMSE echo (C-ECHO) at {self.display_url} answered "
                            + ("nothing" if code is None else f"status 0x{code:04X}"))

    def find_studies(self, query: StudyQuery) -> list[StudyHit]:
        """C-FIND at STUDY level by study date window, ModalitiesInStudy and PatientSex, at most ``query.limit``."""
        op = "study query (C-FIND)"
        q = _query("STUDY", StudyInstanceUID="", StudyDate=f"{query.date_from:%Y%m%d}-{query.date_to:%Y%m%d}",
                   ModalitiesInStudy=query.modality or "", PatientSex=query.sex or "",
                   NumberOfStudyRelatedInstances=None)
        if query.study_time():  # a full day, split by study time
            q.StudyTime = query.study_time()
        with self._association(op, [(FIND_MODEL, None)]) as assoc:
            found, cut = self._find(assoc, q, op, limit=query.limit)
        if cut and len(found) < query.limit:
            raise PacsLimitError(f"DIMSE {op} at {self.display_url} stopped at the PACS's own limit of "
                                 f"{len(found)} answers, below the {query.limit} asked for", returned=len(found))
        return [StudyHit.from_dataset(ds) for ds in found if ds.get("StudyInstanceUID")]

    def study_instances(self, study_instance_uid: str) -> list:
        """C-FIND at IMAGE level for :data:`INSTANCE_KEYWORDS`; series by series when the PACS cut the answer short."""
        op = "instance query (C-FIND)"
        keys = {k: None for k in INSTANCE_KEYWORDS if k != "StudyInstanceUID"}
        with self._association(op, [(FIND_MODEL, None)]) as assoc:
            found, cut = self._find(assoc, _query("IMAGE", StudyInstanceUID=study_instance_uid, **keys), op)
            if cut or (self.result_limit and len(found) >= self.result_limit):
                found = []
                series, cut = self._find(assoc, _query("SERIES", StudyInstanceUID=study_instance_uid,
                                                       SeriesInstanceUID=None), "series query (C-FIND)")
                if cut:
                    raise PacsLimitError(f"DIMSE series query (C-FIND) at {self.display_url} stopped at the "
                                         f"PACS's own limit of {len(series)} series", returned=len(series))
                for s in series:
                    keys_s = {**keys, "SeriesInstanceUID": s.SeriesInstanceUID}
                    items, cut = self._find(assoc, _query("IMAGE", StudyInstanceUID=study_instance_uid, **keys_s), op)
                    if cut or (self.result_limit and len(items) >= self.result_limit):
                        raise PacsLimitError(f"DIMSE {op} at {self.display_url}: a series holds more instances "
                                             f"than the PACS answers at once ({len(items)})", returned=len(items))
                    found.extend(items)
        return [_header(ds) for ds in found]

    def retrieve(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, dest: Path) -> None:
        """C-GET at IMAGE level; the instance is written to ``dest`` as received (0600, atomically)."""
        from pynetdicom import build_role, evt

        written: list = []
        faults: list[OSError] = []

        def on_store(event) -> int:
            if str(event.request.AffectedSOPInstanceUID) != sop_instance_uid:
                return 0xC001  # not what we asked for: refuse it
            try:
                write_private(dest, event.encoded_dataset(), durable=False)
            except OSError as e:  # a full disk is the user's to fix: raised after the C-GET
                faults.append(e)
                return 0xA700
            written.append(True)
            return 0x0000

        if self._syntaxes is None:
            self._syntaxes = decodable_transfer_syntaxes()
        contexts = [(GET_MODEL, None)] + [(sop, [ts]) for sop in RETRIEVE_SOP_CLASSES for ts in self._syntaxes]
        roles = [build_role(sop, scp_role=True) for sop in RETRIEVE_SOP_CLASSES]
        identifier = _query("IMAGE", StudyInstanceUID=study_instance_uid, SeriesInstanceUID=series_instance_uid,
                            SOPInstanceUID=sop_instance_uid)
        t0 = time.monotonic()
        final = None
        try:
            with self._association("retrieve (C-GET)", contexts, roles=roles,
                                   handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
                for status, _ in assoc.send_c_get(identifier, GET_MODEL):
                    if status.get("Status") is None:
                        break
                    t0 = time.monotonic()
                    if status.Status not in PENDING:
                        final = status
        except PacsError:
            raise RetrieveError("retrieve_timeout" if self._timed_out(t0) else "retrieve_failed",
                                "association not established") from None
        if faults:
            raise faults[0]
        if written:
            return
        if final is None:
            raise RetrieveError("retrieve_timeout" if self._timed_out(t0) else "retrieve_failed",
                                "no final C-GET status")
        code, failed = int(final.Status), int(final.get("NumberOfFailedSuboperations") or 0)
        done = sum(int(final.get(k) or 0) for k in ("NumberOfCompletedSuboperations", "NumberOfWarningSuboperations"))
        if done == 0 and failed == 0:
            raise RetrieveError("retrieve_gone", f"C-GET status 0x{code:04X}, nothing matched")
        raise RetrieveError("retrieve_failed", f"C-GET status 0x{code:04X}, {failed} failed")

    def store(self, datasets: Sequence) -> None:
        """C-STORE each data set in its own transfer syntax (Explicit or Implicit VR Little Endian offered too)."""
        if not datasets:
            return
        op = "store (C-STORE)"
        native = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
        wanted: dict[str, list[str]] = {}
        for ds in datasets:
            meta = getattr(ds, "file_meta", None)
            ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else native[0]
            syntaxes = wanted.setdefault(str(ds.SOPClassUID), list(native))
            if ts not in syntaxes:
                syntaxes.insert(0, ts)
        contexts = [(sop, [ts]) for sop, syntaxes in wanted.items() for ts in syntaxes]
        if len(contexts) > 128:
            raise PacsError(f"DIMSE {op}: {len(wanted)} SOP classes in one call are more than one association carries")
        refused: list[int] = []
        with self._association(op, contexts) as assoc:
            t0 = time.monotonic()
            for ds in datasets:
                try:
                    status = assoc.send_c_store(ds)
                except ValueError:  # no accepted presentation context for this SOP class and transfer syntax
                    raise PacsError(f"DIMSE {op} at {self.display_url} accepts no presentation context for "
                                    f"SOP class {ds.SOPClassUID.name or 'unknown'}") from None
                code = status.get("Status") if status is not None else None
                if code is None:
                    raise self._lost(op, t0)
                if code not in STORE_OK:
                    refused.append(int(code))
        if refused:
            raise PacsError(f"DIMSE {op} at {self.display_url} refused {len(refused)} of {len(datasets)} "
                            f"instances (status 0x{refused[0]:04X})")

    def close(self) -> None:
        """Nothing held between calls: each operation released its association."""

    def __enter__(self) -> "DimseClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
