"""The run context: what one run knows about itself, built once by its first stage, handed to every other.

Why: before it, each stage re-derived the run's model from the settings. The
plan and load stages re-hashed the weights, the explain and worklist stages
loaded the whole network again (the worklist only to read a threshold), and
"the settings' threshold, else the model's" was written four times. A run's
model must not change under it either: the context pins the model folder, its
content hash, the threshold and the bands at the start, and every stage uses
those.

The context is JSON-able (:meth:`RunContext.to_json`), so it travels to
shard processes, Ray tasks and work-pool flow runs unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from osteo_batch.errors import InternalError
from osteo_batch.settings import Settings


class NoModelInContextError(InternalError):
    """A model stage was handed a sweep-only context: a wiring bug, not the user's input."""

    code = "no_model_in_context"


@dataclass(frozen=True)
class RunContext:
    """One run: its settings, its ID and kind, and (for a nightly run) its model, pinned at the start.

    ``kind`` is ``"nightly"`` (model stages follow) or ``"sweep"`` (the index
    only: ``sweep``, ``train``, ``calibrate``, the study, the demo's history).
    """

    settings: Settings
    run_id: str
    kind: str = "nightly"
    model_id: str | None = None  # content hash of the weights and inference config
    model_dir: Path | None = None  # resolved
    threshold: float | None = None  # the settings' threshold when set, else the model's
    bands: dict[str, float] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)  # card.json, for the worklist's footer
    weights_stat: tuple[int, int] | None = None  # (size, mtime_ns) of the weights file that was hashed

    @classmethod
    def for_index(cls, settings: Settings, run_id: str) -> "RunContext":
        """A sweep-only run: no model is read."""
        return cls(settings, run_id, kind="sweep")

    @classmethod
    def for_model(cls, settings: Settings, run_id: str) -> "RunContext":
        """A nightly run's context: the model folder checked and hashed once (a damaged file fails here)."""
        from osteo_batch.models.model import check_model_dir, read_config

        mdir = settings.resolved_model_dir()
        cfg = read_config(mdir)
        model_id = check_model_dir(mdir)
        card_path = mdir / "card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}  # check_model_dir parsed it
        threshold = settings.threshold if settings.threshold is not None else cfg.threshold
        return cls(settings, run_id, kind="nightly", model_id=model_id, model_dir=mdir.resolve(),
                   threshold=threshold, bands=dict(cfg.bands), card=card, weights_stat=_stat(mdir))

    def with_settings(self, settings: Settings) -> "RunContext":
        """The same run with other settings (a shard process on its own device)."""
        return replace(self, settings=settings)

    def need_model(self) -> str:
        """The model ID, for stages that need a model; a sweep-only context here is a bug."""
        if self.model_id is None or self.model_dir is None or self.threshold is None:
            raise NoModelInContextError(f"run {self.run_id}: a {self.kind!r} run has no model; "
                                        "build the context with RunContext.for_model")
        return self.model_id

    def load_model(self, device: str | None = None):
        """The run's network, for the stages that run it (score shards, heat maps): not hashed again.

        The weights file must still be the one hashed at the start (same size
        and modification time); a model folder replaced during the run is an
        error, not scores filed under the wrong model ID.
        """
        from osteo_batch.models.model import ModelDirError, load_model_dir

        model_id = self.need_model()
        if self.weights_stat is not None and _stat(self.model_dir) != self.weights_stat:
            raise ModelDirError(f"model {self.model_dir}: model.safetensors changed while run {self.run_id} was going; "
                                "run again (the next run hashes the new weights)", code="model_changed_during_run")
        return load_model_dir(self.model_dir, device=device or self.settings.device, model_id=model_id)

    def summary(self) -> dict[str, Any]:
        """What the run summary starts with: IDs and numbers, no patient data."""
        return {"run_id": self.run_id, "model_id": self.model_id, "threshold": self.threshold,
                "model_dir": str(self.model_dir) if self.model_dir else None}

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings.to_json(), "run_id": self.run_id, "kind": self.kind,
                "model_id": self.model_id, "model_dir": str(self.model_dir) if self.model_dir else None,
                "threshold": self.threshold, "bands": self.bands, "card": self.card,
                "weights_stat": list(self.weights_stat) if self.weights_stat else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunContext":
        return cls(Settings.from_json(d["settings"]), d["run_id"], kind=d.get("kind", "nightly"),
                   model_id=d.get("model_id"), model_dir=Path(d["model_dir"]) if d.get("model_dir") else None,
                   threshold=d.get("threshold"), bands=dict(d.get("bands") or {}), card=dict(d.get("card") or {}),
                   weights_stat=tuple(d["weights_stat"]) if d.get("weights_stat") else None)


def _stat(model_dir: Path) -> tuple[int, int] | None:
    try:
        st = (Path(model_dir) / "model.safetensors").stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)
