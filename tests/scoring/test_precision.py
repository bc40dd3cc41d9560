"""The shard's precision: bf16 only where the CPU runs it natively, measured faster, and within 0.005 of fp32.

The detection is checked against /proc/cpuinfo and, through the environment
torch and oneDNN read at start-up, against an AVX2-only CPU emulated here; the
rule is checked on given figures; the drift on trained models' real scores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osteo_batch.scoring.precision import (BF16_MAX_DRIFT, Measured, choose_precision, cpu_capability, decide,
                                           measure, native_bf16, precision_line)

#: how torch and oneDNN are told to behave as on an AVX2-only CPU (read when torch is imported)
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    return set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())


def _capped_here() -> bool:
    return any(k in os.environ for k in AVX2_ONLY)


def _native_reason() -> str:
    return "" if native_bf16() else f"this CPU ({cpu_capability()}) has no native bf16: bf16 would be emulated"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo to compare with")
@pytest.mark.skipif(_capped_here(), reason="torch or oneDNN capped by the environment")
def test_native_bf16_agrees_with_the_cpu_flags():
    flags = _cpu_flags()
    assert native_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)
    cap = cpu_capability()
    assert ("AMX_BF16" in cap) == ("amx_bf16" in flags) and ("AVX512_BF16" in cap) == ("avx512_bf16" in flags)


def test_an_avx2_only_cpu_keeps_fp32_without_measuring():
    """torch and oneDNN held to AVX2, as on the EPYC where bf16 ran 4x slower: fp32, and nothing timed."""
    code = (
        "import json\n"
        "from osteo_batch.scoring.precision import choose_precision, cpu_capability, native_bf16\n"
        "def boom():\n    raise AssertionError('measured')\n"
        "c = choose_precision('auto', 'cpu', measure_fn=boom)\n"
        "print(json.dumps([native_bf16(), cpu_capability(), c.precision, c.reason]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **AVX2_ONLY}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    native, cap, precision, reason = json.loads(out.stdout.strip().splitlines()[-1])
    assert (native, cap, precision, reason) == (False, "AVX2", "fp32", "bf16 emulated on AVX2: fp32")


def test_not_native_means_fp32_and_no_measurement():
    calls = []
    c = choose_precision("auto", "cpu", native=False, measure_fn=lambda: calls.append(1))
    assert c.precision == "fp32" and "emulated" in c.reason and calls == []
    assert (c.fp32_ips, c.bf16_ips, c.drift) == (None, None, None)


def test_the_rule_takes_the_faster_within_the_drift():
    assert decide(1.3, 2.8, 0.0003, True).precision == "bf16"
    assert decide(0.61, 0.14, 9e-5, True).precision == "fp32", "measured slower: fp32"
    assert decide(1.0, 1.0, 0.0, True).precision == "fp32", "no faster: fp32"
    assert decide(1.3, 2.8, 0.0003, False).precision == "fp32", "not native: fp32 whatever was measured"
    refused = decide(1.3, 2.8, BF16_MAX_DRIFT * 1.01, True)
    assert refused.precision == "fp32" and "drift" in refused.reason and refused.bf16_ips == 2.8
    assert decide(1.3, 2.8, BF16_MAX_DRIFT, True).precision == "bf16", "the bound itself is allowed"
    assert decide(1.3, 2.8, math.nan, True).precision == "fp32", "a drift that is no number refuses bf16"


def test_choose_precision_follows_the_measurement_and_obeys_what_is_asked(caplog):
    fast = Measured(fp32_ips=1.3, bf16_ips=2.6, drift=0.0004, images=1, rounds=3)
    c = choose_precision("auto", "cpu", native=True, measure_fn=lambda: fast)
    assert (c.precision, c.fp32_ips, c.bf16_ips, c.drift) == ("bf16", 1.3, 2.6, 0.0004)
    drifting = Measured(1.3, 2.6, 0.02, 1, 3)
    assert choose_precision("auto", "cpu", native=True, measure_fn=lambda: drifting).precision == "fp32"
    assert choose_precision("auto", "cuda", native=False, measure_fn=None).precision == "bf16"
    assert choose_precision("fp32", "cpu", native=True, measure_fn=lambda: fast).precision == "fp32"
    with caplog.at_level(logging.WARNING, logger="osteo_batch.scoring.precision"):
        assert choose_precision("bf16", "cpu", native=False).precision == "bf16"
    assert sum("emulated" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ValueError):
        choose_precision("fp16", "cpu")


def test_measure_times_both_interleaved_and_finds_the_faster():
    import torch

    order = []

    def pass_of(name: str, seconds: float, shift: float):
        def run(x):
            order.append((name, len(x)))
            time.sleep(seconds)
            return torch.full((len(x),), 0.5 + shift)
        return run

    x = torch.zeros(3, 1, 8, 8)
    m = measure(pass_of("fp32", 0.03, 0.0), pass_of("bf16", 0.01, 0.001), x, batch=4, budget_s=0.2)
    assert m.bf16_ips > m.fp32_ips and m.rounds >= 3 and m.drift == pytest.approx(0.001, abs=1e-6)
    assert m.images == 4, "a short first batch is repeated to the shard's batch size"
    timed = [n for n, k in order if k == m.images]
    assert timed[2:4] == ["fp32", "bf16"] and timed[4:6] == ["bf16", "fp32"], "interleaved, alternating first"
    assert decide(m.fp32_ips, m.bf16_ips, m.drift, True).precision == "bf16"


def test_the_summary_line_says_what_each_shard_chose():
    shard = {"shard": 0, "precision": "bf16", "precision_reason": "native bf16", "precision_fp32_ips": 1.0,
             "precision_bf16_ips": 2.1, "precision_drift": 0.0003}
    assert precision_line([shard]) == "bf16 (measured bf16 2.10x fp32, drift 0.0003)"
    other = {"shard": 1, "precision": "fp32", "precision_reason": "asked for fp32"}
    assert precision_line([shard, other]) == ("shard 1: bf16 (measured bf16 2.10x fp32, drift 0.0003); "
                                              "shard 2: fp32 (asked for fp32)")
    assert precision_line([{"shard": 0, "scored": 3}]) is None, "older summaries recorded no precision"


def _items(cohort_dir):
    from osteo_batch.scoring.tensors import Item

    return [Item(str(cohort_dir.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort_dir.plans]


def test_a_shard_records_its_precision_and_threads(tmp_path, cohort_dir, tiny_model):
    import torch

    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.score import ScoreOptions, score_shard

    model = load_model_dir(tiny_model.model_dir)
    items = _items(cohort_dir)[:6]
    before = torch.get_num_threads()
    auto = score_shard(model, items, out_dir=tmp_path / "a", run_id="a", opts=ScoreOptions(batch_size=4, workers=1))
    assert torch.get_num_threads() == before, "the scoring threads are given back"
    c = auto.counts()
    assert auto.precision in ("fp32", "bf16") and c["precision"] == auto.precision == auto.choice.precision
    if native_bf16():  # measured: the figures it chose by travel with the counts
        assert c["precision_fp32_ips"] > 0 and c["precision_bf16_ips"] > 0 and c["precision_drift"] <= 0.02
    else:
        assert auto.precision == "fp32" and "emulated" in c["precision_reason"]
    json.dumps(c)  # the counts stay JSON-able (a Prefect result, the run summary)
    asked = score_shard(model, items, out_dir=tmp_path / "b", run_id="b",
                        opts=ScoreOptions(batch_size=4, workers=1, precision="fp32", threads=1))
    assert asked.precision == "fp32" and asked.counts()["precision_reason"] == "asked for fp32"
    assert asked.threads == 1 and torch.get_num_threads() == before


def _drift(model, cohort_dir) -> tuple[float, float]:
    """Max |bf16 - fp32| over the cohort's decodable images, scored as the run scores them (calibrated),
    and the spread of the fp32 scores (a drift over scores that barely vary would prove little)."""
    import torch

    from osteo_batch.scoring.forward import Forward
    from osteo_batch.scoring.score import ScoreOptions
    from osteo_batch.scoring.tensors import DicomDataset, make_loader

    xs = [x for idx, x, _ in make_loader(DicomDataset(_items(cohort_dir), model.config.img_size),
                                          batch_size=16, workers=0) if len(idx)]
    f32, b16 = (Forward(model, ScoreOptions(precision=p)) for p in ("fp32", "bf16"))
    with torch.inference_mode():
        a = [s for x in xs for s in f32(x)]
        b = [s for x in xs for s in b16(x)]
    assert len(a) > 40 and b16.precision == "bf16" and f32.precision == "fp32"
    return max(abs(p - q) for p, q in zip(a, b)), max(a) - min(a)


@pytest.mark.skipif(not native_bf16(), reason=_native_reason() or "native bf16")
def test_bf16_scores_stay_within_the_bound_on_the_trained_tiny_model(cohort_dir, tiny_model):
    from osteo_batch.models.model import load_model_dir

    drift, _ = _drift(load_model_dir(tiny_model.model_dir), cohort_dir)
    assert drift <= BF16_MAX_DRIFT


@pytest.fixture(scope="module")
def demo_like_model(cohort_dir, tmp_path_factory):
    """The demo's recipe on the small cohort: LoRA from the phantom foundation (too few women here to calibrate)."""
    from osteo_batch import pipeline
    from osteo_batch.foundations import PHANTOM
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.models.train import TrainConfig, train

    work = tmp_path_factory.mktemp("demo-like")
    s = pipeline.load_settings(None, workdir=work, archive=cohort_dir.archive, dxa_csv=cohort_dir.dxa_csv)
    pipeline.load_dxa_stage(pipeline.RunContext.for_index(s, "t"))
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "t"))
    cfg = TrainConfig(backbone="dinov2_tiny_demo", weights=str(PHANTOM), strategy="lora", epochs=1, workers=0,
                      seed=0, val_fraction=0.5, masks=str(cohort_dir.masks))
    with pipeline.open_store(s, read_only=True) as st:
        res = train(st, work / "m", cfg, truth_csv=cohort_dir.truth_csv)
    return load_model_dir(res.model_dir)


