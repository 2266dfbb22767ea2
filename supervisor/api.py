"""The HTTP API (aiohttp.web), versioned under ``/v1``; ``supervisor/openapi.yaml`` describes it.

Every error is JSON ``{"error": {"code", "message", "field"?}}``. With a token configured, every
route but ``/healthz`` needs ``Authorization: Bearer <token>``. Job ids are checked to be UUIDs
before the store is asked and before any file path is built; image paths come from the store only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from .dashboard_routes import DASHBOARD_PATHS, add_dashboard_routes
from .job_request import FieldError, valid_idempotency_key, valid_job_id
from .job_store import STATES, TERMINAL_STATES, IdempotencyConflict, Job, StoreUnavailable
from .service import JobService, ServiceUnavailable
from .settings import NAME_PATTERN

log = logging.getLogger("supervisor.api")

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
SERVICE_KEY = web.AppKey("service", JobService)
OPENAPI_KEY = web.AppKey("openapi", dict)
OPENAPI_TEXT_KEY = web.AppKey("openapi_text", str)
PUBLIC_PATHS = frozenset({"/healthz", *DASHBOARD_PATHS})  # the dashboard page holds no data
DECODED_ENCODINGS = frozenset({"identity", "gzip", "deflate"})  # what aiohttp decodes here (no brotli)
SSE_BATCH_S = 0.05  # how long an event that is not final waits to share its write with the next ones
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SMALL_INT = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() also accepts '²', '٣'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413…) as JSON too, and never a traceback to the client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except StoreUnavailable as exc:  # the pool reconnects by itself; the client tries again
        log.warning("%s %s: %s", request.method, request.path, exc)
        response = error_response(503, "database_unavailable", "the job database is unreachable right now; "
                                  "try again shortly")
        response.headers["Retry-After"] = "5"
        return response
    except RequestPayloadError as exc:  # the body does not match its Content-Encoding or chunked framing
        log.warning("unreadable body on %s %s (%s)", request.method, request.path,
                    type(exc.__cause__).__name__)
        return error_response(400, "unreadable_body", "the request body could not be decoded "
                              "(does it match its Content-Encoding and Transfer-Encoding?)", field="body")
    except ConnectionError:  # the client hung up (an event stream closed, a body half sent): normal
        log.debug("client hung up during %s %s", request.method, request.path)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error (see the supervisor's log)")


def token_auth(token: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode() if token else b""

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path not in PUBLIC_PATHS:
            # aiohttp keeps undecodable header bytes as surrogates: encode them back, never raise
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                response = error_response(401, "unauthorized", "missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="cute-animal-kids"'
                return response
        return await handler(request)

    return check_token


def create_app(service: JobService) -> web.Application:
    http = service.settings.http
    app = web.Application(middlewares=[json_errors, token_auth(http.token)],
                          client_max_size=http.max_body_bytes)
    app[SERVICE_KEY] = service
    openapi_text = OPENAPI_FILE.read_text()  # read once: handlers never touch the disk for it
    app[OPENAPI_TEXT_KEY] = openapi_text
    app[OPENAPI_KEY] = yaml.safe_load(openapi_text)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.yaml", openapi_yaml)
    app.router.add_get("/v1/openapi.json", openapi_json)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_delete("/v1/jobs/{job_id}", cancel_job)
    app.router.add_get("/v1/jobs/{job_id}/images/{index}", get_image)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)
    app.router.add_get("/v1/instances", list_instances)
    app.router.add_get("/v1/hosts", list_hosts)
    app.router.add_post("/v1/instances/{name}/restart", restart_instance)
    app.router.add_post("/v1/instances/{name}/drain", drain_instance)
    add_dashboard_routes(app)
    return app


# ---------------------------------------------------------------------- health, metrics, docs


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    ready = service.ready_instances()
    ok = ready > 0 and service.accepting
    return web.json_response({"ready": ok, "instances_ready": ready, "accepting": service.accepting},
                             status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    service.metrics.set_job_counts(await service.store.counts())
    return web.Response(body=service.metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi_yaml(request: web.Request) -> web.Response:
    return web.Response(text=request.app[OPENAPI_TEXT_KEY], content_type="application/yaml")


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


# ---------------------------------------------------------------------- jobs


async def submit_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    key = request.headers.get("Idempotency-Key")
    if key is not None and not valid_idempotency_key(key):
        return error_response(422, "invalid_field", "1-128 visible ASCII characters",
                              field="Idempotency-Key")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in DECODED_ENCODINGS:
        return error_response(415, "unsupported_encoding", "Content-Encoding must be one of "
                              f"{', '.join(sorted(DECODED_ENCODINGS))}", field="Content-Encoding")
    raw = await request.read()  # client_max_size answers 413 beyond the limit
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "invalid_json", "the body is not valid JSON", field="body")
    except RecursionError:
        return error_response(400, "invalid_json", "the body's JSON is nested too deeply", field="body")
    try:
        submitted = await service.submit(body, key)
    except FieldError as exc:
        return error_response(422, "invalid_field", exc.reason, field=exc.field)
    except IdempotencyConflict as exc:
        return error_response(409, "idempotency_conflict", str(exc), job_id=exc.job_id)
    except ServiceUnavailable as exc:
        return error_response(503, "unavailable", str(exc))
    job = submitted.job
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not submitted.created:
        headers["Idempotent-Replayed"] = "true"
    if submitted.unsafe is not None:
        return web.json_response(
            {"error": {"code": "unsafe_prompt", "message": job.error, "category": job.category},
             "job": job_json(service, job)}, status=422, headers=headers)
    return web.json_response(job_json(service, job), status=202, headers=headers)


async def list_jobs(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    state = request.query.get("state")
    if state is not None and state not in STATES:
        return error_response(422, "invalid_field", f"must be one of {', '.join(STATES)}", field="state")
    limit_text = request.query.get("limit", "50")
    if not SMALL_INT.fullmatch(limit_text) or not 1 <= int(limit_text) <= service.settings.http.list_limit:
        return error_response(422, "invalid_field", f"must be 1-{service.settings.http.list_limit}",
                              field="limit")
    jobs = await service.store.list(state, int(limit_text))
    return web.json_response({"jobs": [job_json(service, job) for job in jobs]})


def _job_id_or_error(request: web.Request) -> str | web.Response:
    job_id = request.match_info["job_id"]
    if not valid_job_id(job_id):
        return error_response(400, "invalid_id", "job ids are lowercase UUIDs", field="job_id")
    return job_id


def _not_found(job_id: str) -> web.Response:
    return error_response(404, "not_found", f"no job {job_id}")


async def _job_or_error(request: web.Request) -> Job | web.Response:
    job_id = _job_id_or_error(request)
    if isinstance(job_id, web.Response):
        return job_id
    job = await request.app[SERVICE_KEY].store.get(job_id)
    return _not_found(job_id) if job is None else job


async def get_job(request: web.Request) -> web.Response:
    job = await _job_or_error(request)
    if isinstance(job, web.Response):
        return job
    return web.json_response(job_json(request.app[SERVICE_KEY], job))


async def cancel_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    job = await _job_or_error(request)
    if isinstance(job, web.Response):
        return job
    if job.terminal:
        return error_response(409, "already_finished", f"the job is already {job.state}", state=job.state)
    job = await service.store.cancel(job.id) or job
    if job.state == "running":
        await service.dispatcher.cancel(job.id)
    else:
        service.events.state(job.id, job.state)
    return web.json_response(job_json(service, job), status=202)


async def get_image(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    job = await _job_or_error(request)
    if isinstance(job, web.Response):
        return job
    index_text = request.match_info["index"]
    if not SMALL_INT.fullmatch(index_text) or int(index_text) >= len(job.images):
        return error_response(404, "not_found", f"job {job.id} has {len(job.images)} image(s)", field="index")
    name = job.images[int(index_text)].rpartition("/")[2]
    data = await service.store.read_image(job.id, name)
    if data is None:
        return error_response(404, "not_found", "the image file is gone")
    return web.Response(body=data, content_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                        headers={"Cache-Control": "private, max-age=86400"})


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the current state, progress while it runs, the final state; then it ends."""
    service = request.app[SERVICE_KEY]
    job_id = _job_id_or_error(request)
    if isinstance(job_id, web.Response):
        return job_id
    with service.events.listen(job_id) as queue:
        # One read, after subscribing: no change can slip between it and the stream.
        job = await service.store.get(job_id)
        if job is None:
            return _not_found(job_id)
        chunks = [_event_bytes("state", {"type": "state", "state": job.state, "error": job.error,
                                         "category": job.category})]
        progress = service.events.progress(job.id) or (job.progress if job.state == "running" else None)
        if progress is not None:
            chunks.append(_event_bytes("progress", progress))
        # Events that are not final wait up to SSE_BATCH_S for the next ones (a short job's come in
        # a rush) and go out in one write; a final state goes at once, with the end of the stream.
        if job.terminal or await _more_events(queue, chunks, SSE_BATCH_S):
            # Over before anything was sent: the whole stream in one answer (one write, not a
            # write for the headers and one for the events).
            return web.Response(body=b"".join(chunks), headers=SSE_HEADERS)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        keepalive = service.settings.http.sse_keepalive_s
        while True:
            await response.write(b"".join(chunks))
            event = await _next_event(queue, keepalive, response, service, job_id)
            if event is None:  # the stored state was final (a notification was missed): ended
                return response
            chunks = [_event_bytes(event["type"], event)]
            if _is_final(event) or await _more_events(queue, chunks, SSE_BATCH_S):
                await response.write_eof(b"".join(chunks))
                return response


