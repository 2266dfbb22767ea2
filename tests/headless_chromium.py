"""A small async driver for headless Chromium over the DevTools protocol (CDP), for browser tests.

Nothing is downloaded: it runs Debian's ``chromium`` (``install.py --with-browser``) with
``--remote-debugging-port=0``, reads the DevTools address from its stderr and talks CDP over one
websocket (``websockets``), with flat sessions for the tabs it opens.

    async with HeadlessChromium.launch(tmp_path) as browser:
        page = await browser.new_page(width=1440, height=900)
        await page.goto("http://127.0.0.1:8288/")
        await page.wait_for("document.querySelectorAll('.card').length > 0")
        await page.screenshot(artifacts_dir / "page.png")

The page also collects console errors, uncaught exceptions and browser log entries (CSP
violations, failed loads) in ``page.problems`` so a test can assert there were none.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
DEVTOOLS_LINE = re.compile(r"DevTools listening on (ws://\S+)")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--no-proxy-server",
    "--hide-scrollbars", "--mute-audio", "--disable-dev-shm-usage", "--remote-debugging-port=0",
)


def requires_chromium():
    """Skip a browser test where no Chromium is installed, except in CI, where that is a failure."""
    import pytest

    missing = find_chromium() is None and not os.environ.get("CI")
    return pytest.mark.skipif(missing, reason="no Chromium: python3 install.py --with-browser")


class BrowserError(RuntimeError):
    """Chromium could not start, a CDP call failed, or page JavaScript threw."""


def find_chromium() -> str | None:
    """The Chromium executable to use: ``$CAK_CHROMIUM`` or the first candidate found."""
    if os.environ.get("CAK_CHROMIUM"):
        return os.environ["CAK_CHROMIUM"]
    for candidate in CHROMIUM_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


class HeadlessChromium:
    """One Chromium process and its browser-level CDP connection."""

    def __init__(self, process: asyncio.subprocess.Process, socket: ClientConnection, profile: Path,
                 stderr_tail: collections.deque[str], stderr_task: asyncio.Task[None]) -> None:
        self.process = process
        self.socket = socket
        self.profile = profile
        self.stderr_tail = stderr_tail
        self._stderr_task = stderr_task
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read(), name="cdp reader")

    # ------------------------------------------------------------------ start and stop

    @classmethod
    def launch(cls, work_dir: Path | None = None, *, executable: str | None = None,
               start_timeout: float = 120.0) -> "_Launch":
        """``async with HeadlessChromium.launch(dir) as browser``: start, and always stop."""
        return _Launch(work_dir, executable, start_timeout)

    @classmethod
    async def start(cls, work_dir: Path | None = None, *, executable: str | None = None,
                    start_timeout: float = 120.0) -> "HeadlessChromium":
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("no Chromium found: run `python3 install.py --with-browser` "
                               "(Debian's chromium) or set CAK_CHROMIUM")
        profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=work_dir))
        process = await asyncio.create_subprocess_exec(
            executable, *FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        tail: collections.deque[str] = collections.deque(maxlen=60)
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        stderr_task = asyncio.create_task(_drain_stderr(process, tail, found), name="chromium stderr")
        try:
            url = await asyncio.wait_for(found, start_timeout)
            socket = await connect(url, max_size=None, ping_interval=None, open_timeout=start_timeout)
        except BaseException as exc:
            await _kill(process)
            stderr_task.cancel()
            shutil.rmtree(profile, ignore_errors=True)
            if isinstance(exc, (asyncio.TimeoutError, EOFError, OSError)):
                raise BrowserError(f"Chromium did not start ({type(exc).__name__}); its stderr:\n"
                                   + "\n".join(tail)) from exc
            raise
        return cls(process, socket, profile, tail, stderr_task)

    async def close(self) -> None:
        """Close the connection, end the process group, remove the profile."""
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        try:
            await asyncio.wait_for(self.socket.close(), 5)
        except (asyncio.TimeoutError, OSError):
            pass
        await _kill(self.process)
        self._stderr_task.cancel()
        await asyncio.gather(self._stderr_task, return_exceptions=True)
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol

    async def send(self, method: str, params: dict[str, Any] | None = None, *,
                   session_id: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """One CDP command; its ``result`` (``BrowserError`` for a protocol error)."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        try:
            await self.socket.send(json.dumps(message))
            answer = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(message_id, None)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')} {answer['error'].get('data', '')}")
        return answer.get("result", {})

    async def _read(self) -> None:
        try:
            async for raw in self.socket:
                message = json.loads(raw)
                if "id" in message:
                    future = self._pending.get(message["id"])
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("sessionId") in self._pages:
                    self._pages[message["sessionId"]]._event(message["method"], message.get("params", {}))
        except Exception as exc:  # the browser went away: fail every waiting call
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError(f"the DevTools connection ended: {exc}"))
            raise
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the DevTools connection closed"))

    async def new_page(self, width: int = 1440, height: int = 900) -> "Page":
        """A new tab (its own sessionStorage) with the given viewport, attached in a flat session."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"], target["targetId"])
        self._pages[page.session_id] = page
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            await page.send(method)
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page


class Page:
    """One tab: navigate, evaluate JavaScript, wait for a condition, take screenshots."""

    def __init__(self, browser: HeadlessChromium, session_id: str, target_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.target_id = target_id
        self.problems: list[str] = []  # console errors, uncaught exceptions, browser log errors
        self.console: list[str] = []

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return await self.browser.send(method, params, session_id=self.session_id, timeout=timeout)

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.problems.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"uncaught: {description}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.problems.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    async def goto(self, url: str, timeout: float = 60.0) -> None:
        """Navigate and wait until the document has loaded."""
        answer = await self.send("Page.navigate", {"url": url}, timeout=timeout)
        if answer.get("errorText"):
            raise BrowserError(f"cannot open {url}: {answer['errorText']}")
        await self.wait_for("document.readyState === 'complete'", timeout=timeout)

    async def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression (promises awaited); ``BrowserError`` if it throws."""
        answer = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(f"{expression[:80]!r} threw: "
                               f"{details.get('exception', {}).get('description') or details.get('text')}")
        return answer.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 120.0, interval: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy; its value. The timeout only keeps a test from hanging."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: Any = None
        while True:
            last = await self.evaluate(expression)
            if last:
                return last
            if asyncio.get_running_loop().time() > deadline:
                raise BrowserError(f"{expression[:120]!r} still false after {timeout:.0f} s "
                                   f"(last value {last!r}; page problems: {self.problems[-5:]})")
            await asyncio.sleep(interval)

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scrollable page unless ``full_page`` is False)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        answer = await self.send("Page.captureScreenshot", params, timeout=120)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(answer["data"]))
        return path

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})
        self.browser._pages.pop(self.session_id, None)


