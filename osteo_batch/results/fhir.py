"""A run's scores as one FHIR transaction Bundle of RiskAssessments, written privately or POSTed.

Why FHIR beside the SR: the SR reaches the radiologist's viewer; the GP who
orders the DXA scan works from the record, and the record speaks FHIR. The
models are **FHIR R4B** (``fhir.resources.R4B``): R4-family servers are what
hospitals run, and R4B's RiskAssessment is R4's. Every bundle is validated by
parsing it with those models before it is returned.

Why ``PUT RiskAssessment?identifier=...`` and not POST: a conditional update
creates the assessment the first time and replaces it on every re-send, so a
run posted twice (a retry, a re-run of the night) never duplicates. Each
assessment's identifier is ``<sop instance uid>/<model id>``, the same pair the
SR's UID is derived from (:func:`osteo_batch.results.sr.sr_uid`): one image,
one model, one assessment.

The subject and the imaging study are logical references by identifier (the
patient by ``identifier_system`` and the DICOM PatientID, the study by
``urn:dicom:uid`` and ``urn:oid:<StudyInstanceUID>``): we never know the
server's resource ids, and a server resolves or keeps them as given.

Errors never hold patient data: a failed POST names the URL without
credentials, the HTTP status and the OperationOutcome's issue codes, never
the response text (a server may echo the identifiers it refused).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from osteo_batch.errors import InternalError, UserError
from osteo_batch.outputs import write_private
from osteo_batch.results import DISCLAIMER

if TYPE_CHECKING:
    from osteo_batch.pacs.credentials import Credentials

__all__ = ["FhirResult", "FhirError", "OUTCOME", "build_bundle", "write_bundle", "post_bundle", "assessment_system"]

#: What every prediction is a probability of.
OUTCOME = "osteoporosis (DXA T-score <= -2.5)"
#: HL7's risk-probability codes, for the bands that have one; another band is text only.
_RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
_BANDS = {"low": "Low likelihood", "moderate": "Moderate likelihood", "high": "High likelihood"}
#: The ImagingStudy identifier system for a DICOM Study Instance UID (FHIR ImagingStudy.identifier).
_DICOM_UID = "urn:dicom:uid"
#: Namespace of the entries' fullUrl (urn:uuid, derived from the assessment identifier).
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "osteo-batch/risk-assessment")
FHIR_JSON = "application/fhir+json"


class FhirError(UserError):
    """The FHIR server could not be reached or refused the bundle: one line, no patient data."""

    code = "fhir_post_failed"
    fix = "check the FHIR server's URL, that it is up, and the credentials; the bundle file can be posted again"


@dataclass(frozen=True)
class FhirResult:
    """One image's score by one model, as the RiskAssessment needs it."""

    patient_id: str  # the DICOM PatientID, in identifier_system
    study_instance_uid: str
    sop_instance_uid: str
    score: float  # probability of osteoporosis, 0 to 1
    band: str
    model_id: str
    occurrence: dt.date | dt.datetime  # when the assessment was made (the run)


def assessment_system(identifier_system: str) -> str:
    """The identifier system of our RiskAssessments: ``identifier_system`` + ``/risk-assessment``."""
    return identifier_system.rstrip("/") + "/risk-assessment"


def _occurrence(when: dt.date | dt.datetime) -> str:
    """FHIR dateTime: a date alone, or a time with its zone (FHIR requires one; a naive time is local)."""
    if isinstance(when, dt.datetime):
        return (when if when.tzinfo is not None else when.astimezone()).isoformat()
    return when.isoformat()


def _risk(band: str) -> dict:
    key = band.strip().lower()
    risk: dict[str, Any] = {"text": band.strip()}
    if key in _BANDS:
        risk["coding"] = [{"system": _RISK_PROBABILITY, "code": key, "display": _BANDS[key]}]
    return risk


def _entry(r: FhirResult, identifier_system: str, ra_system: str) -> dict:
    if not (isinstance(r.score, (int, float)) and math.isfinite(r.score) and 0.0 <= r.score <= 1.0):
        raise InternalError(f"FhirResult.score must be a probability between 0 and 1, got {r.score!r}",
                            code="fhir_value_out_of_range")
    value = f"{r.sop_instance_uid}/{r.model_id}"
    resource = {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": ra_system, "value": value}],
        "status": "final",
        "method": {"text": r.model_id},
        "subject": {"type": "Patient", "identifier": {"system": identifier_system, "value": r.patient_id}},
        "occurrenceDateTime": _occurrence(r.occurrence),
        "basis": [{"type": "ImagingStudy",
                   "identifier": {"system": _DICOM_UID, "value": f"urn:oid:{r.study_instance_uid}"}}],
        "prediction": [{
            "outcome": {"text": OUTCOME},
            "probabilityDecimal": float(r.score),
            "qualitativeRisk": _risk(r.band),
        }],
        "note": [{"text": DISCLAIMER}],
    }
    safe = ":/.-_~"
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid5(_NS, ra_system + '|' + value)}",
        "resource": resource,
        "request": {"method": "PUT",
                    "url": f"RiskAssessment?identifier={quote(ra_system, safe=safe)}|{quote(value, safe=safe)}"},
    }


