"""Recognise osteo-batch's own objects (our risk SRs, our heat-map captures) by what they hold.

Why by content and not by path: once results go back to the PACS, the next
night's sweep lists them among the study's instances, and a folder archive may
hold copies anywhere. Scoring our own SR, or a capture of our own heat map,
would be scoring ourselves. What marks them is what we wrote into them: an SR
or Secondary Capture SOP class with Manufacturer ``osteo-batch`` (and, for a
capture, our model name or series description).

Only SR and Secondary Capture classes count: a CR or DX image whose
Manufacturer reads ``osteo-batch`` is somebody's device (or our synthetic
phantom), never ours, and is judged like any other image.

The constants here are the ones :mod:`osteo_batch.results.sr` writes, so the
writer and the recogniser cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = [
    "MANUFACTURER", "SR_MODEL_NAME", "SC_MODEL_NAME", "SERIES_DESCRIPTION_SR", "SERIES_DESCRIPTION_SC",
    "is_own_object", "is_sr_class", "is_sc_class",
]

#: Manufacturer (0008,0070) of every object osteo-batch writes.
MANUFACTURER = "osteo-batch"
#: ManufacturerModelName (0008,1090) of our risk SR.
SR_MODEL_NAME = "osteo-batch risk SR"
#: ManufacturerModelName of our heat-map Secondary Capture.
SC_MODEL_NAME = "osteo-batch heat map SC"
#: SeriesDescription (0008,103E) of the risk SR series.
SERIES_DESCRIPTION_SR = "osteo-batch risk"
#: SeriesDescription of the heat-map series.
SERIES_DESCRIPTION_SC = "osteo-batch heat map"

#: Every SR storage class (Basic Text, Enhanced, Comprehensive, the CAD and dose reports, ...)
#: sits under this root; Key Object Selection (88.59) does too and is not ours to write either.
_SR_ROOT = "1.2.840.10008.5.1.4.1.1.88."
#: Secondary Capture and the four multi-frame Secondary Capture classes.
_SC_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
})


def _value(header: Mapping[str, Any], keyword: str) -> str:
    """A header value as stripped text ('' when absent): the sweep keeps text, pydicom may give UIDs or padding."""
    v = header.get(keyword)
    return "" if v is None else str(v).strip()


def is_sr_class(sop_class_uid: str) -> bool:
    """Whether ``sop_class_uid`` is a Structured Report storage class."""
    return sop_class_uid.strip().startswith(_SR_ROOT)


def is_sc_class(sop_class_uid: str) -> bool:
    """Whether ``sop_class_uid`` is a (single- or multi-frame) Secondary Capture class."""
    return sop_class_uid.strip() in _SC_CLASSES


def is_own_object(header: Mapping[str, Any]) -> bool:
    """Whether ``header`` (keyword → value, as the sweep keeps it) describes an object osteo-batch wrote.

    True for an SR class with Manufacturer :data:`MANUFACTURER`, and for a
    Secondary Capture class with that Manufacturer and our model name
    (:data:`SC_MODEL_NAME`) or series description (:data:`SERIES_DESCRIPTION_SC`).
    False for every other class, whatever its Manufacturer says.
    """
    sop_class = _value(header, "SOPClassUID")
    if _value(header, "Manufacturer") != MANUFACTURER:
        return False
    if is_sr_class(sop_class):
        return True
    if is_sc_class(sop_class):
        return (_value(header, "ManufacturerModelName") == SC_MODEL_NAME
                or _value(header, "SeriesDescription") == SERIES_DESCRIPTION_SC)
    return False
