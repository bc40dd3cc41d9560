"""The phantom foundation: shipped, hashed, self-supervised, and loaded like any timm checkpoint."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from osteo_batch.foundations import PHANTOM
from osteo_batch.models.digest import sha256_file

ROOT = Path(__file__).resolve().parents[2]


def test_manifest_matches_the_shipped_file():
    m = json.loads((PHANTOM / "manifest.json").read_text())
    assert m["sha256"] == sha256_file(PHANTOM / "model.safetensors")
    assert m["clinical_use"] is False and "not for patients" in m["intended_use"].lower()
    assert m["backbone"] == "dinov2_tiny_demo" and m["preprocessing"]["input_size"] == 168
    r = m["recipe"]
    for k in ("cohort_seed", "images", "resolution", "machine", "wall_seconds"):
        assert r[k], k
    assert r["pretrain"]["epochs"] >= 1 and r["labels_used"].startswith("none")
    assert (PHANTOM / "model.safetensors").stat().st_size < 40e6
    timm_cfg = json.loads((PHANTOM / "config.json").read_text())
    assert timm_cfg["architecture"] == m["architecture"]["timm_arch"]


def test_its_cohort_seed_is_drawn_by_no_other_cohort():
    """Pretraining phantoms share no seed (cohort or image) with the demo, history, study or tests."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from pretrain_foundation import PRETRAIN_SEED

    from osteo_batch import study
    from osteo_batch.synth import demo
    from osteo_batch.synth import plan as synth
    from dicom_factory import small_spec

    m = json.loads((PHANTOM / "manifest.json").read_text())
    assert m["recipe"]["cohort_seed"] == PRETRAIN_SEED
    others = [synth.CohortSpec(), demo.history_spec(), study.demo_spec(), small_spec()]
    assert PRETRAIN_SEED not in {s.seed for s in others}
    pre = synth.CohortSpec(n_women=400, n_men=50, n_young=50, n_followups=0, seed=PRETRAIN_SEED)
    pre_seeds = {p.seed for p in synth.plan_cohort(pre)[0]}
    for s in others:
        assert not pre_seeds & {p.seed for p in synth.plan_cohort(s)[0]}


def test_weights_load_through_the_registry_and_give_other_features_than_random():
    import torch

    from osteo_batch.models.backbones import load_backbone_weights
    from osteo_batch.models.model import ModelConfig, build_module, normalise

    cfg = ModelConfig.for_backbone("dinov2_tiny_demo")
    a, b = build_module(cfg), build_module(cfg)
    info = load_backbone_weights(a, PHANTOM)
    assert info["foundation"]["name"] == "phantom_dinov2_tiny" and info["foundation"]["clinical_use"] is False
    x = normalise(torch.rand(2, 1, 168, 168), cfg)
    with torch.inference_mode():
        fa, fb = a.forward_features(x), b.forward_features(x)
    assert not torch.allclose(fa, fb)


def test_a_changed_file_is_refused_with_one_line(tmp_path, cohort_dir):
    bad = tmp_path / "foundation"
    shutil.copytree(PHANTOM, bad)
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(raw))
    r = subprocess.run([sys.executable, "-m", "osteo_batch.cli", "train", "--archive", str(cohort_dir.archive),
                        "--dxa", str(cohort_dir.dxa_csv), "--out", str(tmp_path / "m"), "--workdir", str(tmp_path / "w"),
                        "--weights", str(bad), "--epochs", "1", "--workers", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if "error" in x]
    assert len(lines) == 1 and "does not match manifest.json" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_model_from_it_is_marked_phantoms_only(tmp_path, cohort_dir):
    """``train --weights FOUNDATION``: the card names the foundation and says it is not for patients."""
    r = subprocess.run([sys.executable, "-m", "osteo_batch.cli", "train", "--archive", str(cohort_dir.archive),
                        "--dxa", str(cohort_dir.dxa_csv), "--out", str(tmp_path / "m"), "--workdir", str(tmp_path / "w"),
                        "--weights", str(PHANTOM), "--epochs", "1", "--workers", "0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "from foundation phantom_dinov2_tiny" in r.stdout and "not for patients" in r.stdout
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["foundation"]["name"] == "phantom_dinov2_tiny" and card["for_patients"] is False
    assert card["random_init"] is False
    html = (tmp_path / "m" / "card.html").read_text()
    assert "Phantoms only, not for patients" in html


def test_pretraining_runs_and_writes_a_loadable_folder(tmp_path):
    """A few SimMIM steps on random-texture images: the loss falls and the folder loads through --weights."""
    from osteo_batch.models.backbones import load_backbone_weights
    from osteo_batch.models.foundation import read_manifest
    from osteo_batch.models.model import ModelConfig, build_module
    from osteo_batch.models.pretrain import PretrainConfig, pretrain, write_foundation

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, (1, 1, 168, 168)).astype(np.float32)
    x = np.clip(base + rng.normal(0, 0.02, (16, 1, 168, 168)), 0, 1).astype(np.float32)
    cfg = PretrainConfig(epochs=4, batch_size=8, lr=2e-3, warmup_epochs=1, bf16=False)
    res = pretrain(x, cfg)
    assert res.history[-1] < res.history[0]
    out = write_foundation(tmp_path / "f", res, cfg, {"images": 16})
    m = read_manifest(out)
    assert m["sha256"] == sha256_file(out / "model.safetensors") and m["clinical_use"] is False
    info = load_backbone_weights(build_module(ModelConfig.for_backbone("dinov2_tiny_demo")), out)
    assert info["foundation"]["sha256"] == m["sha256"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"'])
def test_an_unreadable_manifest_is_a_foundation_error(tmp_path, text):
    from osteo_batch.models.foundation import FoundationError, read_manifest

    bad = tmp_path / "foundation"
    shutil.copytree(PHANTOM, bad)
    (bad / "manifest.json").write_text(text)
    with pytest.raises(FoundationError, match="copy the foundation folder again"):
        read_manifest(bad)
