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
    # (judged on the score as displayed, like the bands: models.bands.flagged)
    from osteo_batch.models.bands import flagged

    assert [r for r in has_map if r[1] != flagged(r[0], summary["threshold"])] == []

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


def _visible_rows(page):
    return page.evaluate("""Array.from(document.querySelectorAll('#worklist tbody tr'))
        .filter(r => !r.hidden).map(r => ({rank: +r.dataset.rank, age: r.dataset.age === '' ? null : +r.dataset.age,
            band: r.dataset.band, site: r.dataset.site, status: r.dataset.status, date: r.dataset.date}))""")


def _shot(page, path):
    page.screenshot(path=str(path), full_page=False)
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert img.std() > 10, "the screenshot shows content, not a blank page"
    return img


def test_sorting_and_filtering_in_the_browser(worklist, page, tmp_path):
    res, _ = worklist
    page.goto(res.path.as_uri())
    assert page.locator("#filters").is_visible(), "the filter bar appears when scripts run"
    n = res.listed
    before = _shot(page, tmp_path / "before.png")

    page.locator("th[data-sort=age]").click()
    ages = [r["age"] for r in _visible_rows(page) if r["age"] is not None]
    assert ages == sorted(ages) and len(set(ages)) > 1
    assert page.locator("th[data-sort=age]").get_attribute("aria-sort") == "ascending"
    page.locator("th[data-sort=age]").click()
    ages = [r["age"] for r in _visible_rows(page) if r["age"] is not None]
    assert ages == sorted(ages, reverse=True)
    page.locator("th[data-sort=rank]").click()
    assert [r["rank"] for r in _visible_rows(page)] == list(range(1, n + 1)), "back to highest risk first"

    bands = {r["band"] for r in _visible_rows(page)}
    band = sorted(bands)[0]
    page.select_option("select[name=band]", band)
    shown = _visible_rows(page)
    assert shown and all(r["band"] == band for r in shown)
    assert page.locator("#shown").inner_text() == f"{len(shown)} of {n} shown"
    page.locator("button[type=reset]").click()
    page.wait_for_function(f"document.getElementById('shown').textContent === '{n} of {n} shown'")

    sites = sorted({r["site"] for r in _visible_rows(page)})
    assert len(sites) >= 2
    page.select_option("select[name=site]", sites[0])
    assert {r["site"] for r in _visible_rows(page)} == {sites[0]}
    page.locator("button[type=reset]").click()
    page.fill("input[name=age_min]", "60")
    page.fill("input[name=age_max]", "70")
    shown = _visible_rows(page)
    assert shown and all(r["age"] is not None and 60 <= r["age"] <= 70 for r in shown)
    assert len(shown) < n
    filtered = _shot(page, tmp_path / "filtered.png")
    assert filtered.shape == before.shape and np.abs(filtered - before).mean() > 1, "the page changed on screen"
    page.locator("button[type=reset]").click()
    dates = sorted(r["date"] for r in _visible_rows(page) if r["date"])
    page.fill("input[name=date_from]", dates[len(dates) // 2])
    assert all(r["date"] >= dates[len(dates) // 2] for r in _visible_rows(page))
    page.locator("button[type=reset]").click()
    page.select_option("select[name=status]", "new")
    assert len(_visible_rows(page)) == n, "nobody has a referral recorded yet"


def test_heat_map_opens_large_with_its_legend(worklist, page, tmp_path):
    res, _ = worklist
    page.goto(res.path.as_uri())
    thumb = page.locator("img.thumb").first
    small = thumb.bounding_box()
    thumb.click()
    big = page.locator("img.thumb").first.bounding_box()
    assert big["width"] > 4 * small["width"]
    assert page.locator("td.hm:target .legend").is_visible()
    assert "spine and the ribs" in page.locator("td.hm:target .legend").inner_text()
    img = _shot(page, tmp_path / "overlay.png")
    assert img.mean() < 128, "the overlay darkens the page around the heat map"


def test_without_javascript_the_list_is_complete_and_the_filters_stay_hidden(worklist, chromium_path):
    from playwright.sync_api import sync_playwright

    res, _ = worklist
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox", "--disable-gpu"])
        ctx = browser.new_context(java_script_enabled=False)
        pg = ctx.new_page()
        pg.goto(res.path.as_uri())
        assert pg.locator("#worklist tbody tr").count() == res.listed
        assert not pg.locator("#filters").is_visible()
        ranks = [int(x) for x in pg.locator("#worklist tbody tr td:first-child").all_inner_texts()]
        assert ranks == list(range(1, res.listed + 1))
        browser.close()


def test_printing_hides_the_controls_and_keeps_every_row(worklist, page, tmp_path):
    res, _ = worklist
    page.goto(res.path.as_uri())
    page.emulate_media(media="print")
    assert not page.locator("#filters").is_visible() and not page.locator("nav").is_visible()
    assert page.evaluate("getComputedStyle(document.querySelector('img.thumb')).width") == "64px"
    pdf = page.pdf(path=str(tmp_path / "worklist.pdf"), landscape=True)
    assert pdf[:4] == b"%PDF" and len(pdf) > 10_000


def test_korean_names_render_with_a_cjk_font(worklist, page):
    res, _ = worklist
    page.goto(res.path.as_uri())
    page.evaluate("document.fonts.ready")
    assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK KR\"', '김미영')")
    korean = page.locator("#worklist tbody tr", has_text="XSS1").locator("td.name")
    used = page.evaluate("""el => getComputedStyle(el).fontFamily""", korean.element_handle())
    assert "Noto Sans CJK KR" in used


def test_site_pages_and_csv_hold_the_same_rows(worklist, page):
    res, _ = worklist
    total = 0
    for site, path in res.site_pages.items():
        page.goto(path.as_uri())
        sites = {r["site"] for r in _visible_rows(page)}
        assert sites == {site}
        total += page.locator("#worklist tbody tr").count()
        assert page.locator("select[name=site]").count() == 0, "one site per page: no site filter"
    assert total == res.listed
    import csv

    with open(res.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in res.rows]
    hostile = next(r for r in rows if r["patient_id"] == "XSS0")
    assert hostile["name"] == HOSTILE, "the CSV holds the raw name (it is data, not markup)"
