"""The model study: a grid as a real Prefect flow, report.json with the contract's keys, the HTML table."""

import json

import pytest

from osteo_batch import study


@pytest.fixture(scope="module")
def report(cohort_dir, prefect_server, tmp_path_factory):
    from flows.study import model_study

    out = tmp_path_factory.mktemp("study")
    grid = [study.GridEntry("dinov2_tiny_demo", s, epochs=1) for s in ("lora", "linear", "full")]
    path = model_study(archive=str(cohort_dir.archive), dxa_csv=str(cohort_dir.dxa_csv), out=str(out), grid=grid,
                       truth=str(cohort_dir.truth_csv), masks=str(cohort_dir.masks), workers=0)
    return out, json.loads(open(path).read())


def test_report_json_has_the_contract_keys(report):
    out, r = report
    assert 0.5 < r["ceiling_auc"] <= 1
    assert [(x["backbone"], x["strategy"]) for x in r["rows"]] == [
        ("dinov2_tiny_demo", "lora"), ("dinov2_tiny_demo", "linear"), ("dinov2_tiny_demo", "full")]
    for row in r["rows"]:
        for k in ("backbone", "strategy", "auc", "auc_ci", "sensitivity", "specificity", "delta_bone", "iou_bone"):
            assert k in row, k
        assert row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]
        assert (out / "models" / f"dinov2_tiny_demo-{row['strategy']}" / "model.safetensors").is_file()
    assert r["iou_bone_random"] is not None and r["delta_nonbone"] is not None
    linear, full = r["rows"][1], r["rows"][2]
    assert linear["trainable_parameters"] < r["rows"][0]["trainable_parameters"] < full["trainable_parameters"]
    assert list((out / "cache").glob("decoded-*.npz")), "the models shared one decoded cache"


@pytest.mark.browser
def test_report_renders_in_chromium(report, chromium_path):
    from playwright.sync_api import sync_playwright

    out, r = report
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox", "--disable-gpu",
                                                                   "--disable-background-networking"])
        pg = b.new_page()
        pg.goto((out / "report.html").as_uri())
        headers = pg.locator("#study thead th").all_inner_texts()
        assert headers[:7] == ["Backbone", "Strategy", "AUC [95% CI]", "Sensitivity", "Specificity", "Δbone", "IoU_bone"]
        assert pg.locator("#study tbody tr").count() == 3
        assert pg.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert pg.locator("img").count() == 1
        b.close()


def test_grid_file_errors_name_the_problem(tmp_path):
    g = tmp_path / "grid.toml"
    g.write_text('[[model]]\nbackbone = "dinov2_small"\nstrategy = "prompt"\n')
    with pytest.raises(study.GridError, match="needs backbone and strategy"):
        study.load_grid(g)
    g.write_text('[[model]]\nbackbone = "dinov2_small"\nstrategy = "lora"\nepochs = 3\n')
    assert study.load_grid(g) == [study.GridEntry("dinov2_small", "lora", epochs=3)]
