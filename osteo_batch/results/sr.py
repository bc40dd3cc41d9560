"""One DICOM Structured Report per scored image: the risk, the band and the model, back into the study.

Why an SR: the radiologist reads in the PACS viewer, not in our worklist, and
an SR is what a PACS stores, shows beside the image and forwards. It is a
Comprehensive SR (1.2.840.10008.5.1.4.1.1.88.33) whose content tree is a TID
1500 Measurement Report (what AI results use, and what highdicom builds and
reads back): one TID 1501 measurement group on the source image, finding
"Osteoporosis", holding

- the score, a NUM "Probability" in UCUM ``1`` (0 to 1),
- the operating threshold, a NUM "Threshold Value" in UCUM ``1``,
- the band, a CODE (SNOMED CT high / moderate / low risk, our own code otherwise),
- the model ID and version, a TID 4019 Algorithm Identification (TEXT items),
- the disclaimer, a TEXT "Comment",
- the source image, an IMAGE "Source of Measurement" item (and the study's
  Current Requested Procedure Evidence Sequence lists it).

Re-sending never duplicates: the SR's SOP Instance UID is derived from the
source's SOP Instance UID and the model ID (:func:`sr_uid`), its series from
the study and the model (:func:`sr_series_uid`). An SR by a newer model for
the same image names the one it replaces in the Predecessor Documents
Sequence (the SR Document General Module's place for "the SR this document
replaces") and in a TEXT "Supersedes" item.

The codes the standard has no term for are ours, scheme ``99OSTEOB``, declared
in the Coding Scheme Identification Sequence.
"""

from __future__ import annotations

import datetime as dt
import warnings
import math
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from osteo_batch.errors import InternalError, UserError
from osteo_batch.results import DISCLAIMER
from osteo_batch.results.own import MANUFACTURER, SERIES_DESCRIPTION_SR, SR_MODEL_NAME

if TYPE_CHECKING:  # pydicom and highdicom load when an SR is built, not when a sweep imports us
    import pydicom

__all__ = [
    "DISCLAIMER", "ScoredResult", "SRSourceError", "sr_uid", "sr_series_uid", "build_sr",
    "derived_uid", "source_header", "SR_SERIES_NUMBER", "SCHEME",
]

#: Series Number of the risk SR series: high, so that it sorts after the acquired series.
SR_SERIES_NUMBER = 9901
#: Our private coding scheme (a designator starting 99 is private by Part 16).
SCHEME = "99OSTEOB"
_SCHEME_NAME = "osteo-batch codes"
#: Namespaces of the derived UIDs: one each, so an SR UID never equals a series or tracking UID.
_NS_SR = "osteo-batch-sr"
_NS_SERIES = "osteo-batch-sr-series"
_NS_TRACKING = "osteo-batch-sr-tracking"
_NS_DEVICE = "osteo-batch-device"
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "osteo-batch/dicom-uid")
_SEP = "\x1f"  # a unit separator between the parts: ("1.2", "3") and ("1.", "23") must not collide

#: The three bands the worklist uses, as SNOMED CT risk qualifiers; any other band gets our own code.
_SCT_BANDS = {
    "high": ("15508007", "High risk"),
    "moderate": ("25594002", "Moderate risk"),
    "low": ("75976002", "Low risk"),
}


class SRSourceError(UserError):
    """The source header lacks an attribute every SR needs to point back at its image."""

    code = "sr_source_incomplete"
    fix = "re-index the archive (osteo-batch sweep); an image without its UIDs cannot be reported on"


@dataclass(frozen=True)
class ScoredResult:
    """What one SR reports: one image's score by one model.

    ``supersedes`` is the SOP Instance UID of an earlier SR for the same image
    by another model, and ``supersedes_series_uid`` its Series Instance UID
    (for an SR of ours, :func:`sr_series_uid` of the study and that model): the
    Predecessor Documents Sequence needs both, and only the UID goes in the
    "Supersedes" TEXT item when the series is not known.
    """

    sop_instance_uid: str
    score: float  # probability of osteoporosis, 0 to 1
    band: str  # "high", "moderate", "low", or whatever band the caller uses
    model_id: str  # e.g. "m-97f99f6bb40e048c"
    model_version: str
    threshold: float  # the model's operating threshold, 0 to 1
    run_date: dt.date
    supersedes: str | None = None
    supersedes_series_uid: str | None = None


