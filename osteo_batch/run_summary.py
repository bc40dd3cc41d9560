"""The run summary: one page per nightly run, and the same numbers as a Prefect artifact.

Counts only, never patient data: files swept and their statuses, rejections
by reason, eligible, scored and flagged counts, the model and its threshold,
and how long each stage took. Program staff read it to see that a night went
right; the markdown version is what Prefect shows beside the flow run.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from osteo_batch.report import DISCLAIMER, render

STAGE_ORDER = ("dxa", "sweep", "score", "explain", "worklist")


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
        "flagged": wl.get("flagged"),
        "listed": wl.get("listed"),
        "excluded": wl.get("excluded", {}),
        "explained": s.get("explain", {}).get("explained"),
        "by_status": inst.get("by_status", {}),
        "by_reason": inst.get("by_reason", {}),
        "stages": [(k, s[k].get("seconds")) for k in STAGE_ORDER if isinstance(s.get(k), dict)],
    }


def summary_markdown(s: dict[str, Any]) -> str:
    """The run summary as markdown (the Prefect artifact)."""
    h = headline(s)
    lines = [
        f"# Nightly screening run `{s['run_id']}`",
        "",
        f"- model `{s.get('model_id')}`, threshold {s.get('threshold')}",
        f"- files swept: {h['files']} (headers read tonight: {h['headers_read']})",
        "- " + " + ".join(f"{n} {k}" for k, n in h["by_status"].items()) + f" = {h['files']} files",
        f"- eligible: {h['eligible']}, scored: {h['scored_total']} ({h['scored_tonight']} tonight), "
        f"flagged: {h['flagged']}, on the worklist: {h['listed']}, heat maps tonight: {h['explained']}",
        "- left out at or above the threshold: "
        + (", ".join(f"{n} {k}" for k, n in h["excluded"].items()) or "none"),
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


def write_run_page(workdir: str | os.PathLike, summary: dict[str, Any], *, status: str = "finished") -> Path:
    """``runs/run-<run_id>.html`` (0600)."""
    from osteo_batch.outputs import write_private
    from osteo_batch.reasons import DESCRIPTIONS

    h = headline(summary)
    html = render("run.html.j2", s=summary, h=h, status=status, reasons=DESCRIPTIONS,
                  generated=dt.datetime.now().isoformat(timespec="seconds"),
                  worklist_file=Path(summary["worklist"]["worklist"]).name if summary.get("worklist") else None)
    return write_private(Path(workdir) / "runs" / f"run-{summary['run_id']}.html", html)
