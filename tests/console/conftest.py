"""What the console's browser tests share: Debian's Chromium driven by Playwright, and a page
logged in to the console that records every script error, dialog and CSP violation."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.fail("Chromium is required for the console tests (apt-get install chromium; scripts/setup.sh test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def open_console(browser: Any, url: str, user: str, password: str, **context: Any) -> tuple[Any, list[str]]:
    """Log ``user`` in and wait until the event stream is up; returns the page and the list its
    errors go to. A script error, a dialog (alert() from injected markup) or a CSP violation is
    a failure; a refused request (e.g. a 409 a test asks for) is logged by Chromium as "Failed to
    load resource" and is not."""
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN", **context)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("console", lambda m: errors.append(f"console: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.goto(url)
    page.fill("#login-form input[name=username]", user)
    page.fill("#login-form input[name=password]", password)
    page.press("#login-form input[name=password]", "Enter")
    page.wait_for_selector("#logout", state="visible")
    page.wait_for_selector('#conn:has-text("已连接")')  # the event stream is up (no eval: the CSP forbids it)
    return page, errors
