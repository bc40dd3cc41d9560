"""Hostile headers (``cases_headers``): bombs that must not allocate, cuts that are ``truncated``,
damaged UIDs whose names must not print, duplicates that keep the intact copy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import cases_headers as ch
from cases import MARKER, planted
from dicom_factory import dataset
from osteo_batch.dicom.headers import read_header
from osteo_batch.dicom.dataset import open_dataset
from osteo_batch.dicom.limits import HEADER_ALLOWANCE
from osteo_batch.dicom.rejections import DatasetError
from osteo_batch.store import Store
from osteo_batch.archive.sweep import sweep


def _write(cases, archive: Path, outside: Path) -> dict[str, object]:
    archive.mkdir(exist_ok=True)
    outside.mkdir(exist_ok=True)
    return {rel: c for c in cases for rel in c.write(archive, outside)}


def _rows(db: Path) -> dict[str, dict]:
    with Store(db, read_only=True) as st:
        cur = st.con.execute("SELECT * FROM instances")
        cols = [c[0] for c in cur.description]
        return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


class _Everything(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_every_header_case_gets_its_outcome_and_prints_nothing(tmp_path, capfd):
    expect = _write(ch.CASES, tmp_path / "archive", tmp_path / "outside")
    root = logging.getLogger()
    seen = _Everything()
    root.addHandler(seen)
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as escaped:
            warnings.simplefilter("always")
            with Store(tmp_path / "osteo.duckdb") as st:
                res = sweep(st, tmp_path / "archive", run_id="r1", workers=1)
    finally:
        root.removeHandler(seen)
        root.setLevel(old)
    printed = capfd.readouterr()
    assert MARKER not in printed.out + printed.err
    assert not [w for w in escaped if "pydicom" in (w.filename or "")], "pydicom warned outside the read"
    assert not [ln for ln in seen.lines if MARKER in ln], "planted data logged"
    assert res.conserved() and res.files == len(expect)
    rows = {os.path.relpath(p, tmp_path / "archive"): r for p, r in _rows(tmp_path / "osteo.duckdb").items()}
    wrong = []
    for rel, c in expect.items():
        r = rows[rel]
        want = "pending" if c.stage == "score" and c.status == "scored" else c.status  # no scoring here
        if (want is not None and r["status"] != want) or (c.reasons is not None and r["reason"] not in c.reasons):
            wrong.append((rel, r["status"], r["reason"], r["read_detail"]))
    assert not wrong, wrong
    for rel, r in rows.items():  # intact copies have no issue, damaged ones at least one
        if rel.startswith("hdr-dup-"):
            assert (r.get("header_issues", 0) > 0) == rel.endswith("-damaged"), (rel, r.get("header_issues"))


_CHILD = textwrap.dedent("""
    import json, resource, sys
    import pydicom, numpy  # what the reader needs, loaded before the limit is measured
    from osteo_batch.dicom.headers import read_header
    from osteo_batch.dicom.dataset import open_dataset
    from osteo_batch.dicom.rejections import DatasetError

    def vm():
        for ln in open("/proc/self/status"):
            if ln.startswith("VmSize:"):
                return int(ln.split()[1]) * 1024
    # no allocation of more than 256 MiB beyond what is mapped now can succeed
    resource.setrlimit(resource.RLIMIT_AS, (vm() + 256 * 1024 * 1024, resource.RLIM_INFINITY))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {}
    for p in sys.argv[1:]:
        header = read_header(p).reason
        try:
            open_dataset(p)  # as the pixel reader opens it: pixels and all
            full = None
        except DatasetError as e:
            full = e.reason
        out[p] = [header, full]
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"grew_kib": grew, "out": out}))
""")


def test_deflate_bombs_are_refused_without_inflating(tmp_path):
    """1 MB files that inflate to 1 GiB (2 GiB for a 2 MB one): refused, in a process that cannot allocate 256 MiB."""
    bombs = [c for c in ch.BOMBS if c.reasons == ch.BOMB]
    expect = _write(bombs, tmp_path / "a", tmp_path / "o")
    assert max((tmp_path / "a" / rel).stat().st_size for rel in expect) < 3 * 2**20
    r = subprocess.run([sys.executable, "-c", _CHILD, *[str(tmp_path / "a" / rel) for rel in expect]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert {Path(p).name: v for p, v in rep["out"].items()} == {
        rel: ["decompression_bomb", "decompression_bomb"] for rel in expect}
    assert rep["grew_kib"] < 96 * 1024, f"reading bombs grew the process by {rep['grew_kib'] // 1024} MiB"
    assert MARKER not in r.stdout + r.stderr


def test_the_bound_is_what_the_header_justifies(tmp_path):
    """A deflated 1024x1024x16-bit image may inflate to its 2 MiB of pixels plus the allowance, not one byte more."""
    ds = planted(dataset(rows=1024, cols=1024, sop_instance_uid="2.25.66900"), "HDRBOUND")
    plain = ch.encode(ds)
    meta = ch.encode(ds, syntax=ch.DEFLATED)
    meta, body = meta[: ch.meta_end(meta)], plain[ch.meta_end(plain):]
    cap = HEADER_ALLOWANCE + 1024 * 1024 * 2
    padding = ch._element(0xFFFCFFFC, b"OB", 0)
    room = cap - len(body) - len(padding)
    for name, zeros, want in (("fits", room, None), ("over", room + 2, "decompression_bomb")):
        f = tmp_path / name
        pad = ch._element(0xFFFCFFFC, b"OB", zeros)
        ch.write_deflated(f, meta, body + pad, zeros)
        assert read_header(f).reason == want, name
        if want is None:
            full = open_dataset(f)
            assert len(full.PixelData) == 1024 * 1024 * 2 and full.Rows == 1024
        else:
            with pytest.raises(DatasetError) as e:
                open_dataset(f)
            assert e.value.reason == want and MARKER not in str(e.value)


def _boundaries(data: bytes) -> set[int]:
    """Offsets between two top-level data set elements before Pixel Data (a cut there leaves a shorter, whole file)."""
    off = ch.offsets(data)
    px = off["PixelData"][0]
    return {s for s, _ in off.values() if s <= px} | {e for _, e in off.values() if e <= px}


@pytest.mark.parametrize("kind", ["native", "j2k", "rle", "nometa"])
def test_a_file_cut_anywhere_is_truncated(tmp_path, kind):
    """Every cut through the header, every 97th through the pixels: ``truncated`` (``not_dicom`` before
    anything DICOM-like); a cut exactly between two elements leaves a whole, shorter file."""
    data = ch.base_file(kind, ch.BASE_N[kind])
    f = tmp_path / "IM"
    f.write_bytes(data)
    assert read_header(f).reason is None
    px = ch.offsets(data)["PixelData"][0]
    cuts = list(range(1, px + 16)) + list(range(px + 16, len(data), 97)) + [len(data) - 1]
    between = _boundaries(data)
    first = 132 if kind != "nometa" else ch.offsets(data)["SOPClassUID"][0] + 8
    wrong = []
    for at in cuts:
        f.write_bytes(data[:at])
        got = read_header(f).reason
        if at < first:
            want = {"not_dicom"}
        elif at in between:
            want = {"no_pixel_data", "missing_sop_instance_uid", "truncated"}  # whole elements, none after
        else:
            want = {"truncated"}
        if got not in want:
            wrong.append((at, got))
    assert not wrong, f"{len(wrong)} of {len(cuts)} cuts misread, e.g. {wrong[:10]}"


def test_deflated_cut_anywhere_in_its_stream_is_truncated(tmp_path):
    import zlib

    data = ch.base_file("deflated", ch.BASE_N["deflated"])
    m = ch.meta_end(data)
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    z.decompress(data[m:])
    end = len(data) - len(z.unused_data)
    f = tmp_path / "IM"
    wrong = []
    for at in [*range(1, 132, 13), *range(132, m + 64), *range(m + 64, end - 8, 5), *range(end - 8, end)]:
        f.write_bytes(data[:at])
        got = read_header(f).reason
        if got != ("not_dicom" if at < 132 else "truncated"):
            wrong.append((at, got))
    assert not wrong, wrong[:10]


def _sweep_rows(tmp_path: Path, archive: Path) -> dict[str, dict]:
    with Store(tmp_path / "osteo.duckdb") as st:
        sweep(st, archive, run_id="r1", workers=1)
    return {Path(p).name: r for p, r in _rows(tmp_path / "osteo.duckdb").items()}


def test_duplicates_keep_the_intact_copy_and_the_next_one_when_it_fails(tmp_path):
    archive = tmp_path / "a"
    archive.mkdir()
    intact = ch.encode(ch.planted_dataset("HDRPAIR", 901))
    (archive / "a-damaged").write_bytes(ch._damage(intact, "study-uid"))  # first by path
    (archive / "b-intact").write_bytes(intact)
    rows = _sweep_rows(tmp_path, archive)
    assert rows["b-intact"]["status"] == "pending"
    assert (rows["a-damaged"]["status"], rows["a-damaged"]["reason"]) == ("duplicate", "duplicate_sop_instance_uid")
    assert (rows["b-intact"]["header_issues"], rows["a-damaged"]["header_issues"]) == (0, 1)

    from osteo_batch.archive.sweep import resolve_status

    with Store(tmp_path / "osteo.duckdb") as st:
        # rows swept before header_issues existed sort after every counted copy
        st.con.execute("UPDATE instances SET header_issues = NULL WHERE path LIKE '%b-intact'")
        resolve_status(st, None)
        assert {Path(p).name: s for p, s in st.con.execute("SELECT path, status FROM instances").fetchall()} == {
            "a-damaged": "pending", "b-intact": "duplicate"}
        st.con.execute("UPDATE instances SET header_issues = 0 WHERE path LIKE '%b-intact'")
        resolve_status(st, None)
        # the kept copy fails to decode: the other copy becomes the one to score
        st.con.execute("UPDATE instances SET decode_reason = 'pixel_decode_failed' WHERE path LIKE '%b-intact'")
        resolve_status(st, None)
        got = {Path(p).name: s for p, s in st.con.execute("SELECT path, status FROM instances").fetchall()}
    assert got == {"a-damaged": "pending", "b-intact": "duplicate"}


def test_header_issues_column_is_added_to_an_older_store(tmp_path):
    db = tmp_path / "osteo.duckdb"
    with Store(db) as st:
        st.con.execute("ALTER TABLE instances DROP COLUMN header_issues")
    with Store(db) as st:  # the schema upgrades in place, and again is a no-op
        pass
    with Store(db) as st:
        cols = [r[0] for r in st.con.execute("DESCRIBE instances").fetchall()]
    assert cols.count("header_issues") == 1


def test_silence_is_idempotent_and_workers_apply_it():
    import pydicom.config as config

    from osteo_batch.dicom.quiet import silence_pydicom
    from osteo_batch.workers import watch_parent

    config.settings.reading_validation_mode = config.WARN
    log = logging.getLogger("pydicom")
    log.setLevel(logging.WARNING)
    log.propagate = True
    watch_parent(os.getpid())  # what every header and decode worker runs first
    silence_pydicom()
    assert config.settings.reading_validation_mode == config.IGNORE
    assert not log.propagate and not log.isEnabledFor(logging.CRITICAL)
    # exactly one of our own (pytest attaches its handlers, a NullHandler subclass among them, to every
    # logger that does not propagate when its run starts, as pydicom's does once a collected module read a file)
    assert sum(type(h) is logging.NullHandler for h in log.handlers) == 1
    assert sum(1 for f in warnings.filters if "pydicom" in getattr(f[3], "pattern", "")) == 1


def test_a_cli_sweep_with_worker_processes_prints_no_planted_data(tmp_path):
    """>= 256 files, so the sweep reads them in a process pool; damaged values hold planted names."""
    archive = tmp_path / "archive"
    _write([*ch.RUNONS, *[c for c in ch.CASES if c.name.startswith(("hdr-flip-", "hdr-dup-"))]], archive,
           tmp_path / "outside")
    for i in range(300):  # spread damaged files over every worker's chunks
        if i % 12 == 0:
            data = ch._runon(f"hdr-cli-{i}", 500 + i, "SOPClassUID" if i % 24 else "SOPInstanceUID")
        else:
            data = ch.encode(ch.planted_dataset(f"HDRCLI{i}", 500 + i, rows=8, cols=8))
        (archive / f"cli-{i:03d}").write_bytes(data)
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # as a default interpreter shows warnings
    r = subprocess.run([sys.executable, "-m", "osteo_batch.cli", "sweep", "--archive", str(archive), "--workdir",
                        str(tmp_path / "work"), "--workers", "2"], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    printed = r.stdout + r.stderr
    assert MARKER not in printed, next(ln for ln in printed.splitlines() if MARKER in ln)[:300]
    rows = _rows(tmp_path / "work" / "osteo.duckdb")
    assert sum(1 for p, row in rows.items() if Path(p).name.startswith("cli-")
               and row["reason"] == "missing_sop_instance_uid") == 25
