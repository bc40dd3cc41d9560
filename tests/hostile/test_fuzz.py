"""A seeded fuzzer for the header reader and the pixel pipeline: mutants of valid files of every syntax.

Property, for every mutant:

- ``read_header(path)`` returns a :class:`HeaderResult` (clean fields, or a
  reason from the vocabulary), never raises;
- ``load_image(path, size)`` returns a ``size`` x ``size`` float32 image in
  [0, 1], or raises :class:`PixelError` with a reason from the vocabulary:
  never another exception, never a hang, never a jump in memory;
- nothing planted in the base files (names, IDs, accession numbers) is
  printed or logged.

The base files hold planted patient data and are stored natively (explicit
and implicit VR, big endian), deflated, and as JPEG 2000 (lossless, lossy,
multi-frame), HTJ2K-labelled JPEG 2000, JPEG baseline, JPEG lossless, JPEG-LS
and RLE. Each mutant is one to three edits: bit flips, interesting integers
(0, 0xFFFF, 0xFFFFFFFF, ...) written over 1, 2 or 4 bytes, insertions,
deletions, duplications, truncation and splices of two base files; edits
favour the first bytes and the bytes around Pixel Data, where the headers
that are parsed live. Mutants are made from a seed, so a failure is
reproduced by its seed and number; each failing mutant is also kept under
``/tmp/osteo-fuzz/``.

The mutants run in a child process (a crash in a C decoder must fail the test,
not kill pytest), each call under a time limit, and the parent restarts the
child past a mutant that crashed or hung. CI runs a few hundred mutants;
``-m fuzz`` runs many more (``OSTEO_FUZZ_N``, default 20000) and prints the
count and the time.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cases import MARKER, planted

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KEEP = Path("/tmp/osteo-fuzz")
SIZE = 24
CALL_LIMIT_S = 20.0  # one call (header or pixels) on one small mutant: far past any honest decode
STALL_S = 60.0  # the parent's watchdog, for C code that never returns to Python
MEMORY_MB = 1200  # peak resident memory of the child; the base files decode in a few tens of MB
MEMORY_EXIT = 3  # the child's exit status when it passed MEMORY_MB


# ------------------------------------------------------------------ base files


def write_bases(folder: Path) -> list[Path]:
    """Valid files of every syntax the pipeline reads, each with planted patient data."""
    import numpy as np
    from pydicom.uid import (JPEG2000, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, JPEG2000Lossless,
                             JPEGLSLossless, RLELossless)

    import cases_pixels as cp
    from dicom_factory import dataset, ramp, write

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []

    def save(ds, name: str, **kw) -> None:
        out.append(write(ds, folder / name, **kw))

    rows, cols = 40, 32
    px = ramp(rows, cols)
    save(planted(dataset(px, rows=rows, cols=cols, sop_instance_uid="2.25.70001"), "FZNATIVE"), "native")
    ds = planted(dataset(px, rows=rows, cols=cols, sop_instance_uid="2.25.70002", photometric="MONOCHROME1"), "FZIMPL")
    del ds.file_meta
    p = folder / "implicit"
    ds.save_as(p, implicit_vr=True, little_endian=True, enforce_file_format=False)
    out.append(p)
    ds = planted(dataset(px, rows=rows, cols=cols, sop_instance_uid="2.25.70003"), "FZBIG")
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    p = folder / "bigendian"
    ds.save_as(p, implicit_vr=False, little_endian=False, enforce_file_format=True)
    out.append(p)
    ds = planted(dataset(px, rows=rows, cols=cols, sop_instance_uid="2.25.70004"), "FZDEFL")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    save(ds, "deflated")
    for k, (syntax, kw) in enumerate([(JPEG2000Lossless, {}), (JPEG2000, {"j2k_cr": [8]}), (RLELossless, {})]):
        ds = planted(dataset(px, rows=rows, cols=cols, sop_instance_uid=f"2.25.7001{k}"), f"FZCOMP{k}")
        ds.compress(syntax, px, encoding_plugin="pylibjpeg", generate_instance_uid=False, **kw)
        save(ds, f"compressed-{k}")
    ds = planted(dataset(px, rows=rows, cols=cols, sop_instance_uid="2.25.70020"), "FZJLS")
    ds.compress(JPEGLSLossless, px, encoding_plugin="pyjpegls", generate_instance_uid=False)
    save(ds, "jpegls")
    ds, frame = cp.j2k("FZMULTI", "2.25.70021", rows=rows, cols=cols)
    cp.encapsulate_frames(ds, "1.2.840.10008.1.2.4.90", [frame, frame, frame])
    ds.NumberOfFrames = 3
    save(ds, "j2k-3-frames")
    ds, frame = cp.j2k("FZHT", "2.25.70022", rows=rows, cols=cols)
    cp.encapsulate_frames(ds, "1.2.840.10008.1.2.4.201", [frame])
    save(ds, "htj2k-labelled")
    ds, px8 = cp.grey_dataset("FZJPEG", "2.25.70023", bits=8, rows=rows, cols=cols)
    cp.encapsulate_frames(ds, "1.2.840.10008.1.2.4.50", [cp.pillow_jpeg(px8)])
    save(ds, "jpeg-baseline")
    try:
        frame, r, c, bits = cp.lossless_jpeg_frame()
    except AssertionError:  # pydicom-data missing: no lossless JPEG base
        pass
    else:
        ds, _ = cp.grey_dataset("FZJLL", "2.25.70024", bits=bits, rows=r, cols=c,
                                pixels=np.zeros((r, c), np.uint16))
        cp.encapsulate_frames(ds, "1.2.840.10008.1.2.4.70", [frame])
        save(ds, "jpeg-lossless")
    return out


# ------------------------------------------------------------------ mutations

INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFE, 0xFFFFFFFF]


def _hot(data: bytes) -> list[int]:
    """Offsets where the parsed headers live: the start, and around Pixel Data (and its first frame)."""
    spots = [0, 128]
    i = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010), little endian
    if i < 0:
        i = data.rfind(b"\x7f\xe0\x00\x10")
    if i >= 0:
        spots.append(i)
    return spots


def _pos(rng: random.Random, data: bytes) -> int:
    if not data:
        return 0
    if rng.random() < 0.7:
        return min(len(data) - 1, max(0, rng.choice(_hot(data)) + rng.randint(-64, 400)))
    return rng.randrange(len(data))


def mutate(rng: random.Random, base: bytes, other: bytes) -> bytes:
    """One to three edits of ``base`` (``other`` is a second base file, for splices)."""
    b = bytearray(base)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["flip", "flip", "int", "int", "insert", "delete", "duplicate", "truncate", "splice"])
        i = _pos(rng, b)
        if op == "flip" and b:
            for _ in range(rng.randint(1, 8)):
                j = min(len(b) - 1, i + rng.randint(0, 16))
                b[j] ^= 1 << rng.randrange(8)
        elif op == "int" and b:
            w = rng.choice([1, 2, 4])
            v = rng.choice(INTERESTING) & ((1 << (8 * w)) - 1)
            b[i : i + w] = v.to_bytes(w, rng.choice(["little", "big"]))
        elif op == "insert":
            b[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
        elif op == "delete":
            del b[i : i + rng.randint(1, 64)]
        elif op == "duplicate":
            n = rng.randint(1, 256)
            b[i:i] = b[i : i + n]
        elif op == "truncate":
            del b[i:]
        elif op == "splice" and other:
            b = b[:i] + bytearray(other[rng.randrange(len(other)) :])
    return bytes(b)


def mutant(seed: int, n: int, bases: list[bytes]) -> tuple[int, bytes]:
    """Mutant ``n`` of ``seed``: the same bytes on every call (for reproduction), with its base's index."""
    rng = random.Random(seed * 1_000_003 + n)
    k = rng.randrange(len(bases))
    return k, mutate(rng, bases[k], bases[rng.randrange(len(bases))])


