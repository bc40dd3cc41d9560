"""The worklist: women to refer for DXA, highest risk first, one self-contained page per run and per site.

Why per patient, not per image: a coordinator phones a woman once. Each woman
appears once, from her latest eligible scored study. The exclusion rules
(:class:`Exclusions`) leave out women who need no call tonight: a recent DXA,
known osteoporosis or treatment, or a referral already made, declined or
unanswered within its window. Each exclusion is counted in the summary, as is
everything else the run decided, so the page accounts for the whole archive
without naming anyone it does not list.

Each page is one HTML file with every asset inlined (heat maps as data URIs,
the sorting and filtering script as a few lines of vanilla JS), so it works
offline from a shared drive and prints on paper. A CSV of the same rows goes
beside it for scheduling systems.

Every text value that came from a DICOM header (names, IDs, accession
numbers, sites, view, modality) is cleaned where a row is built
(:func:`osteo_batch.text.clean_cell`): headers are written by whoever sent the
study, and an escape sequence, NUL, BEL or bidi override in them must not
reach a terminal, a CSV reader or a browser (Jinja's autoescape covers
``< > &`` only). The raw Patient ID stays the identity the store records.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from osteo_batch.models.bands import DECIMALS, display, flagged
from osteo_batch.models.model import risk_band
from osteo_batch.outputs import write_private
from osteo_batch.reasons import DESCRIPTIONS
from osteo_batch.render import data_uri_png, render
from osteo_batch.archive.sweep import STATUSES, by_status
from osteo_batch.text import clean_cell

UNKNOWN_SITE = "Unknown site"

#: exclusion key -> what the summary says about it
EXCLUSION_TEXT = {
    "recent_dxa": "a DXA within the last {dxa_days} days ({dxa_days_near} if its lowest T-score was {near_lo} to {near_hi})",
    "known_osteoporosis_or_treatment": "known osteoporosis or treatment (known-conditions list)",
    "already_referred": "referred within the last {referred} days",
    "already_declined": "declined within the last {declined} days",
    "already_unreachable": "unreachable within the last {unreachable} days",
    "dxa_done": "marked DXA done within the last {dxa_done} days",
}

CSV_COLUMNS = ("rank", "patient_id", "name", "age", "study_date", "accession", "site", "score", "band",
               "prior_dxa_date", "prior_dxa_t_min", "referral_status", "referral_date")


@dataclass(frozen=True)
class Exclusions:
    """Who is left off tonight's list; every window is in days before the run date."""

    dxa_days: int = 730  # a DXA in the last 2 years ...
    dxa_days_near: int = 365  # ... or 1 year if its lowest T-score was near the osteoporosis line
    near_t: tuple[float, float] = (-2.49, -2.0)
    known_conditions: bool = True
    referral_days: Mapping[str, int] = field(default_factory=lambda: {
        "referred": 180, "declined": 365, "unreachable": 90, "dxa-done": 730})

    def describe(self) -> dict[str, str]:
        f = {"dxa_days": self.dxa_days, "dxa_days_near": self.dxa_days_near, "near_lo": f"{self.near_t[0]:.2f}",
             "near_hi": f"{self.near_t[1]:.1f}", "referred": self.referral_days.get("referred"),
             "declined": self.referral_days.get("declined"), "unreachable": self.referral_days.get("unreachable"),
             "dxa_done": self.referral_days.get("dxa-done")}
        return {k: v.format(**f) for k, v in EXCLUSION_TEXT.items()}


def exclusion_for(c: Mapping[str, Any], rules: Exclusions, as_of: dt.date) -> str | None:
    """The first exclusion that applies to candidate ``c`` on ``as_of``, or None (pure)."""
    d = c.get("last_dxa_date")
    if d is not None:
        t = c.get("last_dxa_t_min")
        near = t is not None and rules.near_t[0] <= t <= rules.near_t[1]
        window = rules.dxa_days_near if near else rules.dxa_days
        if 0 <= (as_of - d).days <= window:
            return "recent_dxa"
    if rules.known_conditions and c.get("known_condition"):
        return "known_osteoporosis_or_treatment"
    status, at = c.get("referral_status"), c.get("referral_at")
    if status in rules.referral_days and at is not None:
        if 0 <= (as_of - _date(at)).days <= rules.referral_days[status]:
            return "dxa_done" if status == "dxa-done" else f"already_{status}"
    return None


