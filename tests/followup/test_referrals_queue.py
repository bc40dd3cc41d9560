"""A queued referral file that cannot be read is set aside for a person, never stopping the other actions.

Every case is a real file (or folder, FIFO, link) in a real work folder's
``referral-queue/``, flushed into a real DuckDB store.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from osteo_batch.followup import referrals
from osteo_batch.followup.referrals import QUARANTINE_REASONS, flush_queue, new_referral, parse_queued, queue
from osteo_batch.store import Store

PLANT = "ZQXPLANTQUEUE"  # a patient ID planted in bad files: no message may show it


def _good(**kw) -> dict:
    d = {"event_id": "e" * 24, "patient_id": "P1", "status": "referred", "note": None, "by_user": "coord",
         "acted_at": "2026-11-25T10:00:00"}
    d.update(kw)
    return d


#: (file name, bytes, the reason it must be set aside for)
BAD_FILES = [
    ("20261125T100000000001-aaaa.json", b'{"event_id": "x", "patient_id": "' + PLANT.encode() + b'", ', "bad_json"),
    ("20261125T100000000002-aaab.json", b"\xff\xfe{\x00}\x00", "not_utf8"),
    ("20261125T100000000003-aaac.json", b"[1, 2, 3]", "not_an_action"),
    ("20261125T100000000004-aaad.json", json.dumps({k: v for k, v in _good().items() if k != "note"}).encode(),
     "not_an_action"),
    ("20261125T100000000005-aaae.json", json.dumps(_good(extra=1)).encode(), "not_an_action"),
    ("20261125T100000000006-aaaf.json", json.dumps(_good(patient_id=12345)).encode(), "wrong_types"),
    ("20261125T100000000007-aaag.json", json.dumps(_good(note=["x"])).encode(), "wrong_types"),
    ("20261125T100000000008-aaah.json", json.dumps(_good(status="phoned", patient_id=PLANT)).encode(), "bad_status"),
    ("20261125T100000000009-aaai.json", json.dumps(_good(patient_id="   ")).encode(), "empty_id"),
    ("20261125T100000000010-aaaj.json", json.dumps(_good(event_id="")).encode(), "empty_id"),
    ("20261125T100000000011-aaak.json", json.dumps(_good(acted_at="yesterday")).encode(), "bad_time"),
    ("20261125T100000000012-aaal.json", b"", "bad_json"),
    ("20261125T100000000013-aaam.json", b"[" * 100_000, "too_large"),
    ("20261125T100000000014-aaan.json", b"[" * 60_000, "bad_json"),  # under the cap, too deep for json
]


def _store(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    with Store(work / "osteo.duckdb"):
        pass
    return work


def _referrals(work: Path) -> list[tuple]:
    with Store(work / "osteo.duckdb", read_only=True) as st:
        return st.con.execute("SELECT event_id, patient_id, status, note FROM referrals ORDER BY acted_at").fetchall()


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path, monkeypatch):
    """This user's fallback queue lives in the test's folder, never in the real home."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_bad_queue_files_are_set_aside_by_reason_and_good_ones_recorded(tmp_path):
    work = _store(tmp_path)
    good = [new_referral("P7", "contacted", "left a message", by_user="a"), new_referral("P8", "referred", by_user="b")]
    for ev in good:
        queue(work, ev)
    q = work / "referral-queue"
    for name, raw, _ in BAD_FILES:
        (q / name).write_bytes(raw)
    (q / "20261125T100000000020-dir0.json").mkdir()  # a folder named like an action
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    os.chmod(outside, 0o644)
    os.symlink(outside, q / "20261125T100000000021-link.json")
    (q / "20261125T100000000022-huge.json").write_bytes(b"")
    os.truncate(q / "20261125T100000000022-huge.json", 50 * 2**20)  # sparse: 50 MB it must never read

    with Store(work / "osteo.duckdb") as st:
        out = flush_queue(st, work)

    want: dict[str, int] = {}
    for _, _, reason in BAD_FILES:
        want[reason] = want.get(reason, 0) + 1
    want["not_a_file"] = 2
    want["too_large"] += 1
    assert out.recorded == 2 and out.quarantined == want and set(want) <= set(QUARANTINE_REASONS)
    assert sorted(r[0] for r in _referrals(work)) == sorted(e.event_id for e in good)
    assert not list(q.glob("*.json")), "every file recorded or set aside"
    qd = q / "quarantine"
    assert out.quarantine_dirs == [str(qd)] and stat.S_IMODE(qd.stat().st_mode) == 0o700
    names = {p.name for p in qd.iterdir()}
    assert names == {n for n, _, _ in BAD_FILES} | {"20261125T100000000020-dir0.json", "20261125T100000000021-link.json",
                                                    "20261125T100000000022-huge.json"}, "names unchanged"
    for p in qd.iterdir():
        st_ = os.lstat(p)
        if stat.S_ISREG(st_.st_mode):
            assert stat.S_IMODE(st_.st_mode) == 0o600
    assert (qd / BAD_FILES[0][0]).read_bytes() == BAD_FILES[0][1], "kept as it was, for a person"
    assert os.readlink(qd / "20261125T100000000021-link.json") == str(outside)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644, "a link's target is never touched"

    with Store(work / "osteo.duckdb") as st:  # the next flush: nothing twice, nothing left
        again = flush_queue(st, work)
    assert again.recorded == 0 and again.quarantined == {}


