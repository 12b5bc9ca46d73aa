"""docs/report.png: the survey report of one reviewed arm of experiments/areas, rendered by headless Chromium."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main(seed: str = "31") -> int:
    from ordnance.inference.report import build_report
    from playwright.sync_api import sync_playwright

    run = HERE / "data" / f"areas_{seed}_reviewed"
    page_path = build_report(run, pdf=False)[0]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1050, "height": 1500})
        page.goto(page_path.as_uri())
        page.screenshot(path=str(REPO / "docs" / "report.png"), full_page=False)
        browser.close()
    print(REPO / "docs" / "report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
