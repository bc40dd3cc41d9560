"""The estimate as the operator reads it: one table of counts, rates, times, disk and nights, then the what-ifs.

Counts and rates only: no path, no URL, no patient data (the source is its
kind, the model its content hash).
"""

from __future__ import annotations

from osteo_batch.estimate.result import Estimate


def duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n:.0f} B"


def _rate(x: float | None) -> str:
    if not x:
        return "not measured"
    return f"{x:,.0f} images/s" if x >= 100 else f"{x:.3g} images/s"


def render(est: Estimate) -> str:
    m, p = est.measured, est.projection
    lines = [f"estimate {est.run_id}: {est.source_kind} source, model {est.model_id[:12]} ({est.model_name})",
             f"machine: {m.cores} cores, CPU {est.cpu_capability}, device {est.device}"
             + (f", {est.precision}" if est.precision else "")
             + (f", {est.threads} intra-op threads" if est.threads else "")]
    rows = [("backlog", f"{m.backlog} images pending")]
    if m.sample_size:
        rows += [
            ("sample", f"{m.sample_size} images (seed {est.seed}): {m.scored} scored, {m.rejected} rejected, "
                       f"{m.flagged} at or above the threshold ({m.flagged_fraction:.0%})"),
            ("scoring", f"start-up {m.scoring.startup_s:.1f} s (its first {m.scoring.startup_images} images), "
                        f"then {_rate(m.scoring.steady_ips)}"),
            ("heat maps", f"{m.heatmap_s:.2f} s each after a start-up of {m.heatmaps.startup_s:.1f} s; "
                          f"{p.flagged:.0f} expected" if m.heatmap_s and m.heatmaps else "not timed"),
            ("per core", f"decode {_rate(m.decode_core_ips)}, model {_rate(m.model_core_ips)}"
                         + (f"; CPU limit {m.cores}/(1/decode + 1/model) = {m.honest_limit_ips():.3g} images/s"
                            if m.honest_limit_ips() else "")),
        ]
    rows += [
        ("wall time", f"{duration(p.predicted_s)}: scoring {duration(p.score_s)} + heat maps {duration(p.explain_s)}"),
        ("disk", f"store {size(p.store_bytes)} ({size(m.store_bytes)} now, {size(m.store_bytes_per_instance)} "
                 f"per instance indexed); score parts {size(p.part_bytes)}; heat maps {size(p.heatmap_bytes)}"),
        ("spool", f"{size(p.spool_bytes)} ([pacs] spool_max × the mean instance)" if p.spool_bytes is not None
                  else "none (a folder is read in place)"),
        ("nights", f"{p.nights} at a window of {p.window_hours:g} h a night"),
    ]
    lines += [f"  {k:<16} {v}" for k, v in rows]
    if p.what_if:
        lines.append("what if")
        for w in p.what_if:
            name = {"cores": f"{w.n} cores", "shards": f"{w.n} Ray shards", "gpu": "one GPU"}[w.kind]
            lines.append(f"  {name:<16} {_rate(w.rate_ips)}: {duration(w.predicted_s)} "
                         f"(scoring {duration(w.score_s)} + heat maps {duration(w.explain_s)}), "
                         f"{w.nights} night{'s' if w.nights != 1 else ''}")
            lines.append(f"  {'':<16}   {w.basis}")
    return "\n".join(lines)
