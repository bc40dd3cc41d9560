"""Which precision a shard scores in: bf16 autocast where the CPU runs it natively and it measures faster.

Why measure: CPUs differ between hospitals' servers. With AMX (Sapphire
Rapids and later) bf16 autocast ran DINOv2-S/14 at 518 px about 2x fp32;
on an AVX2-only EPYC, where bf16 is emulated, it ran 4x *slower*. So
``precision="auto"`` on a CPU

- keeps fp32 without measuring where bf16 is not native (no AMX and no
  AVX512-BF16, or torch/oneDNN capped below them by ``ATEN_CPU_CAPABILITY``
  or ``ONEDNN_MAX_CPU_ISA``);
- where it is native, times both on the shard's first real batch (a warm-up
  each, then interleaved timed passes, a few seconds at most) and takes bf16
  only if it is measured faster *and* its scores move by at most
  :data:`BF16_MAX_DRIFT` from fp32's on those images.

On CUDA "auto" is bf16, as before. "fp32" and "bf16" given explicitly are
obeyed (bf16 where it would be emulated: obeyed, with a warning).
The choice travels in the shard's counts to the run summary
(:func:`precision_line`), so a night says which precision scored it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

log = logging.getLogger("osteo_batch.scoring.precision")

#: the most a bf16 score may differ from fp32's on the same image (the issue's bound, on the probability scale)
BF16_MAX_DRIFT = 0.005
#: bf16 must measure at least this much faster than fp32: near 1.0x, timing noise would flip the choice
#: between shards and nights, and with it the scores (within the drift bound, but not bit for bit)
BF16_MIN_GAIN = 1.1
#: the drift is judged on at least this many images of the first batch (not only those of a timed pass:
#: with a full-size model one image already fills a pass)
DRIFT_IMAGES = 4
#: seconds of interleaved timed passes (after the warm-ups); at least MIN_ROUNDS are timed whatever it costs
MEASURE_BUDGET_S = 3.0
MIN_ROUNDS, MAX_ROUNDS = 3, 6
#: a timed pass covers about this many seconds of fp32 (as many images of the first batch as fit, at least one)
PASS_S = 0.4

#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) that still allow its native bf16 kernels
_ONEDNN_BF16_ISAS = ("ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
                     "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a shard scored in, why, and the figures it was chosen by (None where nothing was measured)."""

    precision: str  # "fp32" | "bf16"
    reason: str
    fp32_ips: float | None = None  # images/s of the timed fp32 passes
    bf16_ips: float | None = None
    drift: float | None = None  # max |score bf16 - score fp32| on the measured images

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _hardware_bf16() -> tuple[bool, bool]:
    """(AMX tiles, AVX512-BF16) as torch reads them from CPUID; a torch without the probes says neither."""
    import torch

    def probe(name: str) -> bool:
        fn = getattr(torch.cpu, name, None)
        try:
            return bool(fn()) if callable(fn) else False
        except Exception:  # a probe that fails on an odd CPU: no evidence of native bf16
            return False

    return probe("_is_amx_tile_supported"), probe("_is_avx512_bf16_supported")


def _capped() -> bool:
    """True when torch or oneDNN was told to stay below AVX512 (how an AVX2 CPU is emulated for measurement)."""
    import torch

    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return True
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return bool(isa) and isa not in _ONEDNN_BF16_ISAS


def native_bf16() -> bool:
    """Whether bf16 matmuls run natively here: AMX or AVX512-BF16, and torch and oneDNN allowed to use them."""
    amx, avx512_bf16 = _hardware_bf16()
    return (amx or avx512_bf16) and not _capped()


def cpu_capability() -> str:
    """torch's vector capability plus the evidence of native bf16, e.g. ``AVX512+AMX_BF16+AVX512_BF16`` or ``AVX2``.

    Flags the CPU has but torch or oneDNN was told not to use are left out.
    """
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    if _capped():
        return cap
    amx, avx512_bf16 = _hardware_bf16()
    return cap + "".join(f"+{name}" for name, has in (("AMX_BF16", amx), ("AVX512_BF16", avx512_bf16)) if has)


def decide(fp32_ips: float | None, bf16_ips: float | None, drift: float | None, native: bool, *,
           cpu: str = "this CPU") -> PrecisionChoice:
    """The choice for ``precision="auto"`` on a CPU from what was measured (pure: the figures are given).

    bf16 only where it is native, measured at least :data:`BF16_MIN_GAIN` times as fast, and within :data:`BF16_MAX_DRIFT`
    (a drift that is not a number, say from an overflow, refuses it too).
    """
    if not native:
        return PrecisionChoice("fp32", f"bf16 emulated on {cpu}: fp32")
    if fp32_ips is None or bf16_ips is None or drift is None:
        return PrecisionChoice("fp32", "bf16 not measured: fp32", fp32_ips, bf16_ips, drift)
    if not drift <= BF16_MAX_DRIFT:
        return PrecisionChoice("fp32", f"bf16 drift {drift:.4f} > {BF16_MAX_DRIFT}: fp32", fp32_ips, bf16_ips, drift)
    ratio = bf16_ips / fp32_ips if fp32_ips > 0 else float("inf")
    if bf16_ips >= BF16_MIN_GAIN * fp32_ips:
        return PrecisionChoice("bf16", f"native bf16 on {cpu}, measured {ratio:.2f}x fp32", fp32_ips, bf16_ips, drift)
    return PrecisionChoice("fp32", f"bf16 measured no faster on {cpu} ({ratio:.2f}x fp32): fp32",
                           fp32_ips, bf16_ips, drift)


