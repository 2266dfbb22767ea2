"""The web editor through the ComfyUI door: what only an instance can serve, passed through to one.

ComfyUI's frontend (the ``comfyui-frontend-package`` files an instance serves at ``/``) needs more
than the API the door implements itself: its static files, ``/extensions`` (the pack's JavaScript),
``/i18n``, ``/settings``, ``/userdata``, ``/users``, templates. Those requests are streamed to one
READY instance and back; which ones may pass is data (``comfy_door_editor.yaml``). The door's own
routes (``/prompt``, ``/queue``, ``/history``, ``/view``, ``/ws`` ...) never come here, so queueing
from the editor runs on the pool and every image the editor shows comes from the door's gated
``/view``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

log = logging.getLogger("supervisor.comfy_door")

POLICY_FILE = Path(__file__).with_name("comfy_door_editor.yaml")
CHUNK = 1 << 16
# RFC 9110 hop-by-hop fields, never forwarded by a proxy.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade"})
# The door's credentials stay at the door; Origin/Referer/Host name the door, which an instance's
# own same-origin check would refuse (ComfyUI answers 403 when Origin and Host differ).
REQUEST_DROPPED = HOP_BY_HOP | {"host", "authorization", "cookie", "origin", "referer"}
RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie"}
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class PassPolicy:
    """Which requests the door passes through: GET/HEAD unless ``refused``, others only ``writable``."""

    refused: tuple[str, ...]
    writable: tuple[str, ...]

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> PassPolicy:
        data = yaml.safe_load(path.read_text())
        return cls(refused=tuple(data["refused"]), writable=tuple(data["writable"]))

    def refusal(self, method: str, path: str) -> int | None:
        """None when the request may pass; else the status to answer (404 refused, 405 method)."""
        path = unprefixed(path)
        if _under(path, self.refused):
            return 404
        if method.upper() not in READ_METHODS and not _under(path, self.writable):
            return 405
        return None


def unprefixed(path: str) -> str:
    """The path without ComfyUI's ``/api`` prefix (every ComfyUI route is served with and without)."""
    if path == "/api" or path.startswith("/api/"):
        return path[4:] or "/"
    return path


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


class EditorProxy:
    """Streams a request to one READY instance and its answer back (bodies not buffered, encodings
    kept as sent: the session does not decompress)."""

    def __init__(self, ready_instance: Callable[[], Any], policy: PassPolicy,
                 before_send: Callable[[web.Request, web.StreamResponse], None]) -> None:
        self.ready_instance = ready_instance
        self.policy = policy
        self.before_send = before_send  # the door's last word on headers (its token cookie)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(auto_decompress=False, timeout=TIMEOUT)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        status = self.policy.refusal(request.method, request.path)
        if status is not None:
            return _error(status, "not_passed_through", f"{request.method} {request.path} is not served by "
                                                        "the pool's ComfyUI door")
        instance = self.ready_instance()
        if instance is None or self.session is None:
            return _error(503, "unavailable", "no ComfyUI instance of the pool is ready yet: try again shortly")
        headers = CIMultiDict((key, value) for key, value in request.headers.items()
                              if key.lower() not in REQUEST_DROPPED)
        body = request.content if request.body_exists else None
        url = URL(instance.url + request.raw_path, encoded=True)
        response: web.StreamResponse | None = None
        try:
            async with self.session.request(request.method, url, headers=headers, data=body,
                                            allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in RESPONSE_DROPPED:
                        response.headers.add(key, value)
                self.before_send(request, response)
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("passing %s %s to %s failed: %s", request.method, request.path, instance.name,
                        exc.__class__.__name__)
            if response is not None and response.prepared:
                raise ConnectionResetError("the instance went away mid-answer") from exc
            return _error(502, "bad_gateway", "the ComfyUI instance did not answer: try again")


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message, "details": "", "extra_info": {}}},
                             status=status)
