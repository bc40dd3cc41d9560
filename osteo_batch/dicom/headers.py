"""Read one file's DICOM header and decide whether it is a scoreable image.

Why headers only: a sweep over millions of files must not decode pixels. The
file is parsed with ``defer_size`` so Pixel Data is located (offset and length)
but not loaded, which is enough to tell an image from a report, a complete file
from a partial transfer, and a header that lies about its size, before anything
is allocated. Files are recognised by content (``force=True``), never by name:
files without a preamble or a ``.dcm`` extension are read, and whatever comes
back is checked to really be a DICOM data set.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

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

#: Refuse images whose header claims more than this many bytes of pixels.
MAX_PIXEL_BYTES = 512 * 1024 * 1024
MAX_SIDE = 16384


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


def read_header(path: str | os.PathLike) -> HeaderResult:
    """Read the header of ``path``; never raises for bad files."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from osteo_batch.archive import fs_path

    res = HeaderResult(path=os.fspath(path))
    p = fs_path(res.path)
    try:
        size = os.path.getsize(p)
    except OSError as e:
        res.reason, res.detail = Reason.UNREADABLE.value, type(e).__name__
        return res
    if size == 0:
        res.reason = Reason.EMPTY_FILE.value
        return res
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(p, force=True, defer_size=1024)
    except (OSError, PermissionError) as e:
        res.reason, res.detail = Reason.UNREADABLE.value, type(e).__name__
        return res
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, NotImplementedError, OverflowError) as e:
        res.reason, res.detail = Reason.NOT_DICOM.value, type(e).__name__
        return res
    except Exception as e:  # pydicom raises a wide range on garbage input
        res.reason, res.detail = Reason.NOT_DICOM.value, type(e).__name__
        return res
    hit_eof = any("End of file" in str(w.message) for w in caught)
    if hit_eof and len(ds) == 0:
        # pydicom drops the whole data set when encapsulated pixel data ends
        # early; a header-only read tells a partial transfer from junk
        try:
            head = pydicom.dcmread(p, force=True, stop_before_pixels=True)
        except Exception:
            head = None
        res.reason = Reason.TRUNCATED.value if head is not None and len(head) else Reason.NOT_DICOM.value
        return res

    # a DICOMDIR, report or other non-image object is DICOM, just not an image:
    # say so, whatever its top-level tags hold
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if sop_class and not _is_image_class(str(sop_class)):
        res.reason = Reason.NOT_IMAGE.value
        return res

    # force=True parses anything; a real data set has at least some standard tags
    if len(ds) == 0 or not any(k in ds for k in ("SOPInstanceUID", "SOPClassUID", "PatientID", "Modality", "StudyInstanceUID")):
        res.reason = Reason.TRUNCATED.value if hit_eof and len(ds) else Reason.NOT_DICOM.value
        return res

    try:
        _fill_fields(ds, res)
    except Exception as e:  # a malformed value in a tag we index
        res.reason, res.detail = Reason.NOT_DICOM.value, f"header value: {type(e).__name__}"
        return res

    f = res.fields
    if not f.get("sop_instance_uid"):
        res.reason = Reason.MISSING_SOP_INSTANCE_UID.value
        return res
    if not _is_image_class(f.get("sop_class_uid")):
        res.reason = Reason.NOT_IMAGE.value
        return res
    px = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    if px is None:
        res.reason = Reason.TRUNCATED.value if hit_eof else Reason.NO_PIXEL_DATA.value
        return res
    if hit_eof:
        res.reason = Reason.TRUNCATED.value
        return res
    # a deflated data set is parsed from its inflated bytes: offsets exceed the file size
    deflated = f.get("transfer_syntax_uid") == "1.2.840.10008.1.2.1.99"
    reason = _check_pixel_geometry(ds, px, None if deflated else size)
    if reason:
        res.reason, res.detail = reason
        return res
    ts = f.get("transfer_syntax_uid")
    if ts and not _decoder_available(ts):
        res.reason, res.detail = Reason.UNSUPPORTED_TRANSFER_SYNTAX.value, ts
    return res


def _int(ds, keyword: str) -> int | None:
    try:
        v = ds.get(keyword)
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _check_pixel_geometry(ds, px, file_size: int | None) -> tuple[str, str] | None:
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated")
    spp = _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    if not rows or not cols or not bits:
        return Reason.PIXELS_INCONSISTENT.value, "Rows, Columns or Bits Allocated missing"
    if rows > MAX_SIDE or cols > MAX_SIDE or rows * cols * spp * frames * bits // 8 > MAX_PIXEL_BYTES:
        return Reason.IMAGE_TOO_LARGE.value, f"{rows}x{cols}x{frames} frames"
    length = getattr(px, "length", None)
    tell = getattr(px, "value_tell", None)
    if length is not None and length != 0xFFFFFFFF:  # native (not encapsulated)
        if file_size is not None and tell is not None and tell + length > file_size:
            return Reason.TRUNCATED.value, "pixel data runs past end of file"
        expected = rows * cols * spp * frames * bits // 8 if bits % 8 == 0 else (rows * cols * spp * frames * bits + 7) // 8
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
