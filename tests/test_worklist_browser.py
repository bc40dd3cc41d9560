"""The worklist in headless Chromium: rows, heat maps, enlarging one, escaping names."""

import shutil

import numpy as np
import pytest
from PIL import Image

from osteo_batch import pipeline

from dicom_factory import dataset, write

pytestmark = pytest.mark.browser

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def worklist(cohort_dir, tiny_model, tmp_path_factory):
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.worklist import write_worklist

    root = tmp_path_factory.mktemp("browser")
    archive = root / "archive"
    shutil.copytree(cohort_dir.archive, archive)
    src = cohort_dir.plans[0]
    import pydicom

    px = pydicom.dcmread(archive / src.filename).pixel_array
    for i, name in enumerate([HOSTILE, "김미영"]):
        ds = dataset(px, sop_instance_uid=f"2.25.99{i}", patient_id=f"XSS{i}", patient_name=name,
                     rows=src.rows, cols=src.cols, photometric=src.photometric, study_date="20260101")
        write(ds, archive / "extra" / f"IM{i}")
    s = pipeline.load_settings(None, workdir=root / "work", archive=archive, model_dir=tiny_model.model_dir)
    summary = pipeline.run_nightly(s)
    m = load_model_dir(tiny_model.model_dir)
    with pipeline.open_store(s) as st:
        res = write_worklist(st, workdir=s.workdir, run={"run_id": summary["run_id"]}, model_id=m.model_id,
                             threshold=0.0, bands=m.config.bands, name_suffix="-all", record=False)
    return res, summary


@pytest.fixture
def page(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync"],
        )
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        dialogs = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        pg.dialogs = dialogs
        yield pg
        browser.close()


def test_worklist_shows_patients_heatmaps_and_escapes_names(worklist, page, tmp_path):
    res, summary = worklist
    page.goto(res.path.as_uri())
    rows = page.locator("#worklist tbody tr")
    assert rows.count() == res.listed > 0
    assert page.get_by_text("DXA confirms osteoporosis").first.is_visible()
    # the hostile name is shown as text, and nothing ran
    assert page.get_by_text(HOSTILE).count() == 1
    assert page.dialogs == []
    korean = page.locator("#worklist tbody tr", has_text="XSS1").locator("td.name")
    assert korean.inner_text() == "김미영"
    # every heat map thumbnail loaded from the page itself (self-contained)
    loaded = page.evaluate("Array.from(document.querySelectorAll('img.thumb')).map(i => i.complete && i.naturalWidth > 0)")
    assert loaded and all(loaded)
    # flagged rows (at or above the model's threshold) carry a heat map, the others none
    has_map = page.evaluate("""Array.from(document.querySelectorAll('#worklist tbody tr')).map(
        r => [parseFloat(r.dataset.score), r.querySelector('img.thumb') !== null])""")
    assert [r for r in has_map if r[1] != (r[0] >= summary["threshold"])] == []

    shot = tmp_path / "list.png"
    page.screenshot(path=str(shot))
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 10, "the screenshot shows content, not a blank page"

    thumb = page.locator("img.thumb").first
    small = thumb.bounding_box()
    thumb.click()
    big = page.locator("img.thumb").first.bounding_box()
    assert big["width"] > 4 * small["width"], "clicking a heat map enlarges it"
    page.screenshot(path=str(tmp_path / "heatmap.png"))
    page.get_by_text("× close").first.click()
    assert page.locator("img.thumb").first.bounding_box()["width"] == pytest.approx(small["width"], abs=1)
