"""The worklist: women to refer for DXA, highest risk first, one self-contained page per run and per site.

Why per patient, not per image: a coordinator phones a woman once. Each woman
appears once, from her latest eligible scored study. The exclusion rules
(:class:`osteo_batch.followup.exclusions.Exclusions`) leave out women who need no call tonight: a recent DXA,
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
Names are read with :class:`pydicom.valuerep.PersonName` (:func:`display_name`);
CSV cells are guarded against formulas (:func:`osteo_batch.text.csv_cell`).
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
from osteo_batch.followup.exclusions import DEFAULT_DXA_DAYS, Exclusions, as_date, exclusion_for
from osteo_batch.text import clean_cell, csv_cell

UNKNOWN_SITE = "Unknown site"

CSV_COLUMNS = ("rank", "patient_id", "name", "age", "study_date", "accession", "site", "score", "band",
               "prior_dxa_date", "prior_dxa_t_min", "referral_status", "referral_date")


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
    """A DICOM PN value as a coordinator reads it, family name first.

    ``Family^Given^Middle^Prefix^Suffix=漢字^名=한글^이름`` is shown as
    ``Family, Prefix Given Middle, Suffix (漢字名, 한글이름)``: the alphabetic
    group first; the ideographic and phonetic groups, when present, follow in
    brackets so she also sees the name as the patient writes it (each written
    together, as CJK names are, prefix first and suffix last). A name with no
    alphabetic group is shown by its other groups alone. Components are read by
    :class:`pydicom.valuerep.PersonName`; control characters are removed first
    (:func:`osteo_batch.text.clean_cell`).
    """
    if not dicom_name:
        return ""
    pn = _person_name(clean_cell(dicom_name))
    others = [o for o in (_written_together(g) for g in (pn.ideographic, pn.phonetic)) if o]
    first = _family_first(pn)
    if not first:
        return ", ".join(others)
    return f"{first} ({', '.join(others)})" if others else first


def _person_name(value: str):
    """``value`` as a PersonName, without pydicom's length warnings: a long name is still a name to show."""
    from pydicom import config
    from pydicom.valuerep import PersonName

    return PersonName(value, validation_mode=config.IGNORE)


def _family_first(pn) -> str:
    """``Family, Prefix Given Middle, Suffix``, leaving out what is empty."""
    family = pn.family_name.strip()
    given = " ".join(p for p in (pn.name_prefix.strip(), pn.given_name.strip(), pn.middle_name.strip()) if p)
    name = f"{family}, {given}" if family and given else family or given
    suffix = pn.name_suffix.strip()
    return f"{name}, {suffix}" if name and suffix else name or suffix


def _written_together(group: str) -> str:
    """An ideographic or phonetic group's components with nothing between them: prefix, family, given, middle, suffix."""
    if not group:
        return ""
    g = _person_name(group)
    return "".join(p.strip() for p in (g.name_prefix, g.family_name, g.given_name, g.middle_name, g.name_suffix))


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
                "status_date": as_date(c["referral_at"]).isoformat() if c.get("referral_at") else "",
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
        w.writerow([r["rank"], csv_cell(r["patient_id"]), csv_cell(r["name"]), "" if r["age"] is None else r["age"],
                    r["study_date"], csv_cell(r["accession"]), csv_cell(r["site"]), r["score_shown"], r["band"],
                    r["last_dxa"] or "", "" if r["last_dxa_t"] is None else f"{r['last_dxa_t']:.1f}",
                    r["status"], r["status_date"]])
    return buf.getvalue()


def write_worklist(
    store,
    *,
    workdir: str | os.PathLike,
    run: dict[str, Any],
    model_id: str,
    threshold: float,
    bands: dict[str, float],
    dxa_lookback_days: int = DEFAULT_DXA_DAYS,
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