# ------------------------------------------------------------------ the child


def _where(e: BaseException) -> str:
    """Type and innermost frame of an exception: no message (it could hold planted data)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    loc = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb is not None else "?"
    return f"{type(e).__name__} at {loc}"


def _worker(seed: str, start: str, stop: str, bases_dir: str, work: str) -> None:
    """Run mutants ``start``..``stop`` - 1; one JSON line per violation, progress in ``work``/progress."""
    import logging
    import resource
    import warnings

    import numpy as np

    # address space, not memory: pydicom asks Python for a value's claimed length before reading it
    # (up to 4 GiB, never touched when the file is shorter); resident memory is checked below
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    from osteo_batch.dicom.headers import HeaderResult, read_header
    from osteo_batch.dicom.pixels import load_image
    from osteo_batch.dicom.rejections import PixelError
    from osteo_batch.reasons import Reason
    from osteo_batch.timeouts import ItemTimeout, time_limit

    codes = {r.value for r in Reason}
    logged: list = []

    class Keep(logging.Handler):
        def emit(self, record):
            logged.append(record.levelno)

    logging.getLogger("pydicom").addHandler(Keep(logging.DEBUG))
    logging.getLogger("pydicom").setLevel(logging.WARNING)
    bases = [p.read_bytes() for p in sorted(Path(bases_dir).iterdir())]
    w = Path(work)
    target = w / "mutant.dcm"
    progress = w / "progress"
    with open(w / "violations.jsonl", "a") as out:
        def bad(n: int, what: str) -> None:
            out.write(json.dumps({"n": n, "what": what}) + "\n")
            out.flush()

        for n in range(int(start), int(stop)):
            progress.write_text(str(n))
            _k, data = mutant(int(seed), n, bases)
            target.write_bytes(data)
            try:
                with time_limit(CALL_LIMIT_S):
                    h = read_header(str(target))
                if not isinstance(h, HeaderResult) or (h.reason is not None and h.reason not in codes):
                    bad(n, f"read_header returned {type(h).__name__} / reason {h.reason!r}")
                elif h.reason == "unreadable":  # the mutant is a readable file: damage is not an I/O error
                    bad(n, "read_header called a damaged file unreadable (retried every night)")
            except ItemTimeout:
                bad(n, "read_header hung")
            except BaseException as e:  # noqa: BLE001 (the property: nothing escapes)
                bad(n, f"read_header raised {_where(e)}")
            try:
                with time_limit(CALL_LIMIT_S), warnings.catch_warnings(record=True) as warned:
                    warnings.simplefilter("always")
                    logged.clear()
                    img = load_image(str(target), SIZE)
                if warned or logged:  # pydicom words some with the offending value: none may reach the night's log
                    bad(n, f"load_image let {len(warned)} warnings and {len(logged)} log records through")
                if not (isinstance(img, np.ndarray) and img.shape == (SIZE, SIZE) and img.dtype == np.float32
                        and np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1):
                    bad(n, "load_image returned an image of the wrong shape, type or range")
            except PixelError as e:
                if warned or logged:
                    bad(n, f"load_image let {len(warned)} warnings and {len(logged)} log records through")
                if e.reason not in codes:
                    bad(n, f"PixelError with unknown reason {e.reason!r}")
                if e.reason == "unreadable":
                    bad(n, "load_image called a damaged file unreadable (retried every night)")
                if "out of memory" in e.detail:
                    bad(n, "load_image ran out of memory (a bomb got through)")
            except ItemTimeout:
                bad(n, "load_image hung")
            except BaseException as e:  # noqa: BLE001
                bad(n, f"load_image raised {_where(e)}")
            peak = peak_mb()
            if peak > MEMORY_MB:
                bad(n, f"peak memory {peak} MB")
                sys.exit(MEMORY_EXIT)  # the fuzzing stops here: every later mutant would share the peak
    progress.write_text(str(int(stop)))


def peak_mb() -> int:
    """Peak resident memory of this process since it started, in MB.

    ``VmHWM`` belongs to the process's own address space; ``ru_maxrss`` is
    carried across ``execve`` from the parent (pytest, perhaps after training
    a model), so a fresh child would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


