"""Batch inference at scale: shards, workers, out-of-memory, resume after SIGKILL, one run at a time."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osteo_batch import pipeline
from osteo_batch.store import Store


def _settings(work: Path, cohort_dir, tiny_model, **kw):
    # fp32: runs are compared score for score, and "auto" chooses bf16 by timing (test_precision.py)
    return pipeline.load_settings(None, workdir=work, archive=cohort_dir.archive, model_dir=tiny_model.model_dir,
                                  dxa_csv=cohort_dir.dxa_csv, **{"precision": "fp32", **kw})


def _swept(work: Path, cohort_dir, tiny_model, **kw):
    s = _settings(work, cohort_dir, tiny_model, **kw)
    pipeline.load_dxa_stage(pipeline.RunContext.for_index(s, "setup"))
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "setup"))
    return s


def _scores(work: Path) -> dict[str, float]:
    with Store(work / "osteo.duckdb", read_only=True) as st:
        return dict(st.con.execute("SELECT sop_instance_uid, score FROM scores").fetchall())


def _items(cohort_dir):
    from osteo_batch.scoring.tensors import Item

    return [Item(str(cohort_dir.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort_dir.plans]


def test_dataloader_workers_decode_each_image_exactly_once(cohort_dir):
    from osteo_batch.scoring.tensors import DicomDataset, make_loader

    items = _items(cohort_dir)[:23]
    seen = []
    for idx, _x, failed in make_loader(DicomDataset(items, 32), batch_size=3, workers=2):
        seen += idx.tolist() + [i for i, _ in failed]
    assert sorted(seen) == list(range(len(items))), "no duplicates, no padding, no gaps"


def test_shards_partition_the_plan_deterministically(tmp_path, cohort_dir, tiny_model):
    from osteo_batch.scoring.score import plan, plan_items
    from osteo_batch.scoring.sharding import shard_of

    s = _swept(tmp_path / "w", cohort_dir, tiny_model)
    with pipeline.open_store(s) as st:
        pending = {r["sop_instance_uid"] for r in st.rows("pending_instances")}
        p1 = plan(st, tmp_path / "scores", "a", 3)
        p2 = plan(st, tmp_path / "scores", "b", 3)
    shards = [{it.sop_instance_uid for it in plan_items(p1, i)} for i in range(3)]
    assert set().union(*shards) == pending and sum(map(len, shards)) == len(pending) == p1.total
    assert all(len(sh) for sh in shards) and p1.sizes == p2.sizes == tuple(map(len, shards))
    assert all(shard_of(u, 3) == i for i, sh in enumerate(shards) for u in sh)


def test_two_shard_processes_score_like_one_process(tmp_path, cohort_dir, tiny_model):
    """--shards 2 on this machine: one process per shard (per GPU on a GPU machine), same scores."""
    one = _swept(tmp_path / "one", cohort_dir, tiny_model, workers=1)
    two = _swept(tmp_path / "two", cohort_dir, tiny_model, workers=1, shards=2)
    a = pipeline.score_stage(pipeline.RunContext.for_model(one, "one"))
    b = pipeline.score_stage(pipeline.RunContext.for_model(two, "two"))
    assert b["n_shards"] == 2 and len(b["shards"]) == 2 and all(x["scored"] for x in b["shards"])
    assert sum(x["scored"] for x in b["shards"]) == b["scored"] == a["scored"] > 0
    sa, sb = _scores(tmp_path / "one"), _scores(tmp_path / "two")
    assert sa.keys() == sb.keys()
    assert max(abs(sa[k] - sb[k]) for k in sa) < 1e-6


def test_out_of_memory_halves_the_batch_and_goes_on(cohort_dir, tiny_model):
    import torch

    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.score import Forward, ScoreOptions

    model = load_model_dir(tiny_model.model_dir)
    x = torch.rand(8, 1, model.config.img_size, model.config.img_size)
    with torch.inference_mode():
        expected = Forward(model, ScoreOptions(precision="fp32"))(x)

    class SmallMemory(torch.nn.Module):  # the real model behind a memory limit of 2 images
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, []

        def forward(self, t):
            self.calls.append(len(t))
            if len(t) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(t)

    fwd = Forward(model, ScoreOptions(precision="fp32"))
    fwd.module = SmallMemory(model.module)
    with torch.inference_mode():
        got = fwd(x)
        again = fwd(x)
    assert fwd.micro_batch == 2 and fwd.module.calls[:3] == [8, 4, 2]
    assert got == pytest.approx(expected, abs=1e-6) and again == pytest.approx(expected, abs=1e-6)
    assert set(fwd.module.calls[-4:]) == {2}, "later batches start at the smaller size"


def test_progress_reports_rate_and_time_left(caplog):
    from osteo_batch.progress import ProgressLog

    with caplog.at_level(logging.DEBUG, logger="osteo_batch.progress"):
        p = ProgressLog("scoring", 10, every_s=3600)
        time.sleep(0.05)
        p(4)
        p(10)
    ups = [r.osteo_progress for r in caplog.records]
    assert [u.done for u in ups] == [0, 4, 10]
    assert ups[1].rate > 0 and ups[1].eta_s is not None and ups[1].eta_s > 0
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and info[0].startswith("scoring: 10/10 images (100%)") and "images/s" in info[0]


KILLED_RUN = """
import sys
from osteo_batch.cli import main
sys.exit(main(["run", "--no-prefect", "--workdir", sys.argv[1], "--archive", sys.argv[2], "--model", sys.argv[3],
               "--dxa", sys.argv[4], "--config", sys.argv[5], "--workers", "1"]))
