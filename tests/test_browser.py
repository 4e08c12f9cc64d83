"""One real-browser run of the app: pick an image, attack, certify with all three methods, cancel.

Starts ``streamlit run app.py`` on a free port (CIFAR-10 from DSMOOTH_DATA_DIR, or a tiny fake copy)
and drives Debian's Chromium through Playwright. Skipped only when /usr/bin/chromium is absent.
The screenshot lands in test-artifacts/browser_certify.png.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(app_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run app.py`` on a free port; stopped (and reaped) at the end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "DSMOOTH_DATA_DIR": str(app_data_dir)}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start:\n{log.read_text()}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def wait_idle(page, timeout: float = 240.0) -> None:
    """Wait until the script has run (or stopped): no run in progress, no 'Running...' status widget."""
    app = page.locator('[data-testid="stApp"]')
    start = time.monotonic()
    while time.monotonic() - start < 2.0 and app.get_attribute("data-test-script-state") != "running":
        page.wait_for_timeout(100)  # give a click time to start a run
    while time.monotonic() - start < timeout:
        running = app.get_attribute("data-test-script-state") == "running"
        status = page.locator('[data-testid="stStatusWidget"]').filter(has_text="Running").count()
        if not running and not status:
            page.wait_for_timeout(300)
            if app.get_attribute("data-test-script-state") != "running":
                return
        page.wait_for_timeout(200)
    raise AssertionError("the app did not become idle")


def wait_job(page, timeout: float = 240.0) -> None:
    """Wait until the session's background job has ended (its panel is gone) and the page is idle."""
    page.wait_for_timeout(300)
    page.locator(".st-key-dsl_job_panel").wait_for(state="detached", timeout=timeout * 1000)
    wait_idle(page, timeout)


def set_number(page, label: str, value: int | float) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def go(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).first.click()
    page.get_by_role("heading", level=1).filter(has_text=re.compile(title.split(" ")[0])).wait_for(timeout=60_000)
    wait_idle(page)


def sidebar_text(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def test_pick_attack_certify_and_cancel_in_a_real_browser(app_server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.set_default_timeout(120_000)
            page.goto(app_server)
            page.get_by_role("heading", name="Start here: a guided lesson").wait_for()  # the default page
            wait_idle(page)
            go(page, "Model & image")

            # pick an image from the gallery
            page.get_by_role("button", name="Select", exact=True).nth(2).click()
            wait_idle(page)
            picked = re.search(r"CIFAR-10 test #(\d+)", sidebar_text(page))
            assert picked, sidebar_text(page)
            expect(page.get_by_role("button", name="Selected", exact=True)).to_have_count(1)

            # attack with a few queries
            go(page, "Attack")
            set_number(page, "Square queries (budget per image)", 20)
            page.get_by_role("button", name="Run the attack").click()
            wait_job(page)
            expect(page.get_by_text("Queries used")).to_be_visible()
            assert "l_inf =" in sidebar_text(page)

            # DSmooth needs a threat profile: build a tiny one when none (or none usable) is loaded
            go(page, "Certify")
            if page.get_by_text(re.compile("DSmooth is unavailable")).count():
                go(page, "Threat profile")
                page.get_by_text("Build from calibration images", exact=True).click()
                wait_idle(page)
                set_number(page, "Calibration images", 16)
                page.get_by_text("Attack used for calibration").click()
                set_number(page, "Square queries (budget per image)", 10)
                set_number(page, "Rank k to fit", 4)
                page.get_by_role("button", name="Build the profile").click()
                wait_job(page)
                expect(page.get_by_text("Top eigen-perturbations").first).to_be_visible()
                assert "built here" in sidebar_text(page)

            # certify: first a long run that we cancel, then the real one with small n
            go(page, "Certify")
            expect(page.get_by_text("DSmooth", exact=True).first).to_be_visible()
            set_number(page, "n0 (selection draws)", 10)
            set_number(page, "n (estimation draws)", 400_000)
            page.get_by_role("button", name="Certify").click()
            page.locator('.st-key-dsl_job_panel [data-testid="stProgress"]').wait_for(timeout=60_000)
            page.get_by_role("button", name="Cancel").click()
            wait_job(page)
            expect(page.get_by_text(re.compile("^Cancelled"))).to_be_visible()
            assert page.get_by_role("button", name="Cancel").count() == 0

            set_number(page, "n (estimation draws)", 50)
            page.get_by_role("button", name="Certify").click()
            wait_job(page)
            for method, metric in (("DSmooth", "Mahalanobis (St)"), ("RandSmooth", "l2"), ("LSmooth", "l1")):
                line = page.locator("li").filter(has_text=re.compile(rf"^{method} (certifies|abstains)"))
                expect(line).to_have_count(1)
                assert f"({metric})" in line.inner_text()
            expect(page.get_by_text("Comparing the methods honestly")).to_be_visible()
            expect(page.get_by_role("button", name="Download the results (CSV)")).to_be_visible()
            page.get_by_text("Comparing the methods honestly").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser_certify.png"), full_page=True)

            # the profile's shrinkage slider redraws its own view and the sidebar's profile line, not the page
            go(page, "Threat profile")
            shrinkage = page.get_by_role("slider", name=re.compile("^Shrinkage toward isotropy"))
            shrinkage.focus()
            shrinkage.press("End")
            page.get_by_text(re.compile(r"^In use:.*shrinkage = 1\b")).wait_for(timeout=60_000)
            wait_idle(page)
            assert re.search(r"k = \d+, shrinkage = 1,", sidebar_text(page)), sidebar_text(page)
        finally:
            browser.close()