@pytest.mark.skipif(not native_bf16(), reason=_native_reason() or "native bf16")
def test_bf16_scores_stay_within_the_bound_on_the_demo_recipe(cohort_dir, demo_like_model):
    drift, spread = _drift(demo_like_model, cohort_dir)
    print(f"demo recipe: drift {drift:.5f} over scores spread {spread:.3f}")
    assert spread > 0.05 and drift <= BF16_MAX_DRIFT


def test_the_run_summary_and_page_say_which_precision_scored(tmp_path):
    from osteo_batch.run.summary import summary_markdown, write_run_page

    shard = {"shard": 0, "n_shards": 1, "scored": 5, "precision": "bf16", "precision_reason": "native bf16",
             "precision_fp32_ips": 1.3, "precision_bf16_ips": 2.73, "precision_drift": 0.0004}
    summary = {"run_id": "r1", "model_id": "m", "threshold": 0.5, "score": {"scored": 5, "shards": [shard]}}
    md = summary_markdown(summary)
    assert "- scored in bf16 (measured bf16 2.10x fp32, drift 0.0004)" in md.splitlines()
    page = write_run_page(tmp_path, summary).read_text()
    assert '<span id="precision">bf16 (measured bf16 2.10x fp32, drift 0.0004)</span>' in page
    old = {"run_id": "r0", "model_id": "m", "threshold": 0.5, "score": {"scored": 5, "shards": [{"shard": 0}]}}
    assert "scored in" not in summary_markdown(old) and 'id="precision"' not in write_run_page(tmp_path, old).read_text()


