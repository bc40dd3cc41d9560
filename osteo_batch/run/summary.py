"""The run summary: one page per nightly run, and the same numbers as a Prefect artifact.

Counts only, never patient data: files swept and their statuses, rejections
by reason, eligible, scored and flagged counts, the model and its threshold,
and how long each stage took. Program staff read it to see that a night went
right; the markdown version is what Prefect shows beside the flow run.

Files left out for a study date no program should trust are counted here, and
listed for the PACS administrator in a CSV beside the run page
(``runs/run-<run_id>-study-dates.csv``: accession, study date, SOP Instance
UID, what is wrong; no patient names), so the archive can be corrected.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from pathlib import Path
from typing import Any

from osteo_batch.reasons import unreadable_folders_line
from osteo_batch.render import DISCLAIMER, render
from osteo_batch.scoring.precision import precision_line

#: Columns of the study date list for the PACS administrator (no patient names).
STUDY_DATE_COLUMNS = ("accession_number", "study_date", "sop_instance_uid", "reason", "problem")


def headline(s: dict[str, Any]) -> dict[str, Any]:
    """The numbers every summary shows, from a run summary dict (missing stages give None)."""
    inst = s.get("instances", {})
    wl = s.get("worklist", {})
    return {
        "files": inst.get("files", s.get("sweep", {}).get("files")),
        "headers_read": s.get("sweep", {}).get("headers_read"),
        "eligible": inst.get("eligible"),
        "scored_total": inst.get("by_status", {}).get("scored"),
        "scored_tonight": s.get("score", {}).get("scored"),
        "precision": precision_line(s.get("score", {}).get("shards") or []),  # fp32 or bf16, and why
        "flagged": wl.get("flagged"),
        "listed": wl.get("listed"),
        "excluded": wl.get("excluded", {}),
        "explained": s.get("explain", {}).get("explained"),
        "by_status": inst.get("by_status", {}),
        "by_reason": inst.get("by_reason", {}),
        # in the order they ran (a summary is built stage by stage: osteo_batch.run.stages.STAGES);
        # every stage's summary carries its seconds, nothing else in it does
        "stages": [(k, v.get("seconds")) for k, v in s.items() if isinstance(v, dict) and "seconds" in v],
        "unreadable_folders": unreadable_folders(s.get("sweep", {})),
        "pacs": s.get("sweep", {}).get("pacs"),  # windows, studies, where the queries stopped (no patient data)
        "results": s.get("results") or {},  # SRs stored, the FHIR Bundle
        **_study_dates(s),
    }


def unreadable_folders(sw: dict[str, Any]) -> dict[str, int]:
    """Archive folders that could not be listed, by reason (older summaries: a bare count)."""
    reasons = dict(sw.get("unreadable_dir_reasons") or {})
    n = sw.get("unreadable_dirs") or 0
    if n and sum(reasons.values()) < n:
        reasons["io_error"] = reasons.get("io_error", 0) + n - sum(reasons.values())
    return reasons


def _study_dates(s: dict[str, Any]) -> dict[str, Any]:
    """Untrusted study dates: the count (from the store at the end of the run when known), by problem, the CSV."""
    from osteo_batch.reasons import Reason

    sw = s.get("sweep", {})
    problems = sw.get("study_dates") or {}
    by_reason = s.get("instances", {}).get("by_reason")
    if by_reason is not None:
        n = by_reason.get(Reason.STUDY_DATE.value, 0)
    else:
        n = sum(problems.values()) if "study_dates" in sw else None
    csv_path = sw.get("study_dates_csv")
    return {
        "study_dates": n,
        "study_date_problems": {k: v for k, v in problems.items() if v},
        "study_dates_csv": Path(csv_path).name if csv_path else None,
        "run_date": sw.get("run_date"),
        "timezone": sw.get("timezone"),
    }


def study_dates_csv(rows: list[dict]) -> str:
    """The untrusted study dates as CSV; text cells a spreadsheet would run as a formula are quoted,
    as on the worklist CSV."""
    from osteo_batch.reasons import Reason
    from osteo_batch.text import csv_cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(STUDY_DATE_COLUMNS)
    for r in rows:
        w.writerow([csv_cell(r["accession_number"]), csv_cell(r["study_date"]), csv_cell(r["sop_instance_uid"]),
                    Reason.STUDY_DATE.value, r["problem"]])
    return buf.getvalue()


def write_study_dates_csv(workdir: str | os.PathLike, run_id: str, rows: list[dict]) -> Path:
    """``runs/run-<run_id>-study-dates.csv`` (0600, in a 0700 folder), beside the run page."""
    from osteo_batch.outputs import write_private

    return write_private(Path(workdir) / "runs" / f"run-{run_id}-study-dates.csv", study_dates_csv(rows))


def _cleaned(x: Any) -> Any:
    """``x`` with every string in it (keys too) free of control characters, one line each.

    A summary holds counts and codes, but a code (a rule's condition name, an
    error) is text someone else wrote: it must not act on a terminal or page.
    """
    from osteo_batch.text import clean_cell

    if isinstance(x, str):
        return clean_cell(x)
    if isinstance(x, dict):
        return {_cleaned(k): _cleaned(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cleaned(v) for v in x)
    return x


def summary_markdown(s: dict[str, Any]) -> str:
    """The run summary as markdown (the Prefect artifact)."""
    s = _cleaned(s)
    h = headline(s)
    lines = [
        f"# Nightly screening run `{s['run_id']}`",
        "",
        f"- model `{s.get('model_id')}`, threshold {s.get('threshold')}",
        f"- files swept: {h['files']} (headers read tonight: {h['headers_read']})",
        "- " + " + ".join(f"{n} {k}" for k, n in h["by_status"].items()) + f" = {h['files']} files",
        f"- eligible: {h['eligible']}, scored: {h['scored_total']} ({h['scored_tonight']} tonight), "
        f"flagged: {h['flagged']}, on the worklist: {h['listed']}, heat maps tonight: {h['explained']}",
        *([f"- scored in {h['precision']}"] if h["precision"] else []),
        "- left out at or above the threshold: "
        + (", ".join(f"{n} {k}" for k, n in h["excluded"].items()) or "none"),
        *([_study_dates_line(h)] if h["study_dates"] is not None else []),
        *([f"- **{unreadable_folders_line(h['unreadable_folders'])}**"] if h["unreadable_folders"] else []),
        *([_pacs_line(h["pacs"])] if h["pacs"] else []),
        *([f"- results back: {h['results']['sr']['sent']} SR(s) stored, {h['results']['sr']['failed']} kept for "
           "the next night"] if h["results"].get("sr") else []),
        *([f"- FHIR bundle: {h['results'].get('risk_assessments', 0)} RiskAssessments"]
          if h["results"].get("fhir_bundle") else []),
        "",
        "| status or reason | files |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in h["by_reason"].items()],
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in h["stages"]],
        "",
        DISCLAIMER,
    ]
    return "\n".join(lines)


def _pacs_line(p: dict[str, Any]) -> str:
    line = (f"- PACS `{p['source']}`: study dates {p['date_from']} to {p['date_to']}, {p['windows_done']}/{p['windows']}"
            f" windows, {p['studies_listed']} studies listed; complete through {p['complete_through']}")
    return line + (f"; **queries stopped early: {p['stopped']}**" if p.get("stopped") else "")


def _study_dates_line(h: dict[str, Any]) -> str:
    line = (f"- untrusted study dates (ineligible:study_date, judged against {h['run_date']}, {h['timezone']}): "
            f"{h['study_dates']}")
    if h["study_date_problems"]:
        line += " (" + ", ".join(f"{n} {k}" for k, n in h["study_date_problems"].items()) + ")"
    if h["study_dates_csv"]:
        line += f"; accessions for the PACS administrator: `{h['study_dates_csv']}` beside the run page"
    return line


def write_run_page(workdir: str | os.PathLike, summary: dict[str, Any], *, status: str = "finished") -> Path:
    """``runs/run-<run_id>.html`` (0600)."""
    from osteo_batch.archive.eligibility import STUDY_DATE_PROBLEMS
    from osteo_batch.outputs import write_private
    from osteo_batch.reasons import DESCRIPTIONS, FOLDER_DESCRIPTIONS

    summary = _cleaned(summary)
    h = headline(summary)
    html = render("run.html.j2", s=summary, h=h, status=status, reasons=DESCRIPTIONS, problems=STUDY_DATE_PROBLEMS,
                  folder_reasons=FOLDER_DESCRIPTIONS,
                  generated=dt.datetime.now().isoformat(timespec="seconds"),
                  worklist_file=Path(summary["worklist"]["worklist"]).name if summary.get("worklist") else None)
    return write_private(Path(workdir) / "runs" / f"run-{summary['run_id']}.html", html)