# ------------------------------------------------------------------ the parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _child(seed: int, start: int, stop: int, bases_dir: Path, work: Path, printed: list[str]) -> tuple[int, str]:
    """Run mutants ``start``..``stop`` - 1 in a child; returns where it stopped and why it died ("" if it did not)."""
    progress = work / "progress"
    progress.write_text(str(start))
    code = "import sys, test_fuzz as t; t._worker(*sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(seed), str(start), str(stop), str(bases_dir), str(work)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def at() -> int:
        try:
            return int(progress.read_text())
        except ValueError:  # read while the child rewrites it
            return -1

    last, since, hung = start, time.monotonic(), False
    while proc.poll() is None:  # a watchdog: the same mutant for STALL_S means C code that never returns
        try:
            out, err = proc.communicate(timeout=0.5)
            printed.append(out + err)
            break
        except subprocess.TimeoutExpired:
            pass
        now = at()
        if now not in (-1, last):
            last, since = now, time.monotonic()
        elif time.monotonic() - since > STALL_S:
            proc.kill()
            hung = True
            out, err = proc.communicate()
            printed.append(out + err)
    done = max(at(), start)
    if hung:
        return done, f"no progress for {STALL_S:g} s: killed"
    if proc.returncode != 0 or done < stop:
        return done, (f"killed by signal {-proc.returncode}" if proc.returncode and proc.returncode < 0
                      else f"exit {proc.returncode}")
    return done, ""