def derived_uid(*parts: str) -> str:
    """A deterministic 2.25 UID from ``parts``: the same inputs give the same UID on every machine.

    A name-based (SHA-1, version 5) UUID as a 2.25 UID, per ISO/IEC 9834-8 and
    DICOM PS3.5 B.2. Not ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)``:
    with no prefix pydicom ignores the entropy sources and returns a random UUID.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, _SEP.join(parts)).int}"


def sr_uid(source_sop_instance_uid: str, model_id: str) -> str:
    """The SOP Instance UID of the SR that ``model_id`` writes for the image ``source_sop_instance_uid``."""
    return derived_uid(_NS_SR, source_sop_instance_uid, model_id)


def sr_series_uid(study_instance_uid: str, model_id: str) -> str:
    """The Series Instance UID of ``model_id``'s SR series in the study ``study_instance_uid``."""
    return derived_uid(_NS_SERIES, study_instance_uid, model_id)


_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
#: Type 2 attributes of the Patient and General Study modules: present in every SR, empty when the source has none.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def source_header(source: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of ``source``'s header with the Type 2 attributes highdicom reads filled in (empty where absent).

    Raises :class:`SRSourceError` when one of the four UIDs every reference needs is missing.

    A copy, so the caller's data set is never changed; pixel data is left out
    (the SR needs the header, and a copy of the pixels would cost memory for nothing).
    """
    import copy

    from pydicom.dataset import Dataset

    for kw in _REQUIRED:
        if not str(source.get(kw, "") or "").strip():
            raise SRSourceError(f"the source header has no {kw}; a result object must reference its image by it")
    ev = Dataset()
    for elem in source:
        if elem.tag.group not in (0x7FE0, 0x0002):
            ev.add(copy.deepcopy(elem))
    for kw in _TYPE2:
        if kw not in ev:
            setattr(ev, kw, None)
    if "PatientSex" in ev and ev.PatientSex not in ("M", "F", "O"):
        ev.PatientSex = None  # highdicom refuses other values; Type 2, so empty is valid
    return ev


def _check(source: pydicom.Dataset, result: ScoredResult) -> None:
    if str(source.SOPInstanceUID) != result.sop_instance_uid:
        raise InternalError("the scored result is for another image than the source header given with it",
                            code="sr_source_mismatch")
    for name in ("score", "threshold"):
        v = getattr(result, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
            raise InternalError(f"ScoredResult.{name} must be a probability between 0 and 1, got {v!r}",
                                code="sr_value_out_of_range")
    if not result.model_id.strip() or not result.band.strip():
        raise InternalError("ScoredResult needs a model_id and a band", code="sr_value_missing")


def _code(value: str, meaning: str, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _band_code(band: str):
    """The band as a code: SNOMED CT's risk qualifiers where one fits, else ours (the band text as its meaning)."""
    key = band.strip().lower()
    if key in _SCT_BANDS:
        value, meaning = _SCT_BANDS[key]
        return _code(value, meaning, "SCT")
    value = "".join(c for c in key.upper() if c.isalnum() or c in "-_")[:16] or "BAND"
    return _code(value, band.strip()[:64])


def _group(source: pydicom.Dataset, result: ScoredResult):
    """The TID 1501 measurement group: score, threshold, band, model, disclaimer, source image."""
    from highdicom.sr import (
        AlgorithmIdentification, Measurement, MeasurementsAndQualitativeEvaluations, QualitativeEvaluation,
        RelationshipTypeValues, SourceImageForMeasurementGroup, TextContentItem, TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    no_units = codes.UCUM.NoUnits
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=derived_uid(_NS_TRACKING, result.sop_instance_uid, result.model_id),
            identifier="osteoporosis risk",
        ),
        finding_type=_code("64859006", "Osteoporosis", "SCT"),
        algorithm_id=AlgorithmIdentification(
            name=result.model_id, version=result.model_version or "unknown", manufacturer=MANUFACTURER,
        ),
        measurements=[
            Measurement(name=codes.DCM.Probability, value=float(result.score), unit=no_units),
            Measurement(name=codes.DCM.ThresholdValue, value=float(result.threshold), unit=no_units),
        ],
        qualitative_evaluations=[
            QualitativeEvaluation(name=_code("RISKBAND", "Osteoporosis risk band"), value=_band_code(result.band)),
        ],
        # by its UIDs, not from_source_image: a header from a PACS query may lack the pixel description
        source_images=[SourceImageForMeasurementGroup(referenced_sop_class_uid=str(source.SOPClassUID),
                                                      referenced_sop_instance_uid=str(source.SOPInstanceUID))],
    )
    items = group[0].ContentSequence
    items.append(TextContentItem(name=codes.DCM.Comment, value=DISCLAIMER,
                                 relationship_type=RelationshipTypeValues.CONTAINS))
    if result.supersedes:
        items.append(TextContentItem(name=_code("SUPERSEDES", "Supersedes"), value=result.supersedes,
                                     relationship_type=RelationshipTypeValues.CONTAINS))
    return group


