"""Read one file's DICOM header and decide whether it is a scoreable image.

Why headers only: a sweep over millions of files must not decode pixels. The
file is opened by :func:`osteo_batch.dicom.dataset.open_dataset` with
``defer_size`` so Pixel Data is located (offset and length) but not loaded,
which is enough to tell an image from a report, a complete file from a partial
transfer (the element structure is walked to its end), a deflate bomb from an
image, and a header that lies about its size, before anything is allocated.
Files are recognised by content (``force=True``), never by name: files without
a preamble or a ``.dcm`` extension are read, and whatever comes back is checked
to really be a DICOM data set.

Why quietly: pydicom's warnings quote header values, patient names included
(:mod:`osteo_batch.dicom.quiet`). Values that break their VR's rules are
counted instead (``header_issues``), so that of two copies of one SOP Instance
UID the sweep keeps the intact one (``sql/resolve_status.sql``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from typing import Any

from osteo_batch.dicom.dataset import IDENTIFYING, open_dataset
from osteo_batch.dicom.limits import pixel_bytes, size_guard
from osteo_batch.dicom.quiet import pydicom_warnings, reading
from osteo_batch.dicom.rejections import DatasetError
from osteo_batch.dicom.truncation import PIXEL_TAGS
from osteo_batch.reasons import Reason

#: Keywords kept in ``instances.header`` so selection rules can be re-evaluated
#: without re-reading files. Pixel-level tags and long texts are left out.
HEADER_KEYWORDS = (
    "SOPClassUID", "Modality", "BodyPartExamined", "ViewPosition", "PatientSex", "PatientAge",
    "PatientBirthDate", "StudyDate", "StudyDescription", "SeriesDescription", "ProtocolName",
    "ImageType", "PresentationIntentType", "Manufacturer", "ManufacturerModelName",
    "InstitutionName", "PhotometricInterpretation", "Rows", "Columns", "BitsStored",
    "BitsAllocated", "SamplesPerPixel", "NumberOfFrames", "PixelRepresentation", "ImageLaterality",
)


@dataclass
class HeaderResult:
    """What the sweep records for one file. ``reason`` is set when rejected."""

    path: str
    reason: str | None = None
    detail: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)


def _text(ds, keyword: str) -> str | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    if keyword == "PatientName":
        return str(v)
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v).strip() or None


def _date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.I)


def age_at_study(birth: dt.date | None, study: dt.date | None, patient_age: str | None) -> float | None:
    """Age in years at the study: from the birth date, else from PatientAge (``065Y``)."""
    if birth and study and study >= birth:
        years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
        return float(years)
    if patient_age:
        m = _AGE.match(patient_age)
        if m:
            n, unit = int(m.group(1)), m.group(2).upper()
            return {"Y": float(n), "M": n / 12.0, "W": n / 52.18, "D": n / 365.25}[unit]
    return None


def _is_image_class(sop_class_uid: str | None) -> bool:
    if not sop_class_uid:
        return True  # unknown: let pixel checks decide
    from pydicom.uid import UID

    name = UID(sop_class_uid).name
    if name == sop_class_uid:  # private or unknown class
        return True
    return "Image" in name


def _decoder_available(ts: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(ts).is_available)
    except NotImplementedError:
        return False


def read_header(path: str | os.PathLike, roots: tuple[str, ...] | None = None) -> HeaderResult:
    """Read the header of ``path``; never raises for bad files, never prints what it read.

    ``roots`` (``osteo_batch.archive.walk.real_roots``): a path that resolves
    outside them is refused (``outside_archive``) without being opened.
    The file is opened by :func:`osteo_batch.dicom.dataset.open_dataset`
    (complete, bounded, a regular file), inside :func:`quiet.reading`: what
    pydicom finds wrong is counted into ``fields["header_issues"]`` with the
    values that break their VR's rules, never shown.
    """
    res = HeaderResult(path=os.fspath(path))
    with reading() as caught:
        try:
            ds = open_dataset(res.path, roots, defer_size=1024)
        except DatasetError as e:
            res.reason, res.detail = e.reason, e.detail
            return res
        structural = pydicom_warnings(caught)
        _judge(ds, res, structural, caught)
    return res


def judge_metadata(ds, path: str, *, has_pixel_data: bool | None) -> HeaderResult:
    """Judge an instance from the metadata a PACS sent (WADO-RS metadata, C-FIND at IMAGE level).

    The same checks as :func:`read_header`, on the same keywords, so a PACS
    instance gets the status and reason its file would get, except those that
    need the file itself: whether Pixel Data is there (``has_pixel_data``
    None: the PACS does not say) and whether its length fits the header are
    checked on the retrieved file, before it is decoded
    (:mod:`osteo_batch.pacs.spool`). ``path`` is the instance's URI.
    """
    res = HeaderResult(path=path)
    with reading() as caught:
        _judge(ds, res, 0, caught, pixels=False if has_pixel_data is False else None)
    return res


def _own_object(ds) -> bool:
    """One of osteo-batch's own results (an SR or a heat map sent back to the PACS), by content."""
    from osteo_batch.results.own import is_own_object

    try:
        return is_own_object({kw: _text(ds, kw) for kw in (
            "SOPClassUID", "Manufacturer", "ManufacturerModelName", "SeriesDescription", "Modality")})
    except Exception:
        return False