def _validated(bundle: dict) -> dict:
    """``bundle`` parsed by the R4B models and dumped again; a refusal names the fields, never their values."""
    from fhir.resources.R4B.bundle import Bundle

    try:
        model = Bundle.model_validate(bundle)
    except ValueError as e:  # pydantic's ValidationError; its text repeats the values, so only the places go on
        errors = e.errors() if callable(getattr(e, "errors", None)) else []
        where = sorted({".".join(str(p) for p in err.get("loc", ())) for err in errors}) or ["?"]
        raise InternalError(f"the RiskAssessment bundle is not valid FHIR R4B at {', '.join(where)}",
                            code="fhir_bundle_invalid") from None
    return json.loads(model.model_dump_json())


def build_bundle(results: list[FhirResult], *, identifier_system: str, run_id: str) -> dict:
    """A FHIR R4B transaction Bundle with one conditional-update RiskAssessment entry per result.

    ``identifier_system`` is the system of the hospital's patient identifiers
    (the DICOM PatientIDs in ``results``); the assessments' own identifiers are
    in :func:`assessment_system` of it. ``run_id`` becomes the bundle's
    identifier. Returns the bundle as JSON-ready dict.

    A result without a PatientID is left out: a RiskAssessment must name its
    subject, and one image without an ID must not hold back the night's other
    assessments. ``len(results) - len(bundle["entry"])`` says how many.
    """
    if not identifier_system.strip():
        raise UserError("a FHIR bundle needs the patient identifier system", code="fhir_identifier_system_missing",
                        fix="set the FHIR patient identifier system (a URI, e.g. urn:oid:... or https://...)")
    ra_system = assessment_system(identifier_system)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "identifier": {"system": ra_system + "/run", "value": run_id},
        "entry": [_entry(r, identifier_system, ra_system) for r in results if (r.patient_id or "").strip()],
    }
    return _validated(bundle)


def write_bundle(bundle: dict, path: Path) -> Path:
    """Write ``bundle`` as JSON to ``path``: mode 0600, its folder 0700, atomically (a reader never sees half)."""
    return write_private(path, json.dumps(bundle, ensure_ascii=False, indent=1) + "\n")


def _issue_codes(response) -> str:
    """The OperationOutcome's issue codes (``invalid``, ``conflict``, ...): coded, so free of patient data."""
    try:
        body = response.json()
        codes = sorted({str(i.get("code")) for i in body.get("issue", []) if i.get("code")})
    except (ValueError, AttributeError, TypeError):
        return ""
    return f" ({', '.join(c for c in codes if c.isascii() and c.replace('-', '').isalnum())})" if codes else ""


def post_bundle(bundle: dict, url: str, credentials: Credentials | None = None, timeout_s: float = 30) -> dict:
    """POST the transaction ``bundle`` to the FHIR server's base ``url``; returns the server's response bundle.

    ``credentials`` (:class:`~osteo_batch.pacs.credentials.Credentials`, Basic
    or Bearer) go in the ``Authorization`` header, never in ``url``: a URL with
    user information is refused before anything is sent. Raises
    :class:`FhirError` when the server cannot be reached, times out or answers
    other than 2xx.
    """
    import requests

    from osteo_batch.pacs.dicomweb import display_url

    shown = display_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FhirError("the FHIR URL must start with http:// or https:// and name a host", code="fhir_url_invalid",
                        fix="give the FHIR server's base URL, e.g. https://fhir.example.org/fhir")
    if parts.username is not None or parts.password is not None:
        raise FhirError(f"the FHIR URL {shown} holds credentials; they would be logged with it",
                        code="fhir_url_invalid", fix="give the credentials in a credentials file or variable")
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if credentials is not None:
        headers["Authorization"] = credentials.authorization()
    try:
        response = requests.post(url, data=json.dumps(bundle, ensure_ascii=False).encode("utf-8"),
                                 headers=headers, timeout=timeout_s)
    except requests.Timeout:
        raise FhirError(f"the FHIR server at {shown} did not answer within {timeout_s:g} s") from None
    except requests.RequestException as e:
        raise FhirError(f"could not POST the bundle to the FHIR server at {shown} ({type(e).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise FhirError(f"the FHIR server at {shown} refused the bundle: HTTP {response.status_code}"
                        f"{_issue_codes(response)}")
    try:
        return response.json()
    except ValueError:
        return {}