def fuzz(tmp: Path, seed: int, count: int) -> tuple[list[dict], str, float]:
    """Run ``count`` mutants; returns violations, everything the children printed, and seconds."""
    bases_dir = tmp / "bases"
    write_bases(bases_dir)
    bases = [p.read_bytes() for p in sorted(bases_dir.iterdir())]
    work = tmp / "work"
    work.mkdir()
    violations: list[dict] = []
    printed: list[str] = []
    t0 = time.monotonic()
    n = 0
    while n < count:
        done, why = _child(seed, n, count, bases_dir, work, printed)
        if why == f"exit {MEMORY_EXIT}":  # recorded by the child; nothing after it would be measured
            break
        if why:
            # the same mutant alone, in a fresh child: a death it does not reproduce came from outside
            # (the machine's OOM killer under other load), and is reported but not counted
            again, why_again = _child(seed, done, done + 1, bases_dir, work, printed)
            if why_again:
                violations.append({"n": done, "what": f"child died on this mutant ({why_again})"})
            else:
                print(f"fuzz: the child died at mutant {done} ({why}) but not when it ran alone")
            done += 1
        n = done
    for line in (work / "violations.jsonl").read_text().splitlines() if (work / "violations.jsonl").exists() else []:
        violations.append(json.loads(line))
    if violations:
        KEEP.mkdir(exist_ok=True)
        for v in violations:
            k, data = mutant(seed, v["n"], bases)
            v["base"] = sorted(bases_dir.iterdir())[k].name
            v["file"] = str(KEEP / f"seed{seed}-mutant{v['n']}.dcm")
            Path(v["file"]).write_bytes(data)
    return violations, "".join(printed), time.monotonic() - t0


def _check(violations: list[dict], printed: str, count: int, seconds: float) -> None:
    print(f"\nfuzz: {count} mutants in {seconds:.1f} s ({count / seconds:.0f}/s), {len(violations)} violations")
    for v in violations[:30]:
        print(f"  mutant {v['n']} of {v['base']}: {v['what']}  ({v['file']})")
    assert MARKER not in printed, "planted patient data was printed or logged"
    assert not violations, f"{len(violations)} mutants broke the property; see above and {KEEP}"


def test_mutants_of_every_syntax_get_a_result_or_a_reason(tmp_path):
    count = 1500
    violations, printed, seconds = fuzz(tmp_path, seed=11, count=count)
    _check(violations, printed, count, seconds)


@pytest.mark.fuzz
def test_many_mutants(tmp_path, request):
    if "fuzz" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the long fuzzing run: select it with -m fuzz")
    count = int(os.environ.get("OSTEO_FUZZ_N", "20000"))
    seed = int(os.environ.get("OSTEO_FUZZ_SEED", "12"))
    violations, printed, seconds = fuzz(tmp_path, seed=seed, count=count)
    _check(violations, printed, count, seconds)