def _date(x) -> dt.date:
    return x.date() if isinstance(x, dt.datetime) else x


def site_of(institution_name: str | None, sites: Mapping[str, str] | None = None) -> str:
    """The site a study belongs to: the configured mapping of InstitutionName, else the name itself.

    Control characters are removed (the name is printed, put in CSV cells and
    pages, and is the outcomes' key by site); the mapping is looked up with the
    name as written and as cleaned.
    """
    raw = (institution_name or "").strip()
    name = clean_cell(raw).strip()
    if sites:
        for key in (raw, name):
            if key in sites:
                return clean_cell(sites[key]).strip() or UNKNOWN_SITE
    return name or UNKNOWN_SITE


def site_slug(site: str) -> str:
    """A file-name part for a site: readable ASCII plus a short hash (two sites never collide)."""
    ascii_part = re.sub(r"[^a-z0-9]+", "-", site.lower()).strip("-")[:32] or "site"
    return f"{ascii_part}-{hashlib.sha256(site.encode()).hexdigest()[:6]}"


@dataclass
class WorklistResult:
    path: Path  # all sites
    listed: int
    excluded: dict[str, int] = field(default_factory=dict)
    below_threshold: int = 0
    csv: Path | None = None
    site_pages: dict[str, Path] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list, repr=False)


def display_name(dicom_name: str | None) -> str:
    """``Family^Given=漢字^名=한글^이름`` as ``Family, Given (漢字名, 한글이름)``.

    The first (alphabetic) group is shown as family, given; the ideographic and
    phonetic groups, when present, follow in brackets so a coordinator sees the
    name as the patient writes it.
    """
    if not dicom_name:
        return ""
    groups = clean_cell(dicom_name).split("=")
    parts = [p for p in groups[0].split("^") if p]
    first = parts[0] if len(parts) == 1 else (f"{parts[0]}, {' '.join(parts[1:])}" if parts else "")
    others = ["".join(p for p in g.split("^") if p) for g in groups[1:]]
    others = [o for o in others if o]
    if not first:
        return ", ".join(others)
    return f"{first} ({', '.join(others)})" if others else first


def build_rows(candidates: list[dict], threshold: float, bands: dict[str, float], heatmap_dir: Path, *,
               rules: Exclusions = Exclusions(), as_of: dt.date | None = None,
               sites: Mapping[str, str] | None = None):
    """Rows to list, exclusions counted by reason, and how many scored below the threshold."""
    as_of = as_of or dt.date.today()
    rows, excluded, below = [], {}, 0
    for c in candidates:
        if not flagged(c["score"], threshold):
            below += 1
            continue
        why = exclusion_for(c, rules, as_of)
        if why:
            excluded[why] = excluded.get(why, 0) + 1
            continue
        hm = heatmap_dir / c["heatmap"] if c.get("heatmap") else None
        rows.append(
            {
                "patient_key": c["patient_id"],  # as stored: the identity worklist_entries records
                "patient_id": _text(c["patient_id"]),
                "name": display_name(c["patient_name"]),
                "age": None if c["age"] is None else int(c["age"]),
                "study_date": c["study_date"].isoformat() if c["study_date"] else "",
                "accession": _text(c["accession_number"]) or "",
                "site": site_of(c["institution_name"], sites),
                "view": _text(c["view"]) or "",
                "modality": _text(c["modality"]) or "",
                "sop_instance_uid": c["sop_instance_uid"],
                "score": c["score"],
                "score_shown": f"{display(c['score']):.{DECIMALS}f}",  # the band is judged on this value
                "band": risk_band(c["score"], bands),
                "heatmap": data_uri_png(hm) if hm and hm.is_file() else None,
                "last_dxa": c["last_dxa_date"].isoformat() if c.get("last_dxa_date") else None,
                "last_dxa_t": c.get("last_dxa_t_min"),
                "status": c.get("referral_status") or "new",
                "status_date": _date(c["referral_at"]).isoformat() if c.get("referral_at") else "",
                "status_by": _text(c.get("referral_by")) or "",
            }
        )
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows, excluded, below


def _text(v: Any) -> str | None:
    """Header text for a row: control characters removed, one line (None stays None)."""
    return None if v is None else clean_cell(str(v))