@dataclass(frozen=True)
class Measured:
    fp32_ips: float
    bf16_ips: float
    drift: float
    images: int  # per timed pass
    rounds: int


def measure(fp32: Callable[[Any], Any], bf16: Callable[[Any], Any], x, *, batch: int | None = None,
            budget_s: float = MEASURE_BUDGET_S, clock: Callable[[], float] = time.perf_counter) -> Measured:
    """Time ``fp32(x)`` against ``bf16(x)`` on one real batch ``x``; both return scores (a 1-D tensor).

    A warm-up of each (oneDNN picks and caches its kernels per shape), then a
    pass of as many images as fit in about :data:`PASS_S` of fp32, up to
    ``batch`` (the shard's batch size: a short first batch is repeated to it,
    so the choice does not hang on how the shard's images fell into batches),
    then interleaved timed rounds, alternating which runs first, until
    ``budget_s`` is spent (at least :data:`MIN_ROUNDS`). Each rate is from the
    fastest of its passes: the cores are shared, and a neighbour's burst only
    ever adds time.
    """
    import torch

    t = clock()
    ref = fp32(x[:1])  # warm-ups at one image
    one = clock() - t
    low = bf16(x[:1])
    if one < PASS_S:  # a small model: the first call's set-up dominates it, time a second
        t = clock()
        fp32(x[:1])
        one = clock() - t
    m = max(1, min(batch or len(x), int(PASS_S / max(one, 1e-6))))
    xs = x[torch.arange(m) % len(x)] if m != len(x) else x
    if m > 1:
        ref, low = fp32(xs), bf16(xs)  # warm-ups at the timed shape
    k = min(len(x), DRIFT_IMAGES)
    if m < k:  # a pass holds fewer images than the drift is judged on: score those apart (not timed)
        ref, low = fp32(x[:k]), bf16(x[:k])
    drift = float((ref.float() - low.float()).abs().max())
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    passes = (("fp32", fp32), ("bf16", bf16))
    start = clock()
    rounds = 0
    while rounds < MAX_ROUNDS and (rounds < MIN_ROUNDS or clock() - start < budget_s):
        for name, fn in passes if rounds % 2 == 0 else passes[::-1]:
            t = clock()
            fn(xs)
            times[name].append(clock() - t)
        rounds += 1
    ips = {k: m / max(min(v), 1e-9) for k, v in times.items()}
    return Measured(ips["fp32"], ips["bf16"], drift, m, rounds)


def choose_precision(requested: str, device: str, *, native: bool | None = None,
                     measure_fn: Callable[[], Measured] | None = None) -> PrecisionChoice:
    """The precision for a shard. ``native``: the CPU's bf16 (None: :func:`native_bf16`);
    ``measure_fn``: times both on the first batch (called only for "auto" where bf16 is native).

    The choice is logged once per shard, with its figures and no patient data.
    """
    if requested not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {requested!r}")
    cuda = device.startswith("cuda")
    if not cuda and requested != "fp32":
        native = native_bf16() if native is None else native
    if requested == "fp32":
        choice = PrecisionChoice("fp32", "asked for fp32")
    elif requested == "bf16":
        choice = PrecisionChoice("bf16", "asked for bf16")
        if not cuda and not native:
            log.warning("bf16 asked for on a CPU without native bf16 (%s): it is emulated there, and can run "
                        "several times slower than fp32", cpu_capability())
    elif cuda:
        choice = PrecisionChoice("bf16", "CUDA: bf16 autocast")
    elif not native or measure_fn is None:
        choice = decide(None, None, None, bool(native), cpu=cpu_capability())
    else:
        m = measure_fn()
        choice = decide(m.fp32_ips, m.bf16_ips, m.drift, True, cpu=cpu_capability())
    log.info("precision %s on %s (%s)", choice.precision, device, choice.reason)
    return choice


def precision_line(shards: list[dict[str, Any]]) -> str | None:
    """The run summary's precision line from the shards' counts, e.g. ``bf16 (measured 2.10x fp32, drift 0.0003)``.

    Shards that chose alike are told once; older summaries (no precision recorded) give None.
    """
    seen: dict[str, list[int]] = {}
    for s in shards:
        if s.get("precision"):
            seen.setdefault(_describe(s), []).append(int(s.get("shard", 0)) + 1)
    if len(seen) <= 1:
        return next(iter(seen), None)
    return "; ".join(f"shard{'s' if len(n) > 1 else ''} {', '.join(map(str, n))}: {d}" for d, n in seen.items())


def _describe(s: dict[str, Any]) -> str:
    f32, b16, drift = s.get("precision_fp32_ips"), s.get("precision_bf16_ips"), s.get("precision_drift")
    if f32 and b16 and drift is not None:
        return f"{s['precision']} (measured bf16 {b16 / f32:.2f}x fp32, drift {drift:.4f})"
    return f"{s['precision']} ({s.get('precision_reason') or 'not measured'})"
