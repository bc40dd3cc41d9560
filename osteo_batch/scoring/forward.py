"""The model's forward for scoring: device, precision, calibration, out-of-memory halving.

One object per shard: it settles the shard's precision on the first batch it
is given (:mod:`osteo_batch.scoring.precision`), then scores every batch the
same way, halving the batch when the accelerator runs out of memory.
"""

from __future__ import annotations

import logging
from typing import Protocol

from osteo_batch.models import calibrate
from osteo_batch.models.model import LoadedModel, normalise
from osteo_batch.scoring.precision import PrecisionChoice, choose_precision, measure

log = logging.getLogger("osteo_batch.scoring.forward")


class ForwardOptions(Protocol):
    """What the forward reads of :class:`osteo_batch.scoring.score.ScoreOptions`."""

    device: str
    precision: str
    compile: bool

    def resolved_batch_size(self) -> int: ...


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e)))


class Forward:
    """The model's forward for scoring: device, precision, calibration, out-of-memory halving.

    ``precision`` is what it scores in: "auto" on a CPU is settled on the first
    batch it is given (:func:`~osteo_batch.scoring.precision.choose_precision`
    times both there); ``native`` overrides the CPU's bf16 detection.
    """

    def __init__(self, model: LoadedModel, opts: ForwardOptions, *, native: bool | None = None):
        import torch

        self.model = model
        self.device = opts.device
        self.cuda = opts.device.startswith("cuda")
        self.requested, self.native, self.batch = opts.precision, native, opts.resolved_batch_size()
        self.choice: PrecisionChoice | None = None  # settled by the first batch
        self.bf16 = False
        self.module = torch.compile(model.module) if opts.compile else model.module
        self.col = model.config.labels.index(model.config.score_label)
        self.micro_batch: int | None = None  # None: the whole batch at once

    @property
    def precision(self) -> str | None:
        """"fp32" or "bf16", as scored; None before the first batch."""
        return self.choice.precision if self.choice else None

    def _scores(self, x, bf16: bool | None = None):
        import torch

        on = self.bf16 if bf16 is None else bf16
        with torch.autocast(device_type="cuda" if self.cuda else "cpu", dtype=torch.bfloat16, enabled=on):
            logits = self.module(normalise(x, self.model.config))
        return torch.softmax(logits.float(), dim=1)[:, self.col]

    def _chunk(self, x, size: int):
        """Scores of ``x``; in bf16 computed at ``size`` images, ``x``'s own repeated to fill it.

        Why: bf16 rounding depends on the shape the kernels run at (9e-5 between
        one image and sixteen for the demo model), never on which images share
        the batch. At one shape an image's bf16 score does not depend on how the
        shard's images fell into batches: twins and shards score alike. fp32
        needs no padding (its shapes move scores by 1e-7).
        """
        import torch

        n = len(x)
        if not self.bf16 or n >= size:
            return self._scores(x)
        return self._scores(x[torch.arange(size, device=x.device) % n])[:n]

    def settle(self, x) -> PrecisionChoice:
        """Choose the precision on the batch ``x`` (on the device), once; later calls return the choice."""
        if self.choice is None:
            def timed(bf16: bool):
                return lambda xs: calibrate.apply(self.model.config.calibration, self._scores(xs, bf16))

            self.choice = choose_precision(self.requested, self.device, native=self.native,
                                           measure_fn=lambda: measure(timed(False), timed(True), x, batch=self.batch))
            self.bf16 = self.choice.precision == "bf16"
        return self.choice

    def __call__(self, x) -> list[float]:
        """Risk scores of the batch ``x`` (N, 1, H, W), calibrated as the model says."""
        import torch

        x = x.to(self.device, non_blocking=self.cuda)
        self.settle(x)
        while True:
            mb = self.micro_batch or (max(len(x), self.batch) if self.bf16 else len(x))
            try:
                p = torch.cat([self._chunk(x[i : i + mb], mb) for i in range(0, len(x), mb)])
                break
            except Exception as e:
                if not _is_oom(e) or mb == 1:
                    raise
                self.micro_batch = max(1, mb // 2)
                if self.cuda:
                    torch.cuda.empty_cache()
                log.warning("out of memory at batch %d on %s; going on at %d", mb, self.device, self.micro_batch)
        p = calibrate.apply(self.model.config.calibration, p)  # a site's recalibration, if any
        return p.cpu().tolist()