def _judge(ds, res: HeaderResult, structural: int, caught: list, *, pixels: bool | None = True) -> None:
    """Fill ``res`` from the opened data set ``ds``, or set its reason.

    ``pixels``: whether the data set's Pixel Data can be checked here (True: a
    file), is known to be missing (False) or is checked later (None: PACS metadata).
    """
    # a DICOMDIR, report or other non-image object is DICOM, just not an image:
    # say so, whatever its top-level tags hold
    meta = getattr(ds, "file_meta", None)
    try:
        sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    except Exception:
        sop_class = None
    if _own_object(ds):  # our own SR or heat map, back from the PACS: never scored, and said so
        res.reason = Reason.OWN_OBJECT.value
        _fill_fields_quietly(ds, res)
        return
    if sop_class and not _is_image_class(str(sop_class)):
        res.reason = Reason.NOT_IMAGE.value
        return

    # force=True parses anything; a real data set has at least some standard tags
    if len(ds) == 0 or not any(k in ds for k in IDENTIFYING):
        # with a DICM prefix or a File Meta group it began as DICOM: the data set stops before its identity
        began = getattr(ds, "preamble", None) is not None or (meta is not None and len(meta) > 0)
        res.reason = Reason.TRUNCATED.value if began else Reason.NOT_DICOM.value
        res.detail = "no identifying tags"
        return

    try:
        before = len(caught)
        issues = structural + count_header_issues(ds)
        _fill_fields(ds, res)
        issues += pydicom_warnings(caught[before:])  # indexed values that did not decode in their character set
    except Exception as e:  # a malformed value in a tag we index
        res.reason, res.detail = Reason.NOT_DICOM.value, f"header value: {type(e).__name__}"
        return
    f = res.fields
    f["header_issues"] = issues
    uid = f.get("sop_instance_uid")
    if not uid:
        res.reason = Reason.MISSING_SOP_INSTANCE_UID.value
        return
    if not _USABLE_UID.fullmatch(uid):
        # a damaged UID (it ran into the next elements, say) identifies nothing; it may hold
        # bytes of other values, so it is not kept either
        f["sop_instance_uid"] = None
        res.reason, res.detail = Reason.MISSING_SOP_INSTANCE_UID.value, "(0008,0018) is not a UID"
        return
    if not _is_image_class(f.get("sop_class_uid")):
        res.reason = Reason.NOT_IMAGE.value
        return
    if pixels is True:
        px = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    else:  # PACS metadata: no pixel values came, only (maybe) whether there are any
        px = None if pixels is False else _NO_LENGTH
    if px is None:
        res.reason = Reason.NO_PIXEL_DATA.value
        return
    reason = _check_pixel_geometry(ds, px)
    if reason:
        res.reason, res.detail = reason
        return
    ts = f.get("transfer_syntax_uid")
    if ts and not _decoder_available(ts):
        res.reason, res.detail = Reason.UNSUPPORTED_TRANSFER_SYNTAX.value, ts


class _NoLength:
    """Pixel Data whose length is not known here (PACS metadata): the size guard applies, the length check waits."""

    length = None


_NO_LENGTH = _NoLength()


def _fill_fields_quietly(ds, res: HeaderResult) -> None:
    try:
        _fill_fields(ds, res)
    except Exception:
        res.fields = {}


#: What a SOP Instance UID must at least look like to identify a file (looser than the
#: standard's rules: real archives hold UIDs with leading zeros, which still identify).
_USABLE_UID = re.compile(r"[0-9.]{1,64}")

#: What each VR's stored bytes may hold (PS3.5 6.2), per value; the values of a
#: multi-valued element are split at ``\\``. Text VRs are checked for control
#: characters instead (ESC may switch character sets; LT, ST and UT may hold TAB,
#: LF, FF and CR).
_VR_BYTES = {
    "UI": re.compile(rb"[0-9.]{0,64}"),
    "DA": re.compile(rb"[0-9]{8}|[0-9]{0,8}-[0-9]{0,8}|"),
    "TM": re.compile(rb"[0-9.\-]{0,28}"),
    "DT": re.compile(rb"[0-9.+\-]{0,54}"),
    "IS": re.compile(rb"[ ]*[+\-]?[0-9]{1,12}[ ]*|"),
    "DS": re.compile(rb"[ ]*[+\-]?[0-9.]+([eE][+\-]?[0-9]+)?[ ]*|", ),
    "CS": re.compile(rb"[A-Z0-9_ ]{0,16}"),
    "AS": re.compile(rb"[0-9]{3}[DWMY]|"),
}
_TEXT_MAX = {"AE": 16, "SH": 16, "LO": 64, "PN": 324, "ST": 1024, "LT": 10240, "UC": None, "UT": None}
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_CONTROL_SHORT = re.compile(rb"[\x00-\x1a\x1c-\x1f\x7f]")
_TEXT = {"LT", "ST", "UT"}
#: VRs whose longest valid value is far under the defer size: a deferred one has a damaged length.
_SHORT = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"}


