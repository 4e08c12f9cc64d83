"""A link copied in one browser opens the same Certify case in another, and the same click gives the same radii.

Reuses test_browser.py's server (``streamlit run app.py`` on a free port) and its helpers; a second
browser context shares no cookies, storage or session with the first, as a student's browser would.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.test_browser import CHROMIUM, LAUNCH_ARGS, app_server, go, set_number, sidebar_text, wait_idle, wait_job

__all__ = ["app_server"]  # the server fixture, used here by name

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]
LINE = re.compile(r"^(DSmooth|RandSmooth|LSmooth) (certifies \S+|abstains): p_lower = ([\d.]+), R = (\S+) \((.+?)\)")
SETTINGS = {"sigma (noise level)": "0.370", "n0 (selection draws)": "20", "n (estimation draws)": "200"}


def certify_and_read(page) -> list[tuple[str, ...]]:
    """Press Certify, wait for the job, and read each method's verdict, p_lower, radius and metric."""
    page.get_by_role("button", name="Certify", exact=True).click()
    wait_job(page)
    lines = page.locator("li").filter(has_text=LINE)
    lines.first.wait_for()
    return [LINE.match(text.strip()).groups() for text in lines.all_inner_texts()]


def shown_settings(page) -> dict[str, str]:
    return {label: page.get_by_label(label, exact=True).input_value() for label in SETTINGS}


def methods(page) -> list[str]:
    tags = page.locator(".st-key-cert_methods [data-tag] span[title]")
    return [tags.nth(i).get_attribute("title") for i in range(tags.count())]


def test_a_link_is_the_first_request_of_a_fresh_server(app_server: str) -> None:
    """Streamlit runs a page file alone on a server's first run; the link still reaches its page and settings."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.set_default_timeout(120_000)
            page.goto(f"{app_server}/certify?sigma=0.3&n=150&image=cifar10-test:5&nonsense=1")
            page.get_by_role("heading", name="Certify").wait_for()
            wait_idle(page)
            assert page.get_by_label("sigma (noise level)", exact=True).input_value() == "0.300"
            assert page.get_by_label("n (estimation draws)", exact=True).input_value() == "150"
            assert "CIFAR-10 test #5" in sidebar_text(page)
            assert page.get_by_text("The link's unknown parameters were ignored: nonsense.").count() == 1
            assert "sigma=0.3&" in page.url and "nonsense" not in page.url
        finally:
            browser.close()


def test_a_copied_link_reproduces_the_certify_case_in_a_new_browser(app_server: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            teacher = browser.new_context(viewport={"width": 1400, "height": 2000}).new_page()
            teacher.set_default_timeout(120_000)
            teacher.goto(app_server)
            teacher.get_by_role("heading", name="Start here: a guided lesson").wait_for()  # the default page
            wait_idle(teacher)
            go(teacher, "Model & image")
            set_number(teacher, "Or test image index", 7)  # not the default image
            teacher.get_by_role("button", name="Use it").click()
            wait_idle(teacher)
            assert "CIFAR-10 test #7" in sidebar_text(teacher)

            go(teacher, "Certify")
            teacher.get_by_role("button", name="Remove LSmooth").click()
            wait_idle(teacher)
            for label, value in SETTINGS.items():
                set_number(teacher, label, float(value))
            chosen = methods(teacher)
            assert "LSmooth" not in chosen and "RandSmooth" in chosen

            link = teacher.locator('[data-testid="stSidebar"] [data-testid="stCode"]').inner_text().strip()
            assert link == teacher.url  # the Copy-link control and the address bar hold the same link
            query = dict(parse_qsl(urlsplit(link).query))
            assert query["image"] == "cifar10-test:7" and query["sigma"] == "0.37" and query["n"] == "200"
            assert "lsmooth" not in query["methods"]
            assert urlsplit(link).path.endswith("/certify")
            teacher_radii = certify_and_read(teacher)

            student = browser.new_context(viewport={"width": 1400, "height": 2000}).new_page()
            student.set_default_timeout(120_000)
            student.goto(link)
            student.get_by_role("heading", name="Certify").wait_for()
            wait_idle(student)
            assert "CIFAR-10 test #7" in sidebar_text(student)
            assert shown_settings(student) == shown_settings(teacher) == SETTINGS
            assert methods(student) == chosen
            assert certify_and_read(student) == teacher_radii
            assert [method for method, *_ in teacher_radii] == chosen
        finally:
            browser.close()
