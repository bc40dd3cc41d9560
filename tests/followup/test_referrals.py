"""Referral tracking end to end: ``osteo-batch refer`` appends actions, the next list reflects them, and
actions made while a nightly run holds the store are queued, then recorded by the next night.

On a private copy of the shared real run ``night1`` (see tests/followup_store.py);
the tests here build on each other's actions, in file order.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from osteo_batch import pipeline

from cli_run import cli, one_line_error
from followup_store import private_copy, q as _q


@pytest.fixture(scope="module")
def run(followup_night, tmp_path_factory):
    """``night1``'s settings over a copy of its work folder, and its summary."""
    return private_copy(followup_night, tmp_path_factory.mktemp("referrals")), followup_night.summary


HOLD = textwrap.dedent("""
    import sys, time
    from osteo_batch.store import Store
    with Store(sys.argv[1]) as st:          # what a nightly run does: hold the store for writing
        st.con.execute("SELECT 1").fetchall()
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_referrals_are_append_only_and_the_next_list_reflects_them(run, tmp_path):
    s, _ = run
    pid = _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1' ORDER BY score DESC LIMIT 1")[0][0]
    for status, note in (("contacted", "left a message"), ("referred", "DXA booked for 2 Dec")):
        p = cli("refer", pid, "--status", status, "--note", note, "--by", "coordinator-a", "--workdir", s.workdir)
        assert p.returncode == 0 and p.stdout.startswith(f"recorded: {status} for {pid} by coordinator-a"), p.stderr
    rows = _q(s, "SELECT status, note, by_user FROM referrals WHERE patient_id = ? ORDER BY acted_at, recorded_at",
              [pid])
    assert rows == [("contacted", "left a message", "coordinator-a"), ("referred", "DXA booked for 2 Dec", "coordinator-a")]
    out = pipeline.worklist_stage(pipeline.RunContext.for_model(s, "night2"))
    assert out["excluded"].get("already_referred", 0) >= 1
    listed = {r[0] for r in _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night2'")}
    assert pid not in listed, "referred within 180 days: off tonight's list"
    assert "unrecognized" in one_line_error(cli("refer", pid, "--status", "referred", "--bogus", "--workdir", s.workdir))
    assert "invalid choice" in one_line_error(cli("refer", pid, "--status", "phoned", "--workdir", s.workdir))
    assert "no store" in one_line_error(cli("refer", pid, "--status", "referred", "--workdir", tmp_path / "none"))


def test_referrals_made_while_a_run_holds_the_store_are_queued_not_lost(run):
    s, _ = run
    pids = [r[0] for r in _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1' "
                                "ORDER BY score LIMIT 3")]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(s.store_path), "20"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        outs = [cli("refer", pid, "--status", "unreachable", "--note", "no answer", "--wait", "1",
                    "--workdir", s.workdir) for pid in pids]
    finally:
        holder.kill()
        holder.wait()
    for p in outs:
        assert p.returncode == 0 and p.stdout.startswith("queued: the store is held by a running nightly run"), p.stderr
    queue = sorted((s.workdir / "referral-queue").glob("*.json"))
    assert len(queue) == 3 and all(oct(f.stat().st_mode & 0o777) == "0o600" for f in queue)
    assert not any(pid in f.name for f in queue for pid in pids), "queue file names carry no patient ID"
    assert _q(s, "SELECT count(*) FROM referrals WHERE status = 'unreachable'")[0][0] == 0

    out = pipeline.worklist_stage(pipeline.RunContext.for_model(s, "night3"))  # the next night records them first, then lists
    assert out["referrals_from_queue"] == 3 and not list((s.workdir / "referral-queue").glob("*.json"))
    got = _q(s, "SELECT patient_id, note FROM referrals WHERE status = 'unreachable' ORDER BY patient_id")
    assert got == sorted((pid, "no answer") for pid in pids)
    assert out["excluded"].get("already_unreachable", 0) >= 3
    assert pipeline.worklist_stage(pipeline.RunContext.for_model(s, "night4"))["referrals_from_queue"] == 0, "recorded once"


def test_refer_waits_for_a_store_that_frees_up_and_says_it_recorded(run):
    s, _ = run
    pid = _q(s, "SELECT patient_id FROM worklist_entries WHERE run_id = 'night1' ORDER BY score LIMIT 1 OFFSET 5")[0][0]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(s.store_path), "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = cli("refer", pid, "--status", "contacted", "--wait", "60", "--workdir", s.workdir)
    finally:
        holder.wait(timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("recorded: contacted"), p.stdout + p.stderr
    assert "a nightly run holds the store; waiting up to 60 s" in p.stderr
