"""The dashboard's files are served without the token; the API behind them still needs it."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from supervisor.api import create_app
from supervisor.dashboard_routes import ASSETS, DASHBOARD_DIR

TOKEN = "s3cret-token-for-tests"


def _fake_service(token: str | None) -> SimpleNamespace:
    """Just what ``create_app`` reads; the routes tried here never reach the service."""
    http = SimpleNamespace(token=token, max_body_bytes=65536)
    return SimpleNamespace(settings=SimpleNamespace(http=http))


async def _fetch_all(token: str | None) -> dict[str, tuple[int, dict[str, str], bytes]]:
    client = TestClient(TestServer(create_app(_fake_service(token))))  # type: ignore[arg-type]
    await client.start_server()
    try:
        answers = {}
        for path in [*ASSETS, "/v1/instances", "/dashboard/../api.py", "/dashboard/index.html"]:
            response = await client.get(path)
            answers[path] = (response.status, dict(response.headers), await response.read())
        return answers
    finally:
        await client.close()


def test_page_and_assets_are_public_but_the_api_is_not() -> None:
    answers = asyncio.run(_fetch_all(TOKEN))
    for path, (name, content_type) in ASSETS.items():
        status, headers, body = answers[path]
        assert status == 200, path
        assert headers["Content-Type"].startswith(content_type)
        assert body == (DASHBOARD_DIR / name).read_bytes()
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
    assert answers["/v1/instances"][0] == 401


TRAVERSALS = ("/dashboard/../api.py", "/dashboard/%2e%2e/api.py", "/dashboard/..%2fapi.py",
              "/dashboard/index.html", "/dashboard/", "/dashboard/dashboard.js/../../api.py")


async def _fetch_raw(paths: tuple[str, ...]) -> dict[str, tuple[int, bytes]]:
    """Without a token, so a 401 cannot hide whether the file would have been served."""
    client = TestClient(TestServer(create_app(_fake_service(None))))  # type: ignore[arg-type]
    await client.start_server()
    try:
        answers = {}
        for path in paths:
            response = await client.get(URL(path, encoded=True))
            answers[path] = (response.status, await response.read())
        return answers
    finally:
        await client.close()


def test_only_the_listed_files_are_served_nothing_beside_them() -> None:
    source = (DASHBOARD_DIR.parent / "api.py").read_bytes()
    for path, (status, body) in asyncio.run(_fetch_raw(TRAVERSALS)).items():
        assert status == 404, (path, status)
        assert source[:200] not in body and b"<html" not in body, path


def test_page_references_only_its_own_files() -> None:
    """Offline machines: no CDN, no external fonts, no inline script (the CSP forbids it)."""
    html = (DASHBOARD_DIR / "index.html").read_text()
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = (DASHBOARD_DIR / name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        assert "@import" not in text and "@font-face" not in text, name
    assert re.findall(r'<script src="([^"]+)"', html) == ["/dashboard/dashboard.js"]
    assert "<script>" not in html and " style=" not in html
    script = (DASHBOARD_DIR / "dashboard.js").read_text()
    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", script)
