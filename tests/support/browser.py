"""Headless Chromium for the browser tests, driven by Playwright for Python.

Nothing is downloaded: Playwright starts Debian's ``chromium`` (``install.py --with-browser``)
through ``executable_path``; its own ``playwright install`` is never needed.

    async with chromium() as browser:
        tab = await new_tab(browser, 1440, 900)
        await tab.page.goto("http://127.0.0.1:8288/")
        await tab.wait_for("document.querySelectorAll('.card').length > 0")
        await tab.page.screenshot(path=artifacts_dir / "page.png", full_page=True)
        assert tab.problems == []

A tab collects console errors (Chromium's log entries, such as CSP violations and failed loads,
arrive as console errors too) and uncaught exceptions in ``problems`` so a test can assert there
were none.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """Debian's Chromium, or ``$CAK_CHROMIUM`` where it lives elsewhere."""
    path = os.environ.get("CAK_CHROMIUM", CHROMIUM)
    return path if shutil.which(path) else None


def requires_chromium():
    """Skip a browser test where no Chromium is installed, except in CI, where that is a failure."""
    import pytest

    missing = chromium_path() is None and not os.environ.get("CI")
    return pytest.mark.skipif(missing, reason="no Chromium: python3 install.py --with-browser")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """One headless Chromium for the block; closed (with its helpers) at the end."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no Chromium found: run `python3 install.py --with-browser` "
                           "(Debian's chromium) or set CAK_CHROMIUM")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=FLAGS,
                                                   headless=True, chromium_sandbox=False)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Tab:
    """A page in its own context (its own sessionStorage) and the problems it reported."""

    page: Page
    problems: list[str] = field(default_factory=list)

    async def wait_for(self, expression: str, timeout: float = 120.0, interval: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy; its value. The timeout only keeps a test from hanging.

        Polled from here rather than with ``page.wait_for_function``: that one evaluates the string
        with ``eval`` inside the page, which a strict Content-Security-Policy (the dashboard's)
        forbids, and the tests must not switch CSP off since they check it holds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.page.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"{expression[:120]!r} still false after {timeout:.0f} s "
                                   f"(last value {value!r}; page problems: {self.problems[-5:]})")
            await asyncio.sleep(interval)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        return await self.page.evaluate(expression)


async def new_tab(browser: Browser, width: int = 1440, height: int = 900) -> Tab:
    context = await browser.new_context(viewport={"width": width, "height": height})
    tab = Tab(await context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            tab.problems.append(f"console.{message.type}: {message.text} {message.location.get('url', '')}".strip())

    tab.page.on("console", on_console)
    tab.page.on("pageerror", lambda error: tab.problems.append(f"uncaught: {error}"))
    return tab
