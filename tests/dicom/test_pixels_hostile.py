"""Pixels no file can use to stop the night: bombs, colour that says it is grey, files that change under us.

- Every case of ``cases_pixels.py`` is read by the header reader and the
  pixel pipeline in a child process whose address space is capped at
  2.5 GiB: each must reach scoring (the sweep accepts it) and get its reason,
  and the child's peak memory must stay far below what any bomb claims.
- The fault matrix: files that, between the sweep and scoring, change, vanish,
  turn into a FIFO or into a link out of the archive. A real sweep into a real
  store, then scoring with the tiny model in a child with a deadline: the run
  finishes, each file gets one row with a reason, the next sweep reads again.
- The time limit per image: it interrupts a read that blocks, and an image
  past it is ``decode_timeout`` while the next image decodes.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cases_pixels
from cases import MARKER, planted
from dicom_factory import dataset, ramp, write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LIMIT = int(2.5 * 1024**3)
PEAK_MB = 300  # the bombs claim gigabytes to terabytes; reading all of them must stay under this


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), str(HERE.parent / "hostile"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _case_worker(archive: str, outside: str, out: str) -> None:
    """In a child capped at 2.5 GiB: write every pixel case, read its header and pixels, record the outcome."""
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    from test_fuzz import peak_mb

    from osteo_batch.dicom.headers import read_header
    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.rejections import PixelError

    results = {}
    for case in cases_pixels.CASES:
        rels = case.write(Path(archive), Path(outside))
        for rel in rels:
            header = read_header(Path(archive) / rel).reason
            try:
                img = load_image(Path(archive) / rel, 32)
                outcome = ["scored", None, bool(img.shape == (32, 32) and 0 <= img.min() and img.max() <= 1)]
            except PixelError as e:
                outcome = ["rejected", e.reason, True]
            except BaseException as e:  # noqa: BLE001 (the property under test: nothing else escapes)
                outcome = ["crashed", type(e).__name__, False]
            results[rel] = [case.name, header, *outcome, peak_mb()]
    Path(out).write_text(json.dumps(results))


@pytest.fixture(scope="module")
def pixel_outcomes(tmp_path_factory):
    d = tmp_path_factory.mktemp("pixel-cases")
    (d / "a").mkdir(), (d / "o").mkdir()
    out = d / "results.json"
    code = ("import sys, test_pixels_hostile as t; t._case_worker(*sys.argv[1:])")
    p = subprocess.run([sys.executable, "-c", code, str(d / "a"), str(d / "o"), str(out)], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert MARKER not in p.stdout + p.stderr, "planted patient data was printed"
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", cases_pixels.CASES, ids=lambda c: c.name)
def test_pixel_case_gets_its_outcome_within_the_memory_limit(pixel_outcomes, case):
    rows = {rel: r for rel, r in pixel_outcomes.items() if r[0] == case.name}
    assert rows, f"case {case.name} wrote no file"
    for rel, (_name, header, status, reason, ok, peak) in rows.items():
        assert status != "crashed", f"{rel}: {reason} escaped the pixel pipeline"
        assert ok, f"{rel}: an image outside [0, 1] or of the wrong shape"
        if case.stage == "score":
            assert header is None, f"{rel}: the sweep refused it ({header}), so scoring never sees it"
            if case.status is not None:
                assert status == case.status, f"{rel}: {status} ({reason}), expected {case.status}"
            if case.reasons is not None:
                assert reason in case.reasons, f"{rel}: {reason}, expected one of {sorted(case.reasons)}"
        else:
            assert header in case.reasons or reason in case.reasons, f"{rel}: sweep {header}, pixels {reason}"
        assert peak < PEAK_MB, f"{rel}: peak memory {peak} MB by the end of this case"


# ------------------------------------------------------------------ the checks, one by one


def test_the_header_limits_are_checked_again_when_the_pixels_are_read(tmp_path):
    """A file rewritten after the sweep with a header past the sweep's limits never reaches a decoder."""
    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.rejections import PixelError

    ds = dataset()
    ds.Rows, ds.Columns = 20000, 20000  # 800 MB of 16-bit pixels claimed, 6 kB stored
    f = write(ds, tmp_path / "huge-header")
    with pytest.raises(PixelError) as e:
        load_image(f, 32)
    assert e.value.reason == "image_too_large"


