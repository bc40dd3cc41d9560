"""The RiskAssessment transaction bundle: valid R4B, one conditional update per result, private file, real HTTP."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import stat
import threading
import time
from contextlib import contextmanager

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.riskassessment import RiskAssessment

from osteo_batch.errors import InternalError, UserError
from osteo_batch.pacs.credentials import Credentials
from osteo_batch.results import DISCLAIMER
from osteo_batch.results.fhir import OUTCOME, FhirError, FhirResult, build_bundle, post_bundle, write_bundle

SYSTEM = "https://hospital.example/patient-id"
MODEL = "m-97f99f6bb40e048c"


def _results() -> list[FhirResult]:
    return [
        FhirResult("PAT-0001", "2.25.2001", "2.25.1001", 0.81, "high", MODEL, dt.date(2025, 6, 2)),
        FhirResult("PAT-0002", "2.25.2002", "2.25.1002", 0.12, "low", MODEL,
                   dt.datetime(2025, 6, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
        FhirResult("PAT-0002", "2.25.2002", "2.25.1003", 0.45, "borderline", MODEL, dt.date(2025, 6, 2)),
    ]


def _assessments(bundle: dict) -> list[RiskAssessment]:
    parsed = Bundle.model_validate(bundle)
    return [e.resource for e in parsed.entry]


def test_bundle_is_a_valid_r4b_transaction_with_one_assessment_per_result():
    bundle = build_bundle(_results(), identifier_system=SYSTEM, run_id="night-2025-06-02")
    parsed = Bundle.model_validate(bundle)  # re-parse: the JSON we return is valid R4B
    assert parsed.type == "transaction" and len(parsed.entry) == 3
    assert all(isinstance(r, RiskAssessment) for r in _assessments(bundle))
    assert bundle["identifier"]["value"] == "night-2025-06-02"


def test_each_assessment_carries_subject_study_score_band_model_and_disclaimer():
    bundle = build_bundle(_results(), identifier_system=SYSTEM, run_id="r1")
    first, second, third = (e["resource"] for e in bundle["entry"])
    assert first["status"] == "final"
    assert first["subject"]["identifier"] == {"system": SYSTEM, "value": "PAT-0001"}
    assert first["basis"][0]["identifier"] == {"system": "urn:dicom:uid", "value": "urn:oid:2.25.2001"}
    (prediction,) = first["prediction"]
    assert prediction["outcome"]["text"] == OUTCOME and prediction["probabilityDecimal"] == pytest.approx(0.81)
    assert prediction["qualitativeRisk"]["text"] == "high"
    assert prediction["qualitativeRisk"]["coding"][0]["code"] == "high"
    assert third["prediction"][0]["qualitativeRisk"] == {"text": "borderline"}  # no HL7 code for it: text only
    assert first["method"]["text"] == MODEL
    assert first["note"] == [{"text": DISCLAIMER}]
    assert first["occurrenceDateTime"] == "2025-06-02"
    when = dt.datetime.fromisoformat(second["occurrenceDateTime"].replace("Z", "+00:00"))
    assert when == _results()[1].occurrence and when.utcoffset() is not None  # FHIR: a time has its zone


def test_entries_are_conditional_updates_on_image_and_model():
    """Re-posting the same run updates the same assessments: the URL and identifier depend on image and model only."""
    a = build_bundle(_results(), identifier_system=SYSTEM, run_id="r1")
    b = build_bundle(_results()[:1], identifier_system=SYSTEM, run_id="r2")
    entry = a["entry"][0]
    assert entry["request"] == {
        "method": "PUT",
        "url": f"RiskAssessment?identifier={SYSTEM}/risk-assessment|2.25.1001/{MODEL}",
    }
    assert entry["resource"]["identifier"] == [{"system": f"{SYSTEM}/risk-assessment", "value": f"2.25.1001/{MODEL}"}]
    assert b["entry"][0]["request"] == entry["request"] and b["entry"][0]["fullUrl"] == entry["fullUrl"]
    assert len({e["request"]["url"] for e in a["entry"]}) == 3


def test_a_result_without_a_patient_id_is_left_out():
    nobody = FhirResult("", "2.25.2009", "2.25.1009", 0.5, "moderate", MODEL, dt.date(2025, 6, 2))
    bundle = build_bundle([*_results(), nobody], identifier_system=SYSTEM, run_id="r1")
    assert len(bundle["entry"]) == 3
    assert "2.25.1009" not in json.dumps(bundle)
    assert build_bundle([nobody], identifier_system=SYSTEM, run_id="r1").get("entry", []) == []


def test_bad_values_are_refused_without_patient_data():
    bad = [FhirResult("PAT-0001", "2.25.1", "2.25.2", 1.7, "high", MODEL, dt.date(2025, 6, 2))]
    with pytest.raises(InternalError, match="score must be a probability"):
        build_bundle(bad, identifier_system=SYSTEM, run_id="r")
    empty_band = [FhirResult("PAT-0001", "2.25.1", "2.25.2", 0.5, "", MODEL, dt.date(2025, 6, 2))]
    with pytest.raises(InternalError, match=r"not valid FHIR R4B at .*qualitativeRisk") as e:
        build_bundle(empty_band, identifier_system=SYSTEM, run_id="r")
    assert "PAT-0001" not in str(e.value)
    with pytest.raises(UserError, match="patient identifier system"):
        build_bundle(_results(), identifier_system=" ", run_id="r")


def test_write_bundle_is_private(tmp_path):
    bundle = build_bundle(_results(), identifier_system=SYSTEM, run_id="r1")
    path = write_bundle(bundle, tmp_path / "fhir" / "night" / "bundle.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "fhir").stat().st_mode) == 0o700
    assert json.loads(path.read_text(encoding="utf-8")) == bundle


# -- a real HTTP server on 127.0.0.1 ---------------------------------------------------------


@contextmanager
def _server(status: int, body: dict, delay_s: float = 0.0):
    """A one-thread HTTP server answering every POST with ``status`` and ``body``; yields (url, requests seen)."""
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"path": self.path, "headers": dict(self.headers), "body": raw})
            time.sleep(delay_s)
            out = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up first (the timeout test)
                pass

        def log_message(self, *args):  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_post_bundle_sends_the_transaction_as_fhir_json():
    bundle = build_bundle(_results(), identifier_system=SYSTEM, run_id="r1")
    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    with _server(200, answer) as (url, seen):
        got = post_bundle(bundle, url, credentials=Credentials(token="t0ken"), timeout_s=10)
    assert got == answer
    (req,) = seen
    assert req["path"] == "/fhir"
    assert req["headers"]["Content-Type"] == "application/fhir+json"
    assert req["headers"]["Authorization"] == "Bearer t0ken"
    assert json.loads(req["body"]) == bundle


def test_a_refusing_server_is_a_fhir_error_without_patient_data():
    bundle = build_bundle(_results(), identifier_system=SYSTEM, run_id="r1")
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "processing", "diagnostics": "PAT-0001 unknown"}]}
    with _server(500, outcome) as (url, _seen):
        with pytest.raises(FhirError, match=r"refused the bundle: HTTP 500 \(processing\)") as e:
            post_bundle(bundle, url, timeout_s=10)
    assert e.value.code == "fhir_post_failed"
    assert "PAT-0001" not in e.value.line() and "2.25." not in e.value.line()
    assert url in e.value.line()


def test_an_unreachable_or_slow_server_is_a_fhir_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FhirError, match=r"could not POST the bundle .*127\.0\.0\.1:\d+/fhir \(ConnectionError\)"):
        post_bundle({"resourceType": "Bundle"}, f"http://127.0.0.1:{port}/fhir", timeout_s=5)
    with _server(200, {}, delay_s=1.0) as (url, _seen):
        with pytest.raises(FhirError, match=r"did not answer within 0\.2 s"):
            post_bundle({"resourceType": "Bundle"}, url, timeout_s=0.2)


def test_credentials_in_the_url_are_refused_before_sending():
    with _server(200, {}) as (url, seen):
        with pytest.raises(FhirError, match=r"holds credentials") as e:
            post_bundle({"resourceType": "Bundle"}, url.replace("http://", "http://alice:secret@"))
    assert not seen
    assert e.value.code == "fhir_url_invalid" and "secret" not in e.value.line() and "alice" not in e.value.line()
