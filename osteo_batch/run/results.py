"""The results stage: each run's FHIR Bundle, and (opt-in) one DICOM SR per scored image back to the PACS.

Why after the heat maps: results go where clinicians look (the PACS viewer,
the EHR) only once a night is scored. Both outputs carry the disclaimer:
a screening aid, DXA confirms, never a rule-out.

Why the SRs are refused for a phantom model: a model trained on synthetic
phantoms or from random weights says nothing about real women, and an SR in
a clinical PACS looks like a real result. ``--allow-phantom-results`` is for
test PACSes. Each SR's UID comes from the image and the model
(:func:`osteo_batch.results.sr.sr_uid`), so a result sent twice stays one
object on the PACS; what was stored is recorded in ``results_sent``, so a
failed night is caught up the next one and a new model's SR names the one it
supersedes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from osteo_batch.errors import OsteoError, UserError
from osteo_batch.progress import timed
from osteo_batch.run.context import RunContext
from osteo_batch.store import open_store

log = logging.getLogger("osteo_batch")

#: SRs per STOW-RS request or C-STORE association.
SEND_BATCH = 50
#: The environment variable with the FHIR server's credentials (``basic USER:PASSWORD`` or ``bearer TOKEN``).
FHIR_CREDENTIALS_ENV = "OSTEO_FHIR_CREDENTIALS"


class PhantomResultsError(UserError):
    """``--send-results`` with a model that must not be used on patients."""

    code = "phantom_results_refused"
    fix = ("use a model trained on real image-DXA pairs, or add --allow-phantom-results when the PACS is a test "
           "PACS")


class SendResultsError(UserError):
    """``--send-results`` without a PACS to send to."""

    code = "send_results_needs_pacs"
    fix = "give the archive as --pacs URL: results go back to the PACS they came from"


def phantom_model(card: dict[str, Any]) -> bool:
    """Whether the model card says random weights or phantoms only (not for patients)."""
    return bool(card.get("random_init")) or card.get("for_patients") is False


def _source_dataset(row: dict[str, Any]):
    """The scored image's identity, patient and study, as its SR copies them (from the index, no file read)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    header = json.loads(row["header"]) if row.get("header") else {}
    ds.SOPClassUID = row["sop_class_uid"]
    ds.SOPInstanceUID = row["sop_instance_uid"]
    ds.StudyInstanceUID = row["study_instance_uid"]
    ds.SeriesInstanceUID = row["series_instance_uid"]
    ds.PatientID = row["patient_id"] or ""
    ds.PatientName = row["patient_name"] or ""
    ds.PatientSex = row["sex"] or ""
    ds.PatientBirthDate = row["birth_date"].strftime("%Y%m%d") if row.get("birth_date") else ""
    ds.StudyDate = row["study_date"].strftime("%Y%m%d") if row.get("study_date") else ""
    ds.StudyTime = ""
    ds.AccessionNumber = row["accession_number"] or ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.Modality = row["modality"] or header.get("Modality", "")
    return ds


def send_results(store, client, ctx: RunContext, destination: str, prefix: str) -> dict[str, Any]:
    """Store an SR for every scored image of ``ctx``'s model not yet on ``destination``; record each batch sent."""
    import pyarrow as pa

    from osteo_batch.models.bands import band_of
    from osteo_batch.results.sr import ScoredResult, build_sr, sr_series_uid

    model_id = ctx.need_model()
    rows = store.rows("results_to_send", {"model_id": model_id, "destination": destination, "prefix": prefix})
    sent = failed = 0
    unbuilt: dict[str, int] = {}  # images whose SR could not be built, by error code
    version = str(ctx.card.get("version") or ctx.card.get("code_version") or model_id)
    today = ctx.settings.run_date()
    for i in range(0, len(rows), SEND_BATCH):
        part, srs = [], []
        for r in rows[i: i + SEND_BATCH]:
            try:
                srs.append(build_sr(_source_dataset(r), ScoredResult(
                    sop_instance_uid=r["sop_instance_uid"], score=float(r["score"]),
                    band=band_of(r["score"], ctx.bands), model_id=model_id, model_version=version,
                    threshold=float(ctx.threshold), supersedes=r["supersedes"],
                    supersedes_series_uid=(sr_series_uid(r["study_instance_uid"], r["supersedes_model"])
                                           if r["supersedes"] else None),
                    run_date=today)))
                part.append(r)
            except Exception as e:  # one image whose index row cannot make an SR: counted, the rest go
                code = e.code if isinstance(e, OsteoError) else type(e).__name__
                unbuilt[code] = unbuilt.get(code, 0) + 1
        if not part:
            continue
        try:
            client.store(srs)
        except Exception:  # the PACS refused or went away: these and the rest stay unsent, for the next night
            failed += len(part) + len(rows[i + SEND_BATCH:])
            break
        with store.transaction():
            store.run("results_sent_insert", sent=pa.table({
                "sop_instance_uid": pa.array([r["sop_instance_uid"] for r in part], pa.string()),
                "model_id": pa.array([model_id] * len(part), pa.string()),
                "destination": pa.array([destination] * len(part), pa.string()),
                "sr_instance_uid": pa.array([str(s.SOPInstanceUID) for s in srs], pa.string()),
                "run_id": pa.array([ctx.run_id] * len(part), pa.string()),
            }))
        sent += len(part)
    held = store.scalar("results_sent_count", {"model_id": model_id, "destination": destination})
    return {"destination": destination, "sent": sent, "failed": failed, "already": held - sent, "not_built": unbuilt}