def _bad_bytes(vr: str, raw: bytes) -> int:
    """1 when the stored bytes of one element break their VR's rules (padding stripped), else 0."""
    if vr in _VR_BYTES:
        rx = _VR_BYTES[vr]
        body = raw.rstrip(b"\0 ") if vr == "UI" else raw.rstrip(b" ")
        return int(any(not rx.fullmatch(v) for v in body.split(b"\\")))
    if vr in _TEXT_MAX:
        control = _CONTROL if vr in _TEXT else _CONTROL_SHORT
        if control.search(raw):
            return 1
        most = _TEXT_MAX[vr]
        parts = (raw,) if vr in _TEXT else raw.split(b"\\")
        return int(most is not None and any(len(v.rstrip(b" ")) > most for v in parts))
    return 0


def count_header_issues(ds, *, _depth: int = 0) -> int:
    """Values of ``ds`` (and its File Meta, and parsed sequence items) that break their VR's rules, plus mismatches.

    Why: when two files claim one SOP Instance UID, the copy to keep is the
    one whose header is intact; a damaged byte shows as a value its VR does
    not allow (a letter in a UID or a date, a control character in a name),
    a short-VR element whose length passed the defer size, or a File Meta
    that names another instance or class than the data set. Counted, never
    quoted. Why on the stored bytes: converting and validating every value
    through pydicom cost more than the rest of a header read; a regular
    expression per element costs microseconds, and a sweep reads millions.
    """
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement

    n = 0
    for tag in list(ds.keys()):
        t = int(tag)
        if t in PIXEL_TAGS:
            continue
        elem = ds.get_item(tag, keep_deferred=True)
        vr = elem.VR
        if vr is None or vr in ("UN", "OB or OW", "US or SS"):  # implicit VR: the dictionary's
            try:
                vr = dictionary_VR(t)
            except KeyError:
                continue
        if isinstance(elem, RawDataElement):
            if elem.value is None:
                n += bool(elem.length) and vr in _SHORT  # deferred: longer than any valid value
            elif isinstance(elem.value, (bytes, bytearray)) and vr != "SQ":
                n += _bad_bytes(vr, bytes(elem.value))
            continue
        if elem.VR == "SQ" and _depth < 8:  # a sequence pydicom has parsed already
            for item in elem.value or ():
                n += count_header_issues(item, _depth=_depth + 1)
    if _depth == 0:
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            n += count_header_issues(meta, _depth=1)
            for meta_kw, ds_kw in (("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
                                   ("MediaStorageSOPClassUID", "SOPClassUID")):
                a, b = _text(meta, meta_kw), _text(ds, ds_kw)
                if a and b and a != b:
                    n += 1
    return n


def _int(ds, keyword: str) -> int | None:
    try:
        v = ds.get(keyword)
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _check_pixel_geometry(ds, px) -> tuple[str, str] | None:
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated")
    spp = _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    if not rows or not cols or not bits:
        return Reason.PIXELS_INCONSISTENT.value, "Rows, Columns or Bits Allocated missing"
    too_large = size_guard(rows, cols, spp, frames, bits)
    if too_large:
        return Reason.IMAGE_TOO_LARGE.value, too_large
    length = getattr(px, "length", None)
    if length is not None and length != 0xFFFFFFFF:  # native (not encapsulated); open_dataset saw it complete
        expected = pixel_bytes(rows, cols, bits, spp, frames)
        if length < expected:
            return Reason.PIXELS_INCONSISTENT.value, f"{length} bytes < {expected} expected"
    return None


def _fill_fields(ds, res: HeaderResult) -> None:
    meta = getattr(ds, "file_meta", None)
    ts = None
    if meta is not None and "TransferSyntaxUID" in meta:
        ts = str(meta.TransferSyntaxUID)
    birth = _date(_text(ds, "PatientBirthDate"))
    study = _date(_text(ds, "StudyDate")) or _date(_text(ds, "SeriesDate")) or _date(_text(ds, "AcquisitionDate"))
    patient_age = _text(ds, "PatientAge")
    res.fields = {
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "transfer_syntax_uid": ts,
        "patient_id": _text(ds, "PatientID"),
        "patient_name": _text(ds, "PatientName"),
        "sex": _text(ds, "PatientSex"),
        "birth_date": birth,
        "age": age_at_study(birth, study, patient_age),
        "study_date": study,
        "accession_number": _text(ds, "AccessionNumber"),
        "modality": _text(ds, "Modality"),
        "view": _text(ds, "ViewPosition"),
        "body_part": _text(ds, "BodyPartExamined"),
        "institution_name": _text(ds, "InstitutionName"),
        "manufacturer": _text(ds, "Manufacturer"),
        "photometric": _text(ds, "PhotometricInterpretation"),
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "bits_stored": _int(ds, "BitsStored"),
    }
    header: dict[str, Any] = {}
    for kw in HEADER_KEYWORDS:
        v = _text(ds, kw)
        if v is not None:
            header[kw] = v
    res.header = header