def to_csv(rows: list[dict]) -> str:
    """The rows for a scheduling system; text cells that a spreadsheet would run as a formula are quoted."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([r["rank"], _cell(r["patient_id"]), _cell(r["name"]), "" if r["age"] is None else r["age"],
                    r["study_date"], _cell(r["accession"]), _cell(r["site"]), r["score_shown"], r["band"],
                    r["last_dxa"] or "", "" if r["last_dxa_t"] is None else f"{r['last_dxa_t']:.1f}",
                    r["status"], r["status_date"]])
    return buf.getvalue()


def _cell(v: str | None) -> str:
    """A CSV text cell: control characters removed, one line, and a leading formula sign quoted.

    Cleaning comes first, so a NUL or ESC cannot hide an ``=`` from the guard.
    """
    v = clean_cell(v or "")
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


def write_worklist(
    store,
    *,
    workdir: str | os.PathLike,
    run: dict[str, Any],
    model_id: str,
    threshold: float,
    bands: dict[str, float],
    dxa_lookback_days: int = 730,
    model_card: dict | None = None,
    name_suffix: str = "",
    record: bool = True,
    rules: Exclusions | None = None,
    sites: Mapping[str, str] | None = None,
    as_of: dt.date | None = None,
) -> WorklistResult:
    """Render the run's pages and CSVs under ``worklists/`` (0600); record whom it listed in a writable store.

    ``worklist-<run_id><suffix>.html`` lists every site (with a site filter);
    ``worklist-<run_id><suffix>-site-<slug>.html`` lists one site each; each
    page has a ``.csv`` twin.
    """
    workdir = Path(workdir)
    as_of = as_of or dt.date.today()
    rules = rules or Exclusions(dxa_days=dxa_lookback_days)
    candidates = store.rows("worklist", {"model_id": model_id, "as_of": as_of})
    rows, excluded, below = build_rows(candidates, threshold, bands, workdir / "heatmaps", rules=rules, as_of=as_of,
                                       sites=sites)
    counts = store.rows("status_counts")
    stem = f"worklist-{run['run_id']}{name_suffix}"
    site_names = sorted({r["site"] for r in rows})
    site_files = {s: f"{stem}-site-{site_slug(s)}.html" for s in site_names}
    common = dict(
        run=run, model_id=model_id, threshold=threshold, bands=bands, excluded=excluded,
        exclusion_text=rules.describe(), below=below, counts=counts,
        total_files=sum(c["n"] for c in counts),
        by_status={**dict.fromkeys(STATUSES, 0), **by_status(counts)},
        reasons=DESCRIPTIONS, card=model_card or {}, as_of=as_of.isoformat(),
        generated=dt.datetime.now().isoformat(timespec="seconds"),
        all_sites_file=f"{stem}.html", site_files=site_files,
    )
    out = workdir / "worklists"
    path = write_private(out / f"{stem}.html",
                         render("worklist.html.j2", rows=rows, site=None, sites=site_names, csv_file=f"{stem}.csv",
                                **common))
    csv_path = write_private(out / f"{stem}.csv", to_csv(rows))
    pages = {}
    for s in site_names:
        mine = [r for r in rows if r["site"] == s]
        f = site_files[s]
        pages[s] = write_private(out / f, render("worklist.html.j2", rows=mine, site=s, sites=[s],
                                                 csv_file=f.replace(".html", ".csv"), **common))
        write_private(out / f.replace(".html", ".csv"), to_csv(mine))
    if record:
        import pyarrow as pa

        store.run(
            "worklists_insert",
            {"run_id": run["run_id"], "file": path.name, "model_id": model_id, "threshold": threshold, "n": len(rows)},
        )
        e = pa.table({
            "patient_id": pa.array([r["patient_key"] or f"uid:{r['sop_instance_uid']}" for r in rows], pa.string()),
            "site": pa.array([r["site"] for r in rows], pa.string()),
            "sop_instance_uid": pa.array([r["sop_instance_uid"] for r in rows], pa.string()),
            "study_date": pa.array([dt.date.fromisoformat(r["study_date"]) if r["study_date"] else None for r in rows],
                                   pa.date32()),
            "score": pa.array([r["score"] for r in rows], pa.float64()),
            "band": pa.array([r["band"] for r in rows], pa.string()),
        })
        store.run("worklist_entries_insert", {"run_id": run["run_id"], "flagged_on": as_of}, e=e)
    return WorklistResult(path, len(rows), excluded, below, csv_path, pages, rows)