async def _next_event(queue: asyncio.Queue[dict[str, Any]], keepalive: float, response: web.StreamResponse,
                      service: JobService, job_id: str) -> dict[str, Any] | None:
    """The next event; a comment line every ``keepalive`` s meanwhile. None once the stored state,
    read at each keep-alive (a notification missed during an outage), was final: sent, stream ended."""
    while True:
        try:
            async with asyncio.timeout(keepalive):
                return await queue.get()
        except TimeoutError:
            await response.write(b": keep-alive\n\n")
        try:
            latest = await service.store.get(job_id)
        except StoreUnavailable:
            continue
        if latest is not None and latest.terminal:
            await response.write_eof(_event_bytes("state", {"type": "state", "state": latest.state,
                                                            "error": latest.error, "category": latest.category}))
            return None


async def _more_events(queue: asyncio.Queue[dict[str, Any]], chunks: list[bytes], window: float) -> bool:
    """Add to ``chunks`` the events that arrive within ``window`` s; True as soon as one is final."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    while True:
        if queue.empty():
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                async with asyncio.timeout(left):
                    event = await queue.get()
            except TimeoutError:
                return False
        else:
            event = queue.get_nowait()
        chunks.append(_event_bytes(event["type"], event))
        if _is_final(event):
            return True


def _is_final(event: dict[str, Any]) -> bool:
    return event["type"] == "state" and event["state"] in TERMINAL_STATES


def _event_bytes(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def job_json(service: JobService, job: Job) -> dict[str, Any]:
    request = dict(job.request)
    request.pop("graph", None)
    base = f"/v1/jobs/{job.id}"
    return {
        "id": job.id,
        "state": job.state,
        "status_url": base,
        "events_url": f"{base}/events",
        "request": request,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": (service.events.progress(job.id) or job.progress) if job.state == "running" else None,
        "attempts": [attempt.to_json() for attempt in job.attempts],
        "error": job.error,
        "category": job.category,
        "images": [f"{base}/images/{index}" for index in range(len(job.images))],
        "webhook": job.webhook.to_json() if job.webhook else None,
    }


# ---------------------------------------------------------------------- instances


async def list_instances(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    counts = await service.store.counts()
    return web.json_response({"instances": service.instances_json(), "queue_depth": counts["queued"],
                              "running_jobs": counts["running"]})


async def list_hosts(request: web.Request) -> web.Response:
    """The supervisors sharing the queue whose heartbeat is recent (one, with SQLite)."""
    service = request.app[SERVICE_KEY]
    counts = await service.store.counts()
    hosts = [{**host.to_json(), "self": host.name == service.store.name} for host in await service.store.hosts()]
    return web.json_response({"hosts": hosts, "queue_depth": counts["queued"], "running_jobs": counts["running"]})


async def _instance_action(request: web.Request, action: str) -> web.Response:
    service = request.app[SERVICE_KEY]
    name = request.match_info["name"]
    if not NAME_PATTERN.match(name):
        return error_response(400, "invalid_name", "instance names are letters, digits, '.', '_', '-'",
                              field="name")
    if name not in {snap.name for snap in service.pool.snapshot()}:
        return error_response(404, "not_found", f"no instance {name}")
    if action == "restart":
        service.in_background(service.pool.restart(name, reason="request"), f"restart {name}")
    else:
        service.in_background(service.pool.drain(name), f"drain {name}")
    log.info("%s requested", action, extra={"instance": name})
    return web.json_response({"instance": name, "action": action, "accepted": True}, status=202)


async def restart_instance(request: web.Request) -> web.Response:
    return await _instance_action(request, "restart")


async def drain_instance(request: web.Request) -> web.Response:
    return await _instance_action(request, "drain")
