"""The operator dashboard: three static files served at ``/`` and ``/dashboard/…``.

The page and its script and stylesheet are public even when a token is set (they hold no data):
the operator has to reach the page to type the token in. Everything the page shows comes from
the token-protected API (``/v1/instances``, ``/v1/jobs``, ``/v1/jobs/{id}/images/{n}``), which the
script calls with ``Authorization: Bearer <token>``. docs/operations.md describes the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

DASHBOARD_DIR = Path(__file__).with_name("dashboard")
# URL path → (file, content type). Nothing else under dashboard/ is ever served.
ASSETS: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css"),
}
# Reachable without the token (api.py adds them to its public paths).
DASHBOARD_PATHS = frozenset(ASSETS)
# Same-origin only; thumbnails are blob: URLs made from authorised fetches.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def add_dashboard_routes(app: web.Application) -> None:
    """Register ``GET /`` (the page) and its script and stylesheet on ``app``.

    The files are read here, once (a few kilobytes), so no request touches the disk.
    """
    for path, (name, content_type) in ASSETS.items():
        app.router.add_get(path, _asset_handler((DASHBOARD_DIR / name).read_bytes(), content_type))


def _asset_handler(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers=SECURITY_HEADERS)
    return serve
