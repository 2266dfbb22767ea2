"""The command line's way to a running job service: its HTTP API, nothing else.

(ComfyUI itself is only ever spoken to by ``cak.comfy_client``, inside the service.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .command import supervisor_command


class ServiceError(Exception):
    """The service answered with an error (``status``, ``body``) or could not be reached."""

    def __init__(self, message: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


class ServiceClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_read=None))
        self._timeout = timeout

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 202)) -> dict[str, Any]:
        try:
            async with self._session.request(method, self.url + path, json=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=self._timeout)) as response:
                text = await response.text()
                try:
                    data = json.loads(text) if text else {}
                except ValueError:
                    data = {"error": {"message": text[:200]}}
                if response.status not in ok:
                    message = data.get("error", {}).get("message", response.reason)
                    field = data.get("error", {}).get("field")
                    raise ServiceError(f"{response.status}: {field + ': ' if field else ''}{message}",
                                       response.status, data)
                return data
        except aiohttp.ClientConnectionError as exc:
            raise ServiceError(f"cannot reach the service at {self.url} ({exc}); is "
                               f"`{supervisor_command()} up` running?") from None

    async def download(self, path: str) -> bytes:
        try:
            async with self._session.get(self.url + path) as response:
                if response.status != 200:
                    raise ServiceError(f"{response.status} for {path}", response.status)
                return await response.read()
        except aiohttp.ClientConnectionError as exc:
            raise ServiceError(f"cannot reach the service at {self.url} ({exc})") from None

    async def events(self, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """A job's server-sent events as ``(name, data)`` until the stream ends."""
        async with self._session.get(f"{self.url}/v1/jobs/{job_id}/events") as response:
            if response.status != 200:
                raise ServiceError(f"{response.status} for the events of job {job_id}", response.status)
            name, data = "message", ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    yield name, json.loads(data)
                    name, data = "message", ""
