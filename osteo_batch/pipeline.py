"""The Python entry point: settings in, a nightly run out. What a script or a notebook imports.

    from osteo_batch import pipeline
    settings = pipeline.load_settings("site.toml", workdir="work", archive="/mnt/pacs")
    summary = pipeline.run_nightly(settings)

The pieces live where their names say: :mod:`osteo_batch.settings` (the
typed configuration), :mod:`osteo_batch.run.context` (what a run knows about
itself), :mod:`osteo_batch.run.stages` and :mod:`osteo_batch.run.shards` (the
stages), :mod:`osteo_batch.run.nightly` (a run from start to end). This module
only gathers the names a caller needs; nothing in the library imports it.
"""

from __future__ import annotations

from osteo_batch.errors import is_user_error
from osteo_batch.run.context import RunContext
from osteo_batch.run.nightly import finish_run, index_archive, new_run_id, run_nightly, start_run
from osteo_batch.run.shards import SCORE_PASSES, load_stage, plan_stage, score_stage, score_summary, shard_stage
from osteo_batch.run.stages import (STAGES, explain_stage, instance_counts, load_dxa_stage, sweep_stage,
                                    worklist_stage)
from osteo_batch.settings import STORE_FILE, Settings, SettingsError, load_settings
from osteo_batch.store import open_store

__all__ = [
    "RunContext", "SCORE_PASSES", "STAGES", "STORE_FILE", "Settings", "SettingsError", "explain_stage",
    "finish_run", "index_archive", "instance_counts", "is_user_error", "load_dxa_stage", "load_settings",
    "load_stage", "new_run_id", "open_store", "plan_stage", "run_nightly", "score_stage", "score_summary",
    "shard_stage", "start_run", "sweep_stage", "worklist_stage",
]
