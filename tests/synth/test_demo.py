"""README command 1: the whole demo, as a user runs it (slow: about 3-4 minutes)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXE = str(Path(sys.executable).parent / "osteo-batch")


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_demo_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    work = tmp_path / "demo-run"
    t0 = time.monotonic()
    p = subprocess.run([EXE, "demo", "--workdir", str(work)], capture_output=True, text=True, env=env, timeout=1200)
    seconds = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    worklist = Path(p.stdout.strip().splitlines()[-1].split("worklist: ")[1])
    assert worklist.is_file() and worklist.parent == work / "worklists"
    html = worklist.read_text()
    assert html.count('class="thumb"') > 10 and "DXA confirms" in html

    card = json.loads((work / "models" / "demo" / "card.json").read_text())
    v, ceiling = card["validation"], card["ceiling"]["auc_validation"]
    assert 0.5 < v["auc"] <= 1 and ceiling is not None and 0.8 < ceiling <= 1
    print(f"\ndemo: {seconds:.0f} s, {_du(work) / 1e9:.2f} GB, test AUC {v['auc']:.3f} "
          f"({v['auc_ci95'][0]:.3f}-{v['auc_ci95'][1]:.3f}), ceiling {ceiling:.3f}, ECE {card['calibration']['ece']:.3f}, "
          f"bone {card['bone']}")
    # every figure comes from held-out women the model never trained on, enough of them to judge calibration
    assert card["data"]["reported_on"] == "test" and card["data"]["val_patients"] >= 300
    assert v["auc"] >= 0.90 * ceiling, "the demo model must rank women nearly as well as the latent density"
    assert card["calibration"]["ece"] <= 0.05
    bone = card["bone"]
    assert bone["iou_bone"] >= 1.5 * bone["iou_bone_random"] and bone["delta_bone"] > bone["delta_nonbone"]
    assert bone["marker_heat_share"] is not None
    # a model from the phantom foundation never looks clinical
    assert card["foundation"]["name"] == "phantom_dinov2_tiny" and card["for_patients"] is False
    assert "Phantoms only, not for patients" in html and "phantom_dinov2_tiny" in html
    assert "tonight:" in p.stdout and "Spearman" in p.stdout
    # bands follow the displayed score
    import re

    shown = re.findall(r'<td class="num">(\d\.\d{3})</td>\s*<td><span class="band band-([a-z-]+)"', html)
    assert shown and all(len({b for s2, b in shown if s2 == s}) == 1 for s, _ in shown)
    assert _du(work) < 1.5e9
    assert seconds < 600, "the demo should stay near 5 minutes on 2 cores"

    cohort = json.loads((work / "cohort.json").read_text())
    assert sum(1 for f in (work / "archive").rglob("*") if f.is_file()) == cohort["n_files"]
