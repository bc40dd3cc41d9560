"""Every numeric, boolean and text setting is checked once, with its range, wherever it comes from.

A config file's ``[run] threshold = nan`` used to list every patient (DuckDB
and Python compare NaN differently) and ``2.0`` listed nobody; ``batch_size =
2.7`` and ``compile = "no"`` were taken as ``int(2.7)`` and ``bool("no")``.
Each bad value must now stop the run before it starts, in one line that names
the file, the table, the key, the value and what is allowed; the same for the
command line's flags, which reach :func:`load_settings` as typed overrides.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from osteo_batch import pipeline
from osteo_batch.pipeline import SettingsError

# key -> (table, kind, valid TOML values, what the message must say is allowed)
KEYS = {
    "batch_size": ("run", "int1", ["1", "64"], "whole number >= 1"),
    "threads": ("run", "int1", ["1", "16"], "whole number >= 1"),
    "commit_every": ("run", "int1", ["1", "4096"], "whole number >= 1"),
    "workers": ("run", "int0", ["0", "4"], "whole number >= 0"),
    "shards": ("run", "int0", ["0", "2"], "whole number >= 0"),
    "threshold": ("run", "prob", ["0.5", "0.001", "0.999"], "> 0 and < 1"),
    "store_wait_s": ("run", "secs", ["0", "0.5", "60"], ">= 0"),
    "dxa_lookback_days": ("run", "int0", ["0", "730"], "whole number >= 0"),
    "compile": ("run", "bool", ["true", "false"], "true or false"),
    "device": ("run", "str", ['"cpu"'], "text"),
    "precision": ("run", "choice", ['"auto"', '"fp32"', '"bf16"'], "auto"),
    **{k: ("worklist", "int0", ["0", "365"], "whole number >= 0")
       for k in ("dxa_lookback_days", "dxa_lookback_days_near", "referred_days", "declined_days",
                 "unreachable_days", "dxa_done_days")},
}
# dxa_lookback_days is in both tables; test the [worklist] one under its own id
CASES_KEYS = [("run", k) for k, v in KEYS.items() if v[0] == "run"] + [
    ("worklist", k) for k in ("dxa_lookback_days", "dxa_lookback_days_near", "referred_days", "declined_days",
                              "unreachable_days", "dxa_done_days")]

BAD = {  # name -> TOML literal; which of them is bad depends on the key's kind
    "nan": "nan", "inf": "inf", "-inf": "-inf", "negative": "-1", "negative-float": "-0.5", "zero": "0",
    "out-of-range": "2.0", "one": "1", "float-for-int": "2.7", "whole-float-for-int": "2.0",
    "string": '"4"', "word": '"no"', "bool": "true", "array": "[1]",
}
BAD_FOR = {
    "int1": ["nan", "inf", "-inf", "negative", "negative-float", "zero", "float-for-int", "whole-float-for-int",
             "string", "word", "bool", "array"],
    "int0": ["nan", "inf", "-inf", "negative", "negative-float", "float-for-int", "whole-float-for-int",
             "string", "word", "bool", "array"],
    "prob": ["nan", "inf", "-inf", "negative", "negative-float", "zero", "out-of-range", "one", "string", "word",
             "bool", "array"],
    "secs": ["nan", "inf", "-inf", "negative", "negative-float", "string", "word", "bool", "array"],
    "bool": ["nan", "inf", "negative", "zero", "one", "float-for-int", "string", "word", "array"],
    "str": ["nan", "negative", "zero", "bool", "array"],
    "choice": ["nan", "zero", "bool", "string", "word", '"fp16"'],
}
MATRIX = [(t, k, b) for t, k in CASES_KEYS for b in BAD_FOR[KEYS[k][1]]]


def _write(tmp_path, table, key, literal):
    cfg = tmp_path / "night.toml"
    cfg.write_text(f"[{table}]\n{key} = {literal}\n")
    return cfg


@pytest.mark.parametrize("table,key,bad", MATRIX, ids=[f"{t}.{k}={b}" for t, k, b in MATRIX])
def test_a_bad_value_in_the_config_file_is_one_line_naming_file_key_value_and_range(tmp_path, table, key, bad):
    literal = BAD.get(bad, bad)
    cfg = _write(tmp_path, table, key, literal)
    with pytest.raises(SettingsError) as e:
        pipeline.load_settings(cfg, workdir=tmp_path / "w")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"config file night.toml: [{table}] {key} = "), msg
    assert "must be" in msg and KEYS[key][3] in msg, msg


@pytest.mark.parametrize("table,key", CASES_KEYS, ids=[f"{t}.{k}" for t, k in CASES_KEYS])
def test_good_values_in_the_config_file_are_taken_as_written(tmp_path, table, key):
    for literal in KEYS[key][2]:
        s = pipeline.load_settings(_write(tmp_path, table, key, literal), workdir=tmp_path / "w")
        got = getattr(s, key)
        if KEYS[key][1] in ("int0", "int1"):
            assert type(got) is int and got == int(literal)
        elif KEYS[key][1] == "bool":
            assert got is (literal == "true")
        elif KEYS[key][1] in ("prob", "secs"):
            assert got == float(literal)
        else:
            assert got == literal.strip('"')


def test_an_unset_threshold_and_batch_size_mean_the_models_and_the_devices(tmp_path):
    s = pipeline.load_settings(None, workdir=tmp_path)
    assert s.threshold is None and s.batch_size is None


# ---------------------------------------------------------------- overrides (what the CLI passes)

OVERRIDES = [
    ("workers", -1), ("workers", 1.5), ("workers", True), ("workers", "2"),
    ("batch_size", 0), ("batch_size", -3), ("batch_size", 2.7), ("batch_size", float("nan")),
    ("shards", -1), ("commit_every", 0), ("threshold", float("nan")), ("threshold", 1.0),
    ("threshold", -0.1), ("threshold", float("inf")), ("store_wait_s", float("inf")), ("store_wait_s", -1.0),
    ("compile", "no"), ("compile", 1), ("dxa_lookback_days", -1), ("precision", "fp16"),
    ("threads", 0), ("threads", 1.5), ("threads", "2"),
]


@pytest.mark.parametrize("key,value", OVERRIDES, ids=[f"{k}={v!r}" for k, v in OVERRIDES])
def test_a_bad_override_is_one_line_naming_key_value_and_range(tmp_path, key, value):
    with pytest.raises(SettingsError) as e:
        pipeline.load_settings(None, workdir=tmp_path, **{key: value})
    msg = str(e.value)
    assert "\n" not in msg and key in msg and "must be" in msg, msg


def test_the_worklist_flag_may_say_zero_to_list_every_scored_patient(tmp_path):
    """``worklist --threshold 0`` lists every scored patient; a config file's threshold may not be 0."""
    assert pipeline.load_settings(None, workdir=tmp_path, threshold=0.0).threshold == 0.0
    with pytest.raises(SettingsError, match=r"\[run\] threshold = 0 must be a number > 0 and < 1"):
        pipeline.load_settings(_write(tmp_path, "run", "threshold", "0"), workdir=tmp_path)


