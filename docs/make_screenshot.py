"""Take the README's picture of the app: the Certify page after an attack and a certification.

Starts ``streamlit run app.py`` on a free port, drives it in headless Chromium (Playwright, as
``tests/test_browser.py`` does): CIFAR-10 test image #459, the attack with its default preset,
then DSmooth, RandSmooth and LSmooth with the page's defaults. Saves the top of the page (settings,
certificates, the honest comparison) as a palette PNG, small enough to commit, in
``docs/images/certify.png``.
Needs CIFAR-10 in ``DSMOOTH_DATA_DIR`` and Chromium at /usr/bin/chromium.
Run from the repository root: ``DSMOOTH_DATA_DIR=/path/to/data .venv/bin/python docs/make_screenshot.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks' server start, shared rather than copied
from bench_app import CHROMIUM, LAUNCH_ARGS, free_port, start_server  # noqa: E402

OUT = ROOT / "docs" / "images" / "certify.png"
IMAGE_INDEX = 459
VIEWPORT = {"width": 1500, "height": 1500}
COLOURS = 128  # a palette this size keeps the picture readable and the file under 300 KB


def idle(page, timeout: float = 600) -> None:
    """Until the script is not running and no job panel is shown."""
    deadline = time.monotonic() + timeout
    app = page.locator('[data-testid="stApp"]')
    page.wait_for_timeout(500)  # let a click start its run
    while time.monotonic() < deadline:
        if (
            app.get_attribute("data-test-script-state") == "notRunning"
            and not page.locator(".st-key-dsl_job_panel").count()
        ):
            return
        page.wait_for_timeout(200)
    raise RuntimeError("the app did not become idle")


def go(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).first.click()
    page.get_by_role("heading", level=1).filter(has_text=title.split(" ")[0]).wait_for(timeout=120_000)
    idle(page)


def capture(url: str, raw: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(600_000)
            page.goto(f"{url}/model_image")  # by its address: the app opens on the guided lesson
            page.get_by_role("heading", name="Model & image").wait_for()
            idle(page)
            box = page.get_by_label("Or test image index", exact=True)
            box.fill(str(IMAGE_INDEX))
            box.press("Enter")
            idle(page)
            page.get_by_role("button", name="Use it").click()
            idle(page)
            go(page, "Attack")
            page.get_by_role("button", name="Run the attack").click()
            idle(page)
            go(page, "Certify")
            page.get_by_role("button", name="Certify", exact=True).click()
            idle(page)
            page.get_by_role("heading", name="Comparing the methods honestly").wait_for()
            page.wait_for_timeout(1000)  # let the tables finish drawing
            # the top of the page, down to the charts below the comparison table
            charts = page.get_by_text("The same guarantees, measured in the same metric").bounding_box()
            bottom = min(VIEWPORT["height"], int(charts["y"]) - 16) if charts else VIEWPORT["height"]
            page.screenshot(path=str(raw), clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": bottom})
        finally:
            browser.close()


def main() -> int:
    if not CHROMIUM.exists():
        sys.exit(f"needs Chromium at {CHROMIUM}")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "raw.png"
        server = start_server(port, Path(folder) / "server.log")
        try:
            capture(f"http://127.0.0.1:{port}", raw)
        finally:
            server.terminate()
            server.wait(timeout=30)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        Image.open(raw).convert("RGB").quantize(COLOURS).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