def test_a_codestream_claiming_a_little_more_stays_inconsistent_not_a_bomb(tmp_path):
    """Inside the sweep's limits a size disagreement is a damaged file (the reason tests/dicom/test_pixels.py expects)."""
    from pydicom.uid import JPEG2000Lossless

    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.rejections import PixelError

    ds = dataset(ramp(64, 48))
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    ds.Rows = 32
    f = write(ds, tmp_path / "rows")
    with pytest.raises(PixelError) as e:
        load_image(f, 16)
    assert e.value.reason == "pixels_inconsistent_with_header" and "64x48" in e.value.detail


def test_rle_segments_are_counted_before_pydicoms_own_decoder_gets_them():
    """pydicom's RLE decoder grows its output with the data; the count stops just past the frame."""
    from osteo_batch.dicom.codestreams import rle_decoded_length

    bomb = b"\x81\x00" * 1_000_000  # 128 MB of zeros from 2 MB
    t0 = time.perf_counter()
    assert 4096 < rle_decoded_length(bomb, 4096) <= 4096 + 128
    assert time.perf_counter() - t0 < 0.1, "counting stops at the limit, not at the end of the data"
    literal = bytes([127]) + bytes(range(128)) + b"\xfe\x07"  # 128 literal bytes, then 3 copies of 7
    assert rle_decoded_length(literal, 10**6) == 131


def test_a_palette_colour_image_is_not_scored_as_grey():
    from pydicom.data import get_testdata_file

    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.rejections import PixelError

    with pytest.raises(PixelError) as e:
        load_image(get_testdata_file("examples_palette.dcm", download=False), 32)  # pydicom's own palette image
    assert e.value.reason == "pixel_decode_failed" and "PALETTE COLOR" in e.value.detail


@pytest.fixture
def alarm_guard():
    """Fail, rather than hang, a test whose read would block forever without the fix."""
    def hung(signum, frame):
        raise TimeoutError("blocked: the read never returned")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_a_fifo_in_a_files_place_is_refused_at_once(tmp_path, alarm_guard):
    from osteo_batch.dicom.pixels import read_dataset
    from osteo_batch.dicom.rejections import PixelError

    os.mkfifo(tmp_path / "IM1")
    t0 = time.monotonic()
    with pytest.raises(PixelError) as e:
        read_dataset(tmp_path / "IM1")
    assert e.value.reason == "not_regular_file" and time.monotonic() - t0 < 5


def test_a_link_out_of_the_archive_is_never_opened(tmp_path):
    from osteo_batch.archive.walk import real_roots
    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.rejections import PixelError

    (tmp_path / "archive").mkdir()
    target = write(planted(dataset(), "PXLINK"), tmp_path / "outside" / "IM1")
    os.symlink(target, tmp_path / "archive" / "IM1")
    with pytest.raises(PixelError) as e:
        load_image(tmp_path / "archive" / "IM1", 16, roots=real_roots(tmp_path / "archive"))
    assert e.value.reason == "outside_archive" and MARKER not in str(e.value)
    assert load_image(tmp_path / "archive" / "IM1", 16, roots=real_roots(tmp_path / "archive", [tmp_path / "outside"])).shape == (16, 16)


def test_a_file_rewritten_with_another_instance_is_not_scored_as_the_one_swept(tmp_path):
    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.rejections import PixelError

    f = write(dataset(sop_instance_uid="2.25.5"), tmp_path / "IM1")
    assert load_image(f, 16, sop_instance_uid="2.25.5").shape == (16, 16)
    with pytest.raises(PixelError) as e:
        load_image(f, 16, sop_instance_uid="2.25.4")
    assert e.value.reason == "unreadable"


