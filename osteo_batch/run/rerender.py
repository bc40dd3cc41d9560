"""The latest nightly run's worklist again, at another threshold or with other exclusions, from a read-only store.

Why apart from the worklist stage: a coordinator asks for "everyone from last
night at 0.2 or above" while the next run may hold the store for writing. This
opens the store read-only (waiting as long as asked), takes the model the run
recorded, checks that the folder still holds that model (its content hash),
and reads the threshold, bands and card from the folder's config and card:
the network is never loaded, so no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from osteo_batch.errors import UserError
from osteo_batch.run.context import RunContext
from osteo_batch.settings import Settings
from osteo_batch.store import Store


class NoRunError(UserError):
    """The store holds no finished nightly run to take a worklist from."""

    code = "no_run"
    fix = "run `osteo-batch run` first"


class ModelMismatchError(UserError):
    """The model folder holds another model than the one the run scored with."""

    code = "model_mismatch"
    fix = "pass --model"


@dataclass(frozen=True)
class Rerendered:
    """The pages written (a :class:`osteo_batch.worklist.WorklistResult`) and the threshold they list at."""

    result: Any
    threshold: float


def rerender_worklist(settings: Settings, *, threshold: float | None = None, model_dir: str | Path | None = None,
                      wait_s: float = 60.0) -> Rerendered:
    """Write the latest run's worklist pages again; nothing is recorded in the store.

    ``threshold`` None keeps the run's own (and its file names); a threshold
    adds ``-threshold-P`` to the names, so the night's pages stay. ``model_dir``
    None: the folder the run recorded, else the settings' model.
    """
    from osteo_batch.worklist import write_worklist

    with Store(settings.store_path, read_only=True, wait_s=wait_s) as st:
        runs = st.rows("latest_run")
        if not runs:
            raise NoRunError(f"no nightly run in {settings.store_path}; run `osteo-batch run` first")
        run = runs[0]
        mdir = Path(model_dir) if model_dir else _model_dir_of(settings, run)
        chosen = threshold if threshold is not None else run["threshold"]
        ctx = RunContext.for_model(replace(settings, model_dir=mdir, threshold=chosen), run["run_id"])
        if ctx.model_id != run["model_id"]:
            raise ModelMismatchError(f"model {mdir} is {ctx.model_id}, but the latest run used {run['model_id']}; "
                                     "pass --model")
        suffix = "" if threshold is None else f"-threshold-{ctx.threshold:.4f}"
        res = write_worklist(
            st, workdir=settings.workdir, run={"run_id": ctx.run_id}, model_id=ctx.model_id, threshold=ctx.threshold,
            bands=ctx.bands, model_card=ctx.card, rules=settings.exclusions(), sites=settings.sites,
            name_suffix=suffix, record=False,
        )
    return Rerendered(res, ctx.threshold)


def _model_dir_of(settings: Settings, run: dict[str, Any]) -> Path:
    """The model folder the run recorded in its summary, else the settings' (or the demo's)."""
    summary = json.loads(run["summary"]) if run.get("summary") else {}
    d = summary.get("model_dir")
    return Path(d) if d else settings.resolved_model_dir()