def test_a_bf16_score_does_not_depend_on_the_images_batched_with_it(tmp_path):
    """bf16 rounding depends on the shape the kernels run at: every chunk runs at the batch size.

    The demo backbone with random weights (seeded) shows the shape's effect; a trained one may not.
    """
    import torch

    from osteo_batch.models.model import ModelConfig, build_module, load_model_dir, save_model_dir
    from osteo_batch.scoring.forward import Forward
    from osteo_batch.scoring.score import ScoreOptions

    torch.manual_seed(0)
    cfg = ModelConfig.for_backbone("dinov2_tiny_demo")
    save_model_dir(build_module(cfg), cfg, tmp_path / "m")
    model = load_model_dir(tmp_path / "m")
    x = torch.rand(16, 1, cfg.img_size, cfg.img_size)
    fwd = Forward(model, ScoreOptions(precision="bf16", batch_size=16))
    with torch.inference_mode():
        whole = fwd(x)
        alone = [fwd(x[i : i + 1])[0] for i in range(16)]
        middle = fwd(x[5:9])
        unpadded = [float(fwd._scores(x[i : i + 1], True)[0]) for i in range(16)]
    assert alone == whole and middle == whole[5:9], "bit for bit, whatever else is in the batch"
    assert unpadded != whole, "unpadded, the shape moves the score (what the padding is for)"
    assert max(abs(a - b) for a, b in zip(unpadded, whole)) < BF16_MAX_DRIFT