def test_the_time_limit_interrupts_a_read_that_blocks(tmp_path, alarm_guard):
    """A blocking open (here a FIFO without a writer, opened the ordinary way) returns at the limit."""
    from osteo_batch.timeouts import ItemTimeout, time_limit

    signal.alarm(0)  # the guard's timer would be an outer limit, which time_limit leaves alone
    guard = signal.getsignal(signal.SIGALRM)
    os.mkfifo(tmp_path / "fifo")
    t0 = time.monotonic()
    with pytest.raises(ItemTimeout):
        with time_limit(0.3):
            open(tmp_path / "fifo", "rb")
    assert time.monotonic() - t0 < 5
    assert signal.getsignal(signal.SIGALRM) is guard and signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_the_time_limit_leaves_a_callers_own_timer_alone():
    from osteo_batch.timeouts import time_limit

    def outer(signum, frame):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, outer)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        with time_limit(0.01):
            time.sleep(0.05)  # past the inner limit: not enforced, the caller's timer runs
        assert signal.getsignal(signal.SIGALRM) is outer and signal.getitimer(signal.ITIMER_REAL)[0] > 20
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def slow_and_quick(tmp_path_factory):
    """A 1536 x 1536 JPEG 2000 lossless (a full decode takes a few tenths of a second) and a small image."""
    from pydicom.uid import JPEG2000Lossless

    from osteo_batch.scoring.tensors import Item

    d = tmp_path_factory.mktemp("slow")
    rng = np.random.default_rng(0)
    px = ((ramp(1536, 1536).astype(np.int64) + rng.integers(0, 64, (1536, 1536))) % 4096).astype(np.uint16)
    ds = dataset(px, rows=1536, cols=1536, sop_instance_uid="2.25.61")
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    slow = write(ds, d / "slow")
    quick = write(dataset(sop_instance_uid="2.25.62"), d / "quick")
    return [Item(str(slow), "2.25.61", None), Item(str(quick), "2.25.62", None)]


def test_an_image_past_its_time_limit_is_decode_timeout_and_the_next_one_decodes(slow_and_quick):
    from osteo_batch.dicom.display import DisplayOptions
    from osteo_batch.scoring.tensors import DicomDataset

    full = DisplayOptions(reduce=False)  # a full decode: a reduced read would be too quick to time out
    assert DicomDataset(slow_and_quick, 32, full)[0][2] is None, "decodes within the default limit"
    ds = DicomDataset(slow_and_quick, 32, full, item_timeout_s=0.02)
    assert ds[0][1:] == (None, "decode_timeout")
    i, img, reason = ds[1]
    assert reason is None and img.shape == (32, 32)


@pytest.mark.slow
def test_a_dataloader_worker_past_the_limit_goes_on_with_the_next_image(slow_and_quick):
    from osteo_batch.dicom.display import DisplayOptions
    from osteo_batch.scoring.tensors import DicomDataset, make_loader

    ds = DicomDataset(slow_and_quick * 2, 32, DisplayOptions(reduce=False), item_timeout_s=0.02)
    seen = {}
    for idx, _x, failed in make_loader(ds, batch_size=1, workers=1):
        seen.update({i: None for i in idx.tolist()})
        seen.update(dict(failed))
    assert seen == {0: "decode_timeout", 1: None, 2: "decode_timeout", 3: None}


# ------------------------------------------------------------------ the fault matrix, through a real night

_SCORE = """
import dataclasses, json, sys
from osteo_batch import pipeline
from osteo_batch.archive.walk import real_roots
from osteo_batch.models.model import load_model_dir
from osteo_batch.scoring.score import ScorePlan, plan_items, score_shard

s = pipeline.Settings.from_json(json.loads(sys.argv[1]))
planned = pipeline.plan_stage(pipeline.RunContext.for_model(s, "night"))
p = ScorePlan(**{**planned["plan"], "sizes": tuple(planned["plan"]["sizes"])})
opts = s.score_options()
if not opts.roots:  # until Settings passes its archive's roots itself
    opts = dataclasses.replace(opts, roots=real_roots(s.archive, getattr(s, "allowed_roots", ())))
res = score_shard(load_model_dir(s.resolved_model_dir()), plan_items(p, 0), out_dir=s.workdir / "scores",
                  run_id="night", opts=opts)
print(json.dumps({"shard": res.counts(), "load": pipeline.load_stage(pipeline.RunContext.for_model(s, "night"))["by_status"]}))
"""


