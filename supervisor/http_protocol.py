"""Errors aiohttp raises before any handler runs, answered as the API's JSON error.

aiohttp's HTTP parser (bad request line, bad ``Content-Length``, control characters in a header,
over-long lines) calls ``RequestHandler.handle_error``, which answers ``text/plain`` echoing part of
the request and logs an ERROR traceback through ``aiohttp.server`` whose exception text may quote a
header line, the bearer token included. This handler answers the documented
``{"error": {"code", "message"}}`` instead and logs one WARNING line naming only the error's kind
(never its text, which quotes the request). A client that hung up is normal: DEBUG, no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

log = logging.getLogger("supervisor.http")

CODES = {400: "bad_request", 413: "body_too_large", 414: "uri_too_long", 431: "headers_too_large",
         500: "internal_error", 504: "timeout"}


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with its error page replaced by the JSON error."""

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            log.debug("client hung up (%s)", type(exc).__name__)
            raise ConnectionError("the client hung up")  # aiohttp drops the connection quietly
        if request.writer.output_size > 0:  # a stream already started: no error can follow it
            log.debug("error after the response started (%s)", type(exc).__name__)
            raise ConnectionError("the response has already started")
        kind = type(exc).__name__ if exc is not None else HTTPStatus(status).phrase
        if status >= 500:
            log.error("internal error answering %s (%s)", request.remote, kind)
            text = "internal error (see the supervisor's log)"
        else:
            log.warning("malformed HTTP request from %s answered %d (%s)", request.remote, status, kind)
            text = f"the request is not valid HTTP/1.1 ({kind})"
        body = {"error": {"code": CODES.get(status, "http_error"), "message": text}}
        response = web.Response(status=status, text=json.dumps(body), content_type="application/json")
        response.force_close()
        return response


    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's other tracebacks (e.g. reading the rest of a body that failed to decode): one line."""
        exc = kwargs.get("exc_info")
        kind = type(exc).__name__ if isinstance(exc, BaseException) else "no exception"
        if isinstance(exc, (HttpProcessingError, RequestPayloadError, ConnectionError)):
            log.debug("%s (%s)", args[0] if args else "error", kind)  # the client's fault, already answered
        else:
            log.error("%s in aiohttp's connection handling (%s)", args[0] if args else "error", kind)


class JsonErrorServer(web.Server):
    """``web.Server`` that builds ``JsonErrorRequestHandler`` connections."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` serving the app through ``JsonErrorServer``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's startup, as AppRunner does
        return JsonErrorServer(server.request_handler, request_factory=server.request_factory,
                               handler_cancellation=server.handler_cancellation,
                               loop=asyncio.get_running_loop(), **server._kwargs)  # access log, debug
