"""What a run refuses before it starts anything: a held work folder, a damaged model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from osteo_batch.run import lock as runlock


def _cli(*args, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "osteo_batch.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_refused_second_run_starts_no_prefect_server_and_prints_one_line(tmp_path, cohort_dir, tiny_model):
    work = tmp_path / "work"
    with runlock.hold(work, "the-first-run"):
        t0 = time.monotonic()
        r = _cli("run", "--archive", cohort_dir.archive, "--workdir", work, "--model", tiny_model.model_dir,
                 env_extra={"PREFECT_HOME": str(tmp_path / "prefect-home")})
        took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("osteo-batch: error: another run is using"), r.stderr
    assert "the-first-run" in lines[0]
    assert "Traceback" not in r.stderr and "temporary server" not in r.stderr
    assert not (tmp_path / "prefect-home").exists(), "Prefect was not even configured"
    assert took < 30


def test_a_damaged_model_file_is_refused_before_the_sweep(tmp_path, cohort_dir, tiny_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_model.model_dir, model)
    weights = model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x40  # one flipped bit in the tensor data: the header still parses
    weights.write_bytes(bytes(raw))
    work = tmp_path / "work"
    r = _cli("run", "--archive", cohort_dir.archive, "--workdir", work, "--model", model, "--no-prefect")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "changed since the model was written" in lines[0], r.stderr
    assert not (work / "osteo.duckdb").exists(), "nothing was swept"

    weights.write_bytes(bytes(raw[: len(raw) // 3]))  # a truncated copy
    r = _cli("run", "--archive", cohort_dir.archive, "--workdir", work, "--model", model, "--no-prefect")
    assert r.returncode == 2 and "model.safetensors cannot be read" in r.stderr, r.stderr


def test_the_flow_itself_checks_the_model_before_it_sweeps(tmp_path, cohort_dir, tiny_model):
    """A served deployment starts the flow without the CLI: start_run refuses there too."""
    import pytest

    from osteo_batch import pipeline
    from osteo_batch.models.model import ModelDirError

    model = tmp_path / "model"
    shutil.copytree(tiny_model.model_dir, model)
    weights = model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01
    weights.write_bytes(bytes(raw))
    s = pipeline.load_settings(None, workdir=tmp_path / "work", archive=cohort_dir.archive, model_dir=model)
    with pytest.raises(ModelDirError, match="changed since the model was written"):
        pipeline.run_nightly(s)
    assert not s.store_path.exists(), "nothing was swept"