"""


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc), including the forkserver's children."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()
            and (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")}


def _parts(work: Path) -> list[Path]:
    return sorted((work / "scores").glob("run_date=*/*.parquet"))


@pytest.mark.parametrize("kill_after_parts", [0, 1, 3])
def test_sigkill_at_any_point_then_rerun_scores_every_image_exactly_once(tmp_path, cohort_dir, tiny_model,
                                                                         kill_after_parts):
    work = tmp_path / "work"
    config = tmp_path / "run.toml"
    config.write_text("[run]\ncommit_every = 4\nbatch_size = 2\n")
    args = [str(work), str(cohort_dir.archive), str(tiny_model.model_dir), str(cohort_dir.dxa_csv), str(config)]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if kill_after_parts == 0 and (work / "osteo.duckdb").exists():
                break  # killed while sweeping or planning
            if kill_after_parts and len(_parts(work)) >= kill_after_parts:
                break
            time.sleep(0.02)
        below = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run was killed before it finished"
    deadline = time.monotonic() + 15
    while _alive(below) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(below), "decode workers and the forkserver end with the run, none left behind"
    written = len(_parts(work))
    if kill_after_parts:
        assert written >= kill_after_parts

    s = pipeline.load_settings(config, workdir=work, archive=cohort_dir.archive, model_dir=tiny_model.model_dir,
                               dxa_csv=cohort_dir.dxa_csv, workers=1)
    out = pipeline.run_nightly(s, "rerun")
    with Store(work / "osteo.duckdb", read_only=True) as st:
        rows, distinct = st.con.execute("SELECT count(*), count(DISTINCT sop_instance_uid) FROM scores").fetchall()[0]
        scored = st.con.execute("SELECT count(DISTINCT sop_instance_uid) FROM instances WHERE status = 'scored'"
                                ).fetchall()[0][0]
        pending = st.con.execute("SELECT count(*) FROM instances WHERE status = 'pending'").fetchall()[0][0]
    assert rows == distinct == scored > 0 and pending == 0, "every image scored once, none left over"
    sc = out["score"]
    assert sc["recovered_from_earlier_parts"] + sum(x["scored"] for x in sc["shards"]) == rows
    if kill_after_parts:
        assert sc["recovered_from_earlier_parts"] > 0, "the killed run's parts count"
    assert not list((work / "scores").rglob("*.tmp")), "half-written files are cleaned up"


def test_a_second_run_is_refused_while_one_runs(tmp_path, cohort_dir, tiny_model, prefect_server):
    from osteo_batch.flows.nightly import nightly_screening
    from osteo_batch.run.lock import RunLockedError

    work = tmp_path / "work"
    config = tmp_path / "slow.toml"
    config.write_text("[run]\nbatch_size = 1\n")
    args = [str(work), str(cohort_dir.archive), str(tiny_model.model_dir), str(cohort_dir.dxa_csv), str(config)]
    first = subprocess.Popen([sys.executable, "-c", KILLED_RUN, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = work / "run.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        holder = json.loads(lock.read_text())
        with pytest.raises(RunLockedError, match="another run is using work/ .*this run was not started") as e:
            nightly_screening(archive=str(cohort_dir.archive), workdir=str(work), model_dir=str(tiny_model.model_dir))
        assert holder["run_id"] in str(e.value) and str(holder["pid"]) in str(e.value)
        assert first.poll() is None, "the first run goes on"
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    from osteo_batch.cli import main

    assert main(["run", "--no-prefect", "--workdir", str(work), "--archive", str(cohort_dir.archive),
                 "--model", str(tiny_model.model_dir)]) == 0, "once the first run ends, the next one starts"


@pytest.mark.parametrize("terminal", [True, False])
def test_the_cli_shows_progress_as_bars_or_lines(capsys, terminal):
    from osteo_batch.progress import ProgressLog, bars

    with bars(enabled=terminal):
        p = ProgressLog("scoring shard 1/2", 40, every_s=3600)
        for done in range(0, 41, 8):
            p(done)
    err = capsys.readouterr().err
    assert "scoring shard 1/2" in err and "images/s" in err
    if terminal:
        assert "40/40" in err and "━" in err, "a bar with counts"
    else:
        assert err.count("[progress]") == 1 and "40/40 images (100%)" in err, "one line at the end, no bar"


def test_the_cuda_code_paths_run_on_the_cpu(tmp_path, cohort_dir, tiny_model):
    """bf16 autocast and pinned-memory loading, as on a GPU, here on the CPU: scores stay close to fp32."""
    import pyarrow.parquet as pq

    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.score import ScoreOptions, score_shard
    from osteo_batch.scoring.tensors import DicomDataset, make_loader

    model = load_model_dir(tiny_model.model_dir)
    items = _items(cohort_dir)[:12]
    out = {}
    for precision in ("fp32", "bf16"):
        res = score_shard(model, items, out_dir=tmp_path / precision, run_id=precision,
                          opts=ScoreOptions(batch_size=4, workers=1, precision=precision))
        t = pq.read_table(res.parts)
        out[precision] = dict(zip(t["sop_instance_uid"].to_pylist(), t["score"].to_pylist()))
    assert out["fp32"].keys() == out["bf16"].keys()
    assert 0 < max(abs(out["fp32"][k] - out["bf16"][k]) for k in out["fp32"]) < 0.02, "bf16 ran, and is close"
    with pytest.warns(UserWarning, match="pin_memory"):  # no accelerator: torch says so and loads unpinned
        batches = list(make_loader(DicomDataset(items[:4], 32), batch_size=2, workers=1, pin_memory=True))
    assert sum(len(b[0]) for b in batches) == 4


@pytest.mark.slow
def test_torch_compile_scores_like_eager(cohort_dir, tiny_model):
    import torch

    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.score import Forward, ScoreOptions

    model = load_model_dir(tiny_model.model_dir)
    x = torch.rand(4, 1, model.config.img_size, model.config.img_size)
    with torch.inference_mode():
        eager = Forward(model, ScoreOptions(precision="fp32"))(x)
        compiled = Forward(model, ScoreOptions(precision="fp32", compile=True))
        assert compiled.module is not model.module
        assert compiled(x) == pytest.approx(eager, abs=1e-5)
