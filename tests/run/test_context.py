"""The run context: built once by the first stage, the model pinned, nothing re-derived downstream."""

from __future__ import annotations

import json
import os

import pytest

from osteo_batch import pipeline
from osteo_batch.run.context import NoModelInContextError, RunContext


def _settings(tmp_path, archive, model_dir, **kw):
    return pipeline.load_settings(None, workdir=tmp_path / "work", archive=archive, model_dir=model_dir, workers=0, **kw)


def test_a_night_hashes_its_model_once_and_the_worklist_loads_no_network(tmp_path, archive_copy, tiny_model,
                                                                         monkeypatch):
    from osteo_batch.models import model as m

    calls = {"hash": 0, "load": 0}
    real_hash, real_load = m.compute_model_id, m.load_model_dir

    def counting_hash(*a, **kw):
        calls["hash"] += 1
        return real_hash(*a, **kw)

    def counting_load(*a, **kw):
        calls["load"] += 1
        return real_load(*a, **kw)

    monkeypatch.setattr(m, "compute_model_id", counting_hash)
    monkeypatch.setattr(m, "load_model_dir", counting_load)
    out = pipeline.run_nightly(_settings(tmp_path, archive_copy, tiny_model.model_dir))
    assert out["model_id"] == tiny_model.model_id
    assert out["score"]["scored"] > 0 and out["explain"]["explained"] > 0
    assert calls["hash"] == 1, "the weights are hashed once, when the run starts"
    assert calls["load"] == 2, "the network is loaded by the score shard and the heat maps, not by the worklist"


def test_the_threshold_is_the_settings_else_the_models_in_one_place(tmp_path, tiny_model):
    ctx = RunContext.for_model(pipeline.load_settings(None, workdir=tmp_path, model_dir=tiny_model.model_dir), "r")
    cfg = json.loads((tiny_model.model_dir / "config.json").read_text())
    assert ctx.threshold == cfg["threshold"] and ctx.bands == cfg["bands"]
    s = pipeline.load_settings(None, workdir=tmp_path, model_dir=tiny_model.model_dir, threshold=0.123)
    assert RunContext.for_model(s, "r").threshold == 0.123
    assert ctx.card.get("model_id", tiny_model.model_id) == tiny_model.model_id


def test_the_context_travels_as_json_unchanged(tmp_path, tiny_model):
    ctx = RunContext.for_model(pipeline.load_settings(None, workdir=tmp_path, model_dir=tiny_model.model_dir), "r")
    again = RunContext.from_json(json.loads(json.dumps(ctx.to_json())))
    assert again == ctx


def test_weights_replaced_during_the_run_are_refused_not_filed_under_the_old_id(tmp_path, tiny_model):
    import shutil

    mdir = tmp_path / "model"
    shutil.copytree(tiny_model.model_dir, mdir)
    ctx = RunContext.for_model(pipeline.load_settings(None, workdir=tmp_path, model_dir=mdir), "r")
    assert ctx.load_model().model_id == ctx.model_id
    w = mdir / "model.safetensors"
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a copy of other weights lands mid-run
    from osteo_batch.models.model import ModelDirError

    with pytest.raises(ModelDirError, match="changed while run r was going") as e:
        ctx.load_model()
    assert e.value.code == "model_changed_during_run"


def test_a_sweep_only_context_has_no_model_for_a_model_stage(tmp_path, archive_copy):
    ctx = RunContext.for_index(pipeline.load_settings(None, workdir=tmp_path, archive=archive_copy), "r")
    with pytest.raises(NoModelInContextError):
        pipeline.worklist_stage(ctx)