class _Launch:
    """The async context manager returned by ``HeadlessChromium.launch``."""

    def __init__(self, work_dir: Path | None, executable: str | None, start_timeout: float) -> None:
        self.args = (work_dir, executable, start_timeout)
        self.browser: HeadlessChromium | None = None

    async def __aenter__(self) -> HeadlessChromium:
        work_dir, executable, start_timeout = self.args
        self.browser = await HeadlessChromium.start(work_dir, executable=executable, start_timeout=start_timeout)
        return self.browser

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.browser is not None:
            await self.browser.close()


async def _drain_stderr(process: asyncio.subprocess.Process, tail: collections.deque[str],
                        found: asyncio.Future[str]) -> None:
    """Read Chromium's stderr to the end (a full pipe would block it); report the DevTools URL."""
    assert process.stderr is not None
    while True:
        line = await process.stderr.readline()
        if not line:
            break
        text = line.decode(errors="replace").rstrip()
        tail.append(text)
        match = DEVTOOLS_LINE.search(text)
        if match and not found.done():
            found.set_result(match.group(1))
    if not found.done():
        found.set_exception(EOFError("Chromium exited before printing its DevTools address"))


async def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to Chromium's process group, SIGKILL if it lingers; its helpers go with it."""
    if process.returncode is not None:
        _signal_group(process.pid, signal.SIGKILL)  # leftover helpers, if any
        return
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 10)
    except asyncio.TimeoutError:
        pass
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
