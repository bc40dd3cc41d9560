"""From a timed sample to the whole backlog: wall time, disk, nights, and other machines (pure arithmetic).

Why a model of start-up plus a steady rate: a stage's first images pay for
loading the model, starting the decode workers and (on a CPU) choosing the
precision; a backlog of millions pays that once. The sample's first batches
also arrive together (each worker decoded one while the others did), so the
steady rate is timed only after them (:class:`Split`).

Other machines are never guessed: more cores scale the honest CPU limit
``cores / (1/decode_core_ips + 1/model_core_ips)``, Ray shards multiply this
machine, and a GPU is quoted as measured elsewhere (:data:`GPU_REFERENCE`,
with its machine), bounded by this machine's decoding per core.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GpuFigure:
    """A GPU rate measured on a named machine: the only GPU figure an estimate may quote."""

    machine: str
    model: str
    precision: str
    model_ips: float  # the model alone
    pipeline_ips: float  # decode and model together, as measured there
    note: str
    source: str


#: README.md, "GPU": the device tool's machine, `score_devices.py` (since replaced), 192 images of 1500-3000 px,
#: 14 workers, batch 32. The pipeline figure is from before reduced-resolution decoding.
GPU_REFERENCE = GpuFigure(
    machine="one NVIDIA H100 80GB, 16 CPU cores", model="dinov2_small at 518 px", precision="bf16",
    model_ips=1486.0, pipeline_ips=18.8, note="pipeline decode-bound, before reduced-resolution decoding",
    source="README.md, Performance (GPU)")


@dataclass(frozen=True)
class Split:
    """A stage timed on a sample: fixed start-up (with the images it produced), then a steady rate."""

    startup_s: float  # from the stage's start (model load) to the end of the warm batches
    startup_images: int  # images done by then
    steady_ips: float | None  # images/s after the warm batches (None: the sample had no batch after them)
    tail_s: float = 0.0  # after the last batch: the last part written, the workers stopped

    @classmethod
    def of(cls, arrivals: list[tuple[float, int]], warm_batches: int, end_s: float) -> "Split":
        """``arrivals``: (seconds since the start, images done) after each batch; ``warm_batches``: the
        batches that arrive together at the start (one per decode worker; 1 without workers)."""
        if not arrivals:
            return cls(end_s, 0, None, 0.0)
        j = min(max(warm_batches, 1), len(arrivals) - 1) if len(arrivals) > 1 else 1
        t_j, d_j = arrivals[j - 1]
        t_k, d_k = arrivals[-1]
        steady = (d_k - d_j) / (t_k - t_j) if d_k > d_j and t_k > t_j else None
        return cls(t_j, d_j, steady, max(0.0, end_s - t_k))

    def seconds(self, n: float, *, speedup: float = 1.0, rate_ips: float | None = None) -> float:
        """Time for ``n`` images: start-up, then the rest at the steady rate (× ``speedup``, or ``rate_ips``)."""
        if n <= 0:
            return 0.0
        rate = rate_ips or ((self.steady_ips or self.overall_ips) * speedup)
        if n <= self.startup_images or not rate:
            return self.startup_s * n / max(self.startup_images, 1) + self.tail_s
        return self.startup_s + (n - self.startup_images) / rate + self.tail_s

    @property
    def overall_ips(self) -> float | None:
        return self.startup_images / self.startup_s if self.startup_s > 0 and self.startup_images else None


@dataclass(frozen=True)
class Measured:
    """What the sample showed, with the backlog it stands for (counts and rates only)."""

    backlog: int
    sample_size: int
    scored: int
    rejected: int
    flagged: int  # sampled images at or above the threshold
    scoring: Split
    heatmaps: Split | None  # None: no heat map was timed (nothing scored)
    cores: int
    decode_core_ips: float | None = None
    model_core_ips: float | None = None
    part_bytes_per_row: float = 0.0  # the sample's Parquet parts over their rows (footers included)
    heatmap_bytes: float = 0.0  # mean PNG size
    store_bytes: int = 0  # the store file now, after the sweep
    store_bytes_per_instance: float = 0.0  # the store's growth per instance the sweep added
    spool_bytes: int | None = None  # a PACS: [pacs] spool_max × the mean instance size; None: a folder

    @property
    def flagged_fraction(self) -> float:
        return self.flagged / self.sample_size if self.sample_size else 0.0

    @property
    def heatmap_s(self) -> float | None:
        h = self.heatmaps
        rate = h and (h.steady_ips or h.overall_ips)
        return 1.0 / rate if rate else None

    def honest_limit_ips(self, cores: int | None = None) -> float | None:
        """``cores / (1/decode_core_ips + 1/model_core_ips)``: decoding and the model sharing the cores."""
        d, m = self.decode_core_ips, self.model_core_ips
        return (cores or self.cores) / (1.0 / d + 1.0 / m) if d and m else None


@dataclass(frozen=True)
class WhatIf:
    """Another machine: its scoring rate, the times and nights it gives, and how the rate was derived."""

    kind: str  # "cores", "shards", "gpu"
    n: int
    rate_ips: float | None
    score_s: float
    explain_s: float
    nights: int
    basis: str

    @property
    def predicted_s(self) -> float:
        return self.score_s + self.explain_s


@dataclass(frozen=True)
class Projection:
    """The backlog on this machine, and on the machines of the what-ifs."""

    flagged: float  # expected heat maps
    score_s: float
    explain_s: float
    store_bytes: int
    part_bytes: int
    heatmap_bytes: int
    spool_bytes: int | None
    window_hours: float
    nights: int
    what_if: list[WhatIf] = field(default_factory=list)

    @property
    def predicted_s(self) -> float:
        return self.score_s + self.explain_s

    def what_if_json(self) -> list[dict]:
        return [{**asdict(w), "predicted_s": w.predicted_s} for w in self.what_if]


def nights(seconds: float, window_hours: float) -> int:
    """Nights of ``window_hours`` the work takes (a part night counts as one)."""
    return math.ceil(seconds / (window_hours * 3600.0) - 1e-9) if seconds > 0 else 0


def project(m: Measured, *, window_hours: float, cores: int | None = None, shards: int | None = None,
            model_name: str | None = None) -> Projection:
    """The backlog of ``m`` on this machine, then with ``cores`` cores, ``shards`` Ray shards, and a GPU."""
    flagged = m.backlog * m.flagged_fraction
    score_s = m.scoring.seconds(m.backlog)
    explain_s = m.heatmaps.seconds(flagged) if m.heatmaps is not None else 0.0
    rows = m.backlog  # one row per image, scored or rejected
    what_if = []
    if cores:
        what_if.append(_more_cores(m, cores, flagged, window_hours))
    if shards:
        rate = (m.scoring.steady_ips or m.scoring.overall_ips or 0.0) * shards
        s = m.scoring.seconds(m.backlog, speedup=shards)
        what_if.append(WhatIf("shards", shards, rate or None, s, explain_s, nights(s + explain_s, window_hours),
                              f"{shards} × this machine's steady rate (Ray shards score in parallel; "
                              "the heat maps stay one stage on one machine)"))
    what_if.append(_gpu(m, cores or GPU_CORES, explain_s, window_hours, model_name))
    return Projection(flagged=flagged, score_s=score_s, explain_s=explain_s,
                      store_bytes=int(m.store_bytes + rows * m.part_bytes_per_row),
                      part_bytes=int(rows * m.part_bytes_per_row), heatmap_bytes=int(flagged * m.heatmap_bytes),
                      spool_bytes=m.spool_bytes, window_hours=window_hours,
                      nights=nights(score_s + explain_s, window_hours), what_if=what_if)


#: The GPU reference machine's CPU cores, for its line when no --cores is asked for.
GPU_CORES = 16


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _more_cores(m: Measured, n: int, flagged: float, window_hours: float) -> WhatIf:
    speedup = n / m.cores
    now, then = m.honest_limit_ips(), m.honest_limit_ips(n)
    steady = m.scoring.steady_ips or m.scoring.overall_ips or 0.0
    s = m.scoring.seconds(m.backlog, speedup=speedup)
    e = m.heatmaps.seconds(flagged, speedup=speedup) if m.heatmaps is not None else 0.0
    if now and then:
        basis = (f"honest CPU limit {n}/(1/{_n(m.decode_core_ips)} + 1/{_n(m.model_core_ips)}) = {_n(then)} images/s "
                 f"against {_n(now)} on this machine's {m.cores}; the measured rate and the heat maps scaled alike")
    else:
        basis = f"the measured rate × {n}/{m.cores} cores (per-core rates not measured)"
    return WhatIf("cores", n, steady * speedup or None, s, e, nights(s + e, window_hours), basis)


def _gpu(m: Measured, n_cores: int, explain_s: float, window_hours: float, model_name: str | None) -> WhatIf:
    g = GPU_REFERENCE
    figure = (f"measured elsewhere: {g.machine}, {g.model}, model alone {g.precision} {g.model_ips:,.0f} images/s, "
              f"pipeline {g.pipeline_ips} images/s ({g.note}; {g.source})")
    other = f"; this model is {model_name}, not {g.model}" if model_name and model_name != g.model else ""
    if m.decode_core_ips:
        rate = min(n_cores * m.decode_core_ips, g.model_ips)
        basis = (f"min({n_cores} cores × this machine's {_n(m.decode_core_ips)} decoded images/s per core, "
                 f"{g.model_ips:,.0f}); {figure}{other}; heat maps at this machine's rate (not measured on a GPU)")
    else:
        rate = g.pipeline_ips
        basis = f"the pipeline as measured there (decode per core not measured here); {figure}{other}"
    s = m.scoring.seconds(m.backlog, rate_ips=rate)
    return WhatIf("gpu", n_cores, rate, s, explain_s, nights(s + explain_s, window_hours), basis)