def _predecessor(source: pydicom.Dataset, result: ScoredResult):
    """The superseded SR's reference, as the Predecessor Documents Sequence needs it; None without its series."""
    if not (result.supersedes and result.supersedes_series_uid):
        return None
    from pydicom.dataset import Dataset
    from pydicom.uid import ComprehensiveSRStorage

    pre = Dataset()
    pre.SOPClassUID = ComprehensiveSRStorage
    pre.SOPInstanceUID = result.supersedes
    pre.StudyInstanceUID = source.StudyInstanceUID
    pre.SeriesInstanceUID = result.supersedes_series_uid
    return pre


def build_sr(source: pydicom.Dataset, result: ScoredResult) -> pydicom.Dataset:
    """The Comprehensive SR reporting ``result`` on the image whose header is ``source``.

    ``source`` is the image's header as read from the archive or the PACS
    (patient and study modules, the four UIDs); optional attributes may be
    missing. It is not changed. The SR goes in ``source``'s study, in the
    series :func:`sr_series_uid` of the study and model, with SOP Instance UID
    :func:`sr_uid`; ``save_as(path, enforce_file_format=True)`` writes it.

    Raises :class:`SRSourceError` when ``source`` lacks a UID, and an
    :class:`~osteo_batch.errors.InternalError` when ``result`` is for another
    image or holds a value outside 0..1.
    """
    from highdicom.sr import (
        ComprehensiveSR, DeviceObserverIdentifyingAttributes, MeasurementReport, ObservationContext,
        ObserverContext,
    )
    from pydicom.sr.codedict import codes

    evidence = source_header(source)
    _check(evidence, result)
    report = MeasurementReport(
        observation_context=ObservationContext(
            observer_device_context=ObserverContext(
                observer_type=codes.cid270.Device,
                observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                    uid=derived_uid(_NS_DEVICE, result.model_id),
                    name=result.model_id,
                    manufacturer_name=MANUFACTURER,
                    model_name=SR_MODEL_NAME,
                ),
            ),
        ),
        procedure_reported=_code("399208008", "Plain chest X-ray", "SCT"),
        imaging_measurements=[_group(evidence, result)],
    )
    predecessor = _predecessor(evidence, result)
    with warnings.catch_warnings():  # highdicom's and pydicom's warnings quote names (a name's components)
        warnings.simplefilter("ignore")
        sr = _comprehensive(ComprehensiveSR, evidence, report, result, predecessor)
    # every text is kept as it was, whatever the archive's character set: UTF-8 encodes all of it
    sr.SpecificCharacterSet = "ISO_IR 192"
    return sr


def _comprehensive(ComprehensiveSR, evidence, report, result: ScoredResult, predecessor):
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return ComprehensiveSR(
        evidence=[evidence],
        content=report,
        series_instance_uid=sr_series_uid(str(evidence.StudyInstanceUID), result.model_id),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sr_uid(result.sop_instance_uid, result.model_id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=SR_MODEL_NAME,
        software_versions=[v[:64] for v in (result.model_id, result.model_version) if v],
        series_description=SERIES_DESCRIPTION_SR,
        is_complete=True,
        is_final=True,
        previous_versions=[predecessor] if predecessor is not None else None,
        content_date=result.run_date,
        content_time=dt.time(0, 0),  # the run gives a date only; a fixed time keeps a rebuilt SR's content the same
        series_date=result.run_date,
        series_time=dt.time(0, 0),
        coding_schemes=[CodingSchemeIdentificationItem(designator=SCHEME, name=_SCHEME_NAME)],
    )