def fhir_bundle(store, ctx: RunContext) -> tuple[dict, int]:
    """The run's FHIR transaction Bundle: one RiskAssessment per image this run scored."""
    from osteo_batch.models.bands import band_of
    from osteo_batch.results.fhir import FhirResult, build_bundle

    model_id = ctx.need_model()
    rows = store.rows("run_scores", {"model_id": model_id, "run_id": ctx.run_id})
    results = [FhirResult(patient_id=r["patient_id"] or "", study_instance_uid=r["study_instance_uid"],
                          sop_instance_uid=r["sop_instance_uid"], score=float(r["score"]),
                          band=band_of(r["score"], ctx.bands), model_id=model_id,
                          occurrence=r["scored_at"])  # when the assessment was made
               for r in rows]
    bundle = build_bundle(results, identifier_system=ctx.settings.fhir_system, run_id=ctx.run_id)
    return bundle, len(bundle.get("entry") or [])


def check_results_allowed(ctx: RunContext) -> None:
    """Refuse ``--send-results`` without a PACS or with a phantom model (checked again when a run starts)."""
    settings = ctx.settings
    if settings.send_results:
        if settings.pacs is None:
            raise SendResultsError("--send-results stores SRs on the source PACS, and this archive is a folder")
        if phantom_model(ctx.card) and not settings.allow_phantom_results:
            raise PhantomResultsError("--send-results refused: the model card says this model was trained on "
                                      "phantoms or from random weights, not for patients")


@timed
def results_stage(ctx: RunContext) -> dict[str, Any]:
    """Write ``WORKDIR/fhir/bundle-RUN_ID.json`` (0600), POST it with ``--fhir``, send SRs with ``--send-results``."""
    from osteo_batch.results.fhir import post_bundle, write_bundle

    settings = ctx.settings
    if ctx.model_id is None:
        return {"risk_assessments": 0}
    check_results_allowed(ctx)
    with open_store(settings, read_only=True) as st:
        bundle, n = fhir_bundle(st, ctx)
    path = write_bundle(bundle, settings.workdir / "fhir" / f"bundle-{ctx.run_id}.json")
    out: dict[str, Any] = {"fhir_bundle": str(path), "risk_assessments": n}
    if settings.fhir_url:
        from osteo_batch.pacs.credentials import load_credentials

        try:
            post_bundle(bundle, settings.fhir_url, credentials=load_credentials(FHIR_CREDENTIALS_ENV, None))
            out["fhir_posted"] = settings.fhir_url
        except OsteoError as e:  # the bundle is on disk; the SRs still go; the run page says what failed
            out["fhir_error"] = e.code
            log.warning("FHIR bundle not posted (%s); it is kept in %s", e.code, path.name)
    if settings.send_results:
        from osteo_batch.pacs.connect import connect
        from osteo_batch.pacs.sweep import source_prefix

        client = connect(settings.pacs)
        try:
            with open_store(settings) as st:
                out["sr"] = send_results(st, client, ctx, settings.pacs.display, source_prefix(settings.pacs.display))
        finally:
            client.close()
    return out
