"""benchmarks/decode_profile.py runs end to end on a small archive-profile set and reports what the issue asks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_profile.py"
    spec = importlib.util.spec_from_file_location("bench_decode_profile", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its writer processes find their function by module name
    spec.loader.exec_module(mod)
    return mod


def test_the_profile_keeps_the_archive_mix():
    plans = _bench().plan_set(20, seed=3)
    kinds = [p["kind"] for p in plans]
    assert (kinds.count("j2k"), kinds.count("native"), kinds.count("rle")) == (14, 4, 2)
    assert all(2500 <= p["rows"] <= 3000 and 2048 <= p["cols"] <= 2500 for p in plans)


def test_the_profile_reports_before_and_after_per_syntax_and_step(tmp_path, capsys):
    import json

    bench = _bench()
    res = bench.main(["--images", "10", "--repeats", "1", "--sides", "260", "300", "--size", "64",
                      "--cache", str(tmp_path)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(res))
    assert res["max_abs_diff_before_after"] == 0.0, "before and after give the model the same input"
    for which in ("before", "after"):
        assert set(res[which]["by_syntax"]) == {"j2k", "native", "rle"}
        for kind in ("j2k", "native", "rle"):
            ms = res[which]["by_syntax"][kind]["ms"]
            assert set(bench.STEPS) <= set(ms) and ms["decode"] > 0 and res[which]["by_syntax"][kind]["ips_per_core"] > 0
    assert {"pillow", "glymur", "openjpeg_full", "gpu_usable"} <= set(res["j2k_readers_ms"])
    assert res["after"]["by_syntax"]["j2k"]["ms"]["block_mean"] == 0.0
