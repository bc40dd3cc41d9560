"""The model study: a grid as a real Prefect flow, report.json with the contract's keys, the HTML table."""

import json

import pytest

from osteo_batch import study


@pytest.fixture(scope="module")
def report(cohort_dir, prefect_server, tmp_path_factory):
    from osteo_batch.flows.study import model_study

    out = tmp_path_factory.mktemp("study")
    from osteo_batch.foundations import PHANTOM

    grid = [study.GridEntry("dinov2_tiny_demo", s, epochs=1) for s in ("lora", "linear", "full")]
    grid.append(study.GridEntry("dinov2_tiny_demo", "linear", weights=str(PHANTOM), epochs=1))
    path = model_study(archive=str(cohort_dir.archive), dxa_csv=str(cohort_dir.dxa_csv), out=str(out), grid=grid,
                       truth=str(cohort_dir.truth_csv), masks=str(cohort_dir.masks), workers=0)
    return out, json.loads(open(path).read())


def test_report_json_has_the_contract_keys(report):
    out, r = report
    assert 0.5 < r["ceiling_auc"] <= 1
    assert [(x["backbone"], x["strategy"], x["init"]) for x in r["rows"]] == [
        ("dinov2_tiny_demo", "lora", "random"), ("dinov2_tiny_demo", "linear", "random"),
        ("dinov2_tiny_demo", "full", "random"), ("dinov2_tiny_demo", "linear", "foundation")]
    for row in r["rows"]:
        for k in ("backbone", "strategy", "auc", "auc_ci", "sensitivity", "specificity", "delta_bone", "iou_bone"):
            assert k in row, k
        assert row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]
        assert (out / "models" / f"dinov2_tiny_demo-{row['strategy']}-{row['init']}" / "model.safetensors").is_file()
    assert r["iou_bone_random"] is not None and r["delta_nonbone"] is not None
    linear, full = r["rows"][1], r["rows"][2]
    assert linear["trainable_parameters"] < r["rows"][0]["trainable_parameters"] < full["trainable_parameters"]
    assert list((out / "cache").glob("decoded-*.npz")), "the models shared one decoded cache"
    # the two inits of one strategy never share a folder, and the foundation row says where it started
    names = [x["name"] for x in r["rows"]]
    assert len(set(names)) == len(names)
    assert r["rows"][3]["foundation"] == "phantom_dinov2_tiny" and r["rows"][1]["foundation"] is None
    best = max(r["rows"], key=lambda x: x["auc"])
    assert r["finding"].endswith(f"AUC {best['auc']:.3f}.")


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
        assert headers[:8] == ["Backbone", "Strategy", "Init", "AUC [95% CI]", "Sensitivity", "Specificity", "Δbone",
                               "IoU_bone"]
        assert pg.locator("#study tbody tr").count() == 4
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


def test_the_finding_is_read_from_the_rows():
    def row(strategy, init, auc, n=1000):
        return {"backbone": "b", "strategy": strategy, "init": init, "auc": auc, "trainable_parameters": n}

    rows = [row("lora", "foundation", 0.95, 5000), row("lora", "random", 0.90), row("full", "foundation", 0.94, 90000),
            row("full", "random", 0.91)]
    text = study.finding(rows)
    assert text.startswith("Every strategy from the foundation beat its random-weight twin")
    assert "LoRA from the foundation reached AUC 0.950 against 0.900" in text and "5,000" in text
    rows[3]["auc"] = 0.96
    assert study.finding(rows).startswith("The foundation beat random weights in 1 of 2 strategies")
    assert study.finding([row("lora", "random", 0.9)]) is None