def test_one_bad_file_does_not_block_refer_and_the_cli_says_so_without_patient_data(tmp_path):
    """Before: ``refer`` crashed on any bad queued file (and lost the action it was recording)."""
    work = _store(tmp_path)
    queue(work, new_referral("P9", "declined", by_user="c"))
    q = work / "referral-queue"
    (q / "20261125T100000000001-bad1.json").write_text('{"patient_id": "' + PLANT + '"')
    os.mkfifo(q / "20261125T100000000002-fifo.json")  # opening it for reading would block forever
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    p = subprocess.run([sys.executable, "-m", "osteo_batch.cli", "refer", "P10", "--status", "contacted",
                        "--by", "d", "--workdir", str(work)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert "recorded: contacted for P10" in p.stdout and "also recorded 1 earlier change(s)" in p.stdout
    note = [line for line in p.stdout.splitlines() if "set aside" in line]
    assert len(note) == 1 and note[0].startswith(
        "note: 2 queued file(s) could not be read and were set aside in referral-queue/quarantine/"), p.stdout
    assert "1 bad_json" in note[0] and "1 not_a_file" in note[0]
    assert PLANT not in p.stdout + p.stderr
    assert sorted(r[1] for r in _referrals(work)) == ["P10", "P9"]
    assert stat.S_ISFIFO(os.lstat(q / "quarantine" / "20261125T100000000002-fifo.json").st_mode)


def test_a_queued_file_this_process_may_not_read_is_set_aside(tmp_path):
    """Root reads anything; without CAP_DAC_OVERRIDE (``setpriv``) a 0000 file is refused as for any user."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) is not installed: cannot refuse a read to this user")
    work = _store(tmp_path)
    ev = new_referral("P11", "unreachable", by_user="e")
    f = queue(work, ev)
    os.chmod(f, 0)
    script = textwrap.dedent("""
        import json, sys
        from osteo_batch.followup.referrals import flush_queue
        from osteo_batch.store import Store
        with Store(sys.argv[1] + "/osteo.duckdb") as st:
            out = flush_queue(st, sys.argv[1])
        print(json.dumps({"recorded": out.recorded, "quarantined": out.quarantined}))
    """)
    cmd = [sys.executable, "-c", script, str(work)]
    if os.geteuid() == 0:
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=Path(referrals.__file__).parents[2])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1]) == {"recorded": 0, "quarantined": {"unreadable": 1}}
    assert (work / "referral-queue" / "quarantine" / f.name).exists() and not f.exists()


@pytest.mark.parametrize("raw,reason", [(raw, reason) for _, raw, reason in BAD_FILES if reason != "too_large"])
def test_parse_queued_gives_the_reason(raw, reason):
    assert parse_queued(raw) == reason


def test_parse_queued_accepts_what_queue_writes_and_normalises_time():
    ev = new_referral("P1", "dxa-done", " note ", by_user="f")
    assert parse_queued(json.dumps(ev.__dict__).encode()) == ev
    aware = parse_queued(json.dumps(_good(acted_at="2026-11-25T10:00:00+00:00")).encode())
    assert isinstance(aware, referrals.Referral) and "+" not in aware.acted_at


def test_a_copied_queue_file_is_recorded_once(tmp_path):
    work = _store(tmp_path)
    f = queue(work, new_referral("P12", "referred", by_user="g"))
    shutil.copy(f, f.with_name("20991231T000000000000-copy.json"))
    with Store(work / "osteo.duckdb") as st:
        out = flush_queue(st, work)
    assert out.recorded == 1 and [r[1] for r in _referrals(work)] == ["P12"]