def _rows(s) -> dict[str, tuple]:
    from osteo_batch.store import Store

    with Store(s.store_path, read_only=True) as st:
        got = st.con.execute("SELECT path, status, reason, sop_instance_uid FROM instances").fetchall()
    return {Path(p).name: (status, reason, uid) for p, status, reason, uid in got}


def _scored_uids(s) -> set[str]:
    from osteo_batch.store import Store

    with Store(s.store_path, read_only=True) as st:
        return {u for (u,) in st.con.execute("SELECT sop_instance_uid FROM scores").fetchall()}


@pytest.mark.slow
def test_files_that_change_between_sweep_and_scoring_never_stop_the_night(tmp_path, tiny_model):
    from osteo_batch import pipeline

    archive, outside, work = tmp_path / "archive", tmp_path / "outside", tmp_path / "work"
    uids = {n: f"2.25.6{k:03d}" for k, n in enumerate(["good0", "good1", "changed", "vanished", "fifo", "link",
                                                                     "samesize"])}
    for n, uid in uids.items():
        write(planted(dataset(sop_instance_uid=uid, patient_id=f"P{uid[-3:]}"), f"PXFAULT{n.upper()}"), archive / n)
    s = pipeline.load_settings(None, workdir=work, archive=archive, model_dir=tiny_model.model_dir, workers=1)
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "before"))
    assert {n: r[0] for n, r in _rows(s).items()} == {n: "pending" for n in uids}

    # the faults, after the sweep and before scoring
    time.sleep(0.01)  # a new mtime for the rewritten file
    write(planted(dataset(ramp(64, 40) // 2, sop_instance_uid="2.25.6999", patient_id="POTHER", rows=64, cols=40),
                  "PXFAULTOTHER"), archive / "changed")
    # rewritten as another image of the same size, its modification time put back: the sweep cannot tell
    st_before = (archive / "samesize").stat()
    write(planted(dataset(sop_instance_uid="2.25.6998", patient_id=f"P{uids['samesize'][-3:]}"), "PXFAULTSAMESIZE"),
          archive / "samesize")
    assert (archive / "samesize").stat().st_size == st_before.st_size
    os.utime(archive / "samesize", ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    (archive / "vanished").unlink()
    (archive / "fifo").unlink()
    os.mkfifo(archive / "fifo")
    (archive / "link").unlink()
    target = write(planted(dataset(sop_instance_uid=uids["link"]), "PXFAULTOUT"), outside / "IM1")
    os.symlink(target, archive / "link")

    try:
        p = subprocess.run([sys.executable, "-c", _SCORE, json.dumps(s.to_json())], env=_env(), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("scoring hung on a file that changed after the sweep")
    assert p.returncode == 0, p.stderr[-3000:]
    assert MARKER not in p.stdout + p.stderr, "planted patient data was printed"
    rows = _rows(s)
    assert rows["good0"][:2] == rows["good1"][:2] == ("scored", None)
    assert rows["changed"][:2] == ("rejected", "unreadable"), "another instance now: not scored as the swept one"
    assert rows["samesize"][:2] == ("rejected", "unreadable")
    assert rows["vanished"][:2] == ("rejected", "unreadable")
    assert rows["fifo"][:2] == ("rejected", "not_regular_file")
    assert rows["link"][:2] == ("rejected", "outside_archive")
    assert _scored_uids(s) == {uids["good0"], uids["good1"]}, "only the two good images have scores"

    # the next night: the changed file is read again; the others are whatever the sweep makes of them now
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "after"))
    rows = _rows(s)
    assert rows["changed"] == ("pending", "awaiting_score", "2.25.6999")
    assert rows["samesize"] == ("pending", "awaiting_score", "2.25.6998"), "re-read although size and time match"
    assert "vanished" not in rows
    assert rows.get("fifo", ("rejected", "not_regular_file"))[:2] == ("rejected", "not_regular_file")
    assert rows.get("link", ("rejected", "outside_archive"))[:2] == ("rejected", "outside_archive")
    assert len(rows) == len(set(rows))