def test_settings_built_directly_or_from_json_are_checked_too(tmp_path):
    with pytest.raises(SettingsError, match="workers"):
        pipeline.Settings(workdir=tmp_path, workers=-2)
    s = pipeline.load_settings(None, workdir=tmp_path, batch_size=8, threshold=0.3, store_wait_s=5)
    assert pipeline.Settings.from_json(s.to_json()) == s
    with pytest.raises(SettingsError, match="batch_size"):
        pipeline.Settings.from_json({**s.to_json(), "batch_size": 0})


def test_a_long_or_hostile_string_value_is_shown_short_and_clean(tmp_path):
    cfg = tmp_path / "night.toml"
    cfg.write_text('[run]\nworkers = "\\u001b[2J' + "x" * 500 + '"\n')
    with pytest.raises(SettingsError) as e:
        pipeline.load_settings(cfg, workdir=tmp_path)
    msg = str(e.value)
    assert "\x1b" not in msg and len(msg) < 200, msg


# ---------------------------------------------------------------- through the command line

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "osteo_batch.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _one_line(p):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.match(r"osteo-batch( \w+)?: error: ", lines[0]), p.stderr
    return lines[0]


CLI_FILE = [("run", "threshold", "nan"), ("run", "threshold", "2.0"), ("run", "batch_size", "2.7"),
            ("run", "compile", '"no"'), ("run", "store_wait_s", "inf"), ("run", "workers", "-1"),
            ("run", "shards", "true"), ("worklist", "referred_days", "-5")]


@pytest.mark.parametrize("command", ["sweep", "run", "worklist"])
def test_the_cli_refuses_a_bad_config_file_in_one_line(tmp_path, command):
    archive = tmp_path / "archive"
    archive.mkdir()
    for table, key, literal in CLI_FILE:
        cfg = _write(tmp_path, table, key, literal)
        extra = ["--archive", archive] if command in ("sweep", "run") else []
        line = _one_line(_cli(command, *extra, "--workdir", tmp_path / "w", "--config", cfg))
        assert f"[{table}] {key} = " in line and "must be" in line and "night.toml" in line, line
    assert not (tmp_path / "w" / "osteo.duckdb").exists()  # nothing started


@pytest.mark.parametrize("command,flags", [
    ("sweep", ["--workers", "-1"]), ("run", ["--workers", "-1"]), ("run", ["--batch-size", "0"]),
    ("run", ["--batch-size", "-4"]), ("run", ["--shards", "-2"]), ("worklist", ["--threshold", "1"]),
])
def test_the_cli_refuses_a_bad_flag_in_one_line(tmp_path, command, flags):
    archive = tmp_path / "archive"
    archive.mkdir()
    extra = ["--archive", archive] if command in ("sweep", "run") else []
    line = _one_line(_cli(command, *extra, "--workdir", tmp_path / "w", *flags))
    assert "must be" in line and flags[0].lstrip("-").replace("-", "_") in line, line


def _cli_here(capsys, *args):
    """``osteo-batch ARGS`` in this process (the same ``main`` as the console script, without an interpreter start)."""
    import types

    from osteo_batch.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return types.SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)


def test_the_cli_refuses_every_bad_config_value(tmp_path, capsys):
    """The whole matrix through ``osteo-batch sweep`` (in this process: the subprocess runs above cover the start)."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for table, key, bad in MATRIX:
        cfg = _write(tmp_path, table, key, BAD.get(bad, bad))
        line = _one_line(_cli_here(capsys, "sweep", "--archive", archive, "--workdir", tmp_path / "w", "--config", cfg))
        assert f"[{table}] {key} = " in line and KEYS[key][3] in line, (table, key, bad, line)
