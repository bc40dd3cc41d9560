"""Screenshots for the README from a demo work folder, in headless Chromium (Debian's).

Usage: .venv/bin/python scripts/screenshots.py demo-run [docs]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(workdir: str, out: str = "docs") -> None:
    from playwright.sync_api import sync_playwright

    work, docs = Path(workdir), Path(out)
    docs.mkdir(exist_ok=True)
    pages = sorted((work / "worklists").glob("worklist-*.html"), key=lambda p: p.stat().st_mtime)
    main_page = [p for p in pages if "-site-" not in p.name][-1]
    run_page = sorted((work / "runs").glob("run-*.html"), key=lambda p: p.stat().st_mtime)[-1]
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1500, "height": 950})
        pg.goto(main_page.as_uri())
        pg.screenshot(path=str(docs / "worklist.png"))
        pg.locator("img.thumb").first.click()
        pg.screenshot(path=str(docs / "worklist-heatmap.png"))
        pg.goto(run_page.as_uri())
        pg.screenshot(path=str(docs / "run-summary.png"), full_page=True)
        browser.close()
    print(f"wrote {docs}/worklist.png, worklist-heatmap.png, run-summary.png from {main_page.name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
