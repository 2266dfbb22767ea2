"""The ComfyUI door: ComfyUI's own HTTP + websocket API on the pool, on a port of its own.

An unmodified ComfyUI client (its example scripts, SDKs, studio tools) points at this port and
gets the pool: every prompt is checked (ComfyUI's validation against the pool's ``/object_info``,
the node deny list, the child-safety text check on every text input) before it becomes a durable
job (``request: {"kind": "graph", "source": "comfy_api", ...}``, visible in ``/v1/jobs``), runs on
any READY instance, is retried on a lost instance under the same ``prompt_id``, and every image it
returns has passed the supervisor's own image gate. ``docs/comfy_api.md`` lists every route and
what differs from one ComfyUI.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cute_animal_kids.text_safety import check_text

from cak.errors import UnsafeContent
from cak.events import RunResult
from cak.object_info import ObjectInfo

from .comfy_door_editor import EditorProxy, PassPolicy
from .comfy_door_graph import (
    GATE_NODE_TYPE,
    GraphRefused,
    NodeRules,
    check_prompt,
    check_texts,
    comfy_error,
    graph_to_run,
    output_kinds,
    public_extra_data,
    queue_item,
)
from .comfy_door_history import FILE_NAME as HIDDEN_FILE
from .comfy_door_history import HiddenHistory
from .comfy_door_ws import DoorSockets, EventRelay, Followed, json_frame, now_ms, png_frame
from .dispatcher import JobInstance, _write_file
from .job_request import valid_job_id
from .job_store import (
    CANCELLED,
    QUEUED,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATES,
    IdempotencyConflict,
    Job,
    QueueFull,
)
from .pool import InstanceLost
from .service import JobService
from .settings import MAX_HISTORY_LIMIT, ComfyApiSettings

log = logging.getLogger("supervisor.comfy_door")

SOURCE = "comfy_api"
KIND = "graph"
OUTPUTS_FILE = "outputs.json"
MAX_PROMPT_ID = 100
MAX_HISTORY_OFFSET = 1_000_000_000
ASCII_DIGITS = re.compile(r"[0-9]{1,30}")
PASSED_THROUGH = ("/object_info", "/object_info/{node_class}", "/system_stats", "/embeddings", "/models",
                  "/models/{folder}", "/features")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DOOR_KEY = web.AppKey("comfy_door", object)
# The editor's session: a browser cannot add a header to its page loads, so the page that was
# opened with the token (any form) sets this cookie, holding an HMAC of the token, not the token.
COOKIE = "cak_comfy_door"


def job_id_for(prompt_id: str) -> str:
    """The job id of a prompt id: the id itself when it is a UUID (``/v1/jobs/{prompt_id}`` works),
    else a UUID derived from it, so a repeated prompt id always names the same job."""
    return prompt_id if valid_job_id(prompt_id) else str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SOURCE}:{prompt_id}"))


class ImageGate:
    """The pack's NSFW classifier run in the supervisor on a finished PNG (blocking: use a thread)."""

    def __init__(self, threshold: float | None, action: str) -> None:
        if threshold is None:
            from cute_animal_kids.pack_data import load_data_file

            threshold = float(load_data_file("image_safety.yaml")["threshold"])
        self.threshold = threshold
        self.action = action

    def load(self) -> None:
        from cute_animal_kids.image_classifier import shared_classifier

        shared_classifier().load()

    def check(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to return, unsafe?); an unsafe image becomes the placeholder (``replace``) or
        nothing (``block``). ``ImageClassifierUnavailable`` when the model cannot run: fail closed."""
        import numpy as np
        import torch
        from cute_animal_kids.image_classifier import shared_classifier
        from cute_animal_kids.placeholder_image import placeholder_pil
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
        score = shared_classifier().score(torch.from_numpy(rgb).float().div_(255.0).unsqueeze(0))[0]
        if score < self.threshold:
            return data, False
        if self.action == "block":
            return b"", True
        buffer = io.BytesIO()
        placeholder_pil(rgb.shape[1], rgb.shape[0]).save(buffer, format="PNG")
        return buffer.getvalue(), True


class DoorGraphs:
    """The dispatcher's handler of ``kind: graph`` jobs (``dispatcher.RequestKind``)."""

    def __init__(self, service: JobService, gate: ImageGate) -> None:
        self.service = service
        self.gate = gate

    def graph(self, request: dict[str, Any]) -> dict[str, Any]:
        return graph_to_run(request["graph"])

    async def stage(self, instance: JobInstance, job: Job, attempt: int, result: RunResult) -> list[str]:
        """Download, gate and stage every image; ``outputs.json`` says which node made which."""
        store = self.service.store
        folder = store.staging_dir(job.id, attempt)
        client = instance.client
        if client is None:
            raise InstanceLost("crash", instance.name)
        kinds = output_kinds(job.request["graph"])
        outputs: dict[str, Any] = {}
        names: list[str] = []
        for image in result.images:
            data = await client.download(image)
            kept, unsafe = await asyncio.to_thread(self.gate.check, data)
            if unsafe:
                self.service.metrics.safety_rejections.labels("image", "nsfw").inc()
                log.info("image %s of node %s judged unsafe: %s", len(names), image.node_id,
                         "replaced" if kept else "refused", extra={"job_id": job.id})
                if not kept:
                    raise UnsafeContent(job.id, image.node_id, GATE_NODE_TYPE, "UnsafeImageError",
                                        "the image was judged unsafe for children (category: nsfw)")
            name = f"{len(names)}.png"
            await asyncio.to_thread(_write_file, folder / name, kept)
            names.append(name)
            outputs.setdefault(image.node_id, {"images": []})["images"].append(
                {"filename": name, "type": kinds.get(image.node_id, "output")})
        await asyncio.to_thread(_write_file, folder / OUTPUTS_FILE, json.dumps(outputs).encode())
        return names


class ComfyDoor:
    def __init__(self, service: JobService, config: ComfyApiSettings, token: str | None) -> None:
        self.service = service
        self.config = config
        self.token = token
        self.rules = NodeRules(deny=config.deny_nodes, allow=config.allow_nodes)
        self.gate = ImageGate(config.image_gate.threshold, config.image_gate.action)
        self.sockets = DoorSockets(self.queue_remaining)
        self.relay = EventRelay(self.sockets, self._lookup, self._finished_frames)
        self.hidden = HiddenHistory(service.settings.jobs.images_dir / HIDDEN_FILE)  # what POST /history removed
        self._object_info: tuple[float, ObjectInfo, dict[str, Any]] | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.editor = (EditorProxy(self._ready_instance, PassPolicy.load(), self._editor_cookie)
                       if config.editor else None)
        service.dispatcher.kinds[KIND] = DoorGraphs(service, self.gate)
        service.events.taps.append(self.relay.tap)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on the door's port (``OSError`` when it cannot) and start relaying events."""
        await asyncio.to_thread(self.hidden.load)
        if self.editor is not None:
            await self.editor.start()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = self._runner.addresses[0][1]
        self.relay.start()
        self.service.in_background(asyncio.to_thread(self.gate.load), "load the image gate")

    async def stop(self) -> None:
        await self.sockets.close()
        await self.relay.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.editor is not None:
            await self.editor.close()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth],
                              client_max_size=max(self.service.settings.http.max_body_bytes, 4 << 20))
        app[DOOR_KEY] = self
        routes = [
            ("POST", "/prompt", self.post_prompt), ("GET", "/prompt", self.get_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("GET", "/history", self.get_history), ("GET", "/history/{prompt_id}", self.get_history_one),
            ("POST", "/history", self.post_history), ("GET", "/view", self.view),
            ("GET", "/ws", self.sockets.handle),
            ("POST", "/upload/image", _no_uploads), ("POST", "/upload/mask", _no_uploads),
            *[("GET", path, self.pass_through) for path in PASSED_THROUGH],
        ]
        for method, path, handler in routes:
            for prefix in ("", "/api"):
                app.router.add_route(method, prefix + path, handler)
        for path in dict.fromkeys(path for _, path, _ in routes):  # the door's paths never pass through
            for prefix in ("", "/api"):
                app.router.add_route("*", prefix + path, _method_not_allowed)
        if self.editor is not None:
            app.router.add_route("*", "/{tail:.*}", self.editor.handle)
        return app

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return web.json_response({"error": comfy_error("internal_error", "internal error (see the "
                                                                             "supervisor's log)")}, status=500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The job service's token, as ``Authorization: Bearer``, as HTTP Basic (URL ``user:token@``
        or ``token@``: either part may hold it), or ``?token=`` (clients that can only set a URL)."""
        if self.token and not self._authorised(request):
            return web.json_response({"error": comfy_error("unauthorized", "missing or wrong token")},
                                     status=401, headers={"WWW-Authenticate": 'Basic realm="cute-animal-kids"'})
        return await handler(request)

    def _authorised(self, request: web.Request) -> bool:
        expected = (self.token or "").encode()
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._cookie_value().encode()):
            return True
        given: list[bytes] = [request.query.get("token", "").encode()]
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given.append(value.strip().encode())
        elif scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            except (binascii.Error, ValueError):
                user = password = b""
            given += [user, password]
        return any(hmac.compare_digest(candidate, expected) for candidate in given if candidate)

    def _cookie_value(self) -> str:
        return hmac.new((self.token or "").encode(), b"cute-animal-kids comfy door editor", "sha256").hexdigest()

    def _editor_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        """The editor's page, opened with the token, leaves the cookie its later requests carry."""
        if self.token and request.path in ("/", "/index.html") \
                and request.cookies.get(COOKIE) != self._cookie_value():
            response.set_cookie(COOKIE, self._cookie_value(), httponly=True, samesite="Strict", path="/")

    # ------------------------------------------------------------------ prompts

    async def post_prompt(self, request: web.Request) -> web.Response:
        service = self.service
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _refused(comfy_error("invalid_prompt", "The body is not valid JSON."))
        if not isinstance(body, dict) or "prompt" not in body:
            return _refused(comfy_error("no_prompt", "No prompt provided", "No prompt provided"))
        if not service.accepting:
            return _unavailable("the pool takes no new prompts right now (starting or shutting down)")
        prompt_id = body.get("prompt_id")
        prompt_id = str(uuid.uuid4()) if prompt_id is None else str(prompt_id)
        if not 1 <= len(prompt_id) <= MAX_PROMPT_ID or not prompt_id.isprintable() or " " in prompt_id:
            return _refused(comfy_error("invalid_prompt", f"prompt_id must be 1-{MAX_PROMPT_ID} visible "
                                                          "characters"))
        client_id = body.get("client_id")
        client_id = None if client_id is None else str(client_id)
        object_info = await self.object_info()
        if object_info is None:
            return _unavailable("no ComfyUI instance of the pool is ready yet: try again shortly")
        prompt = body["prompt"]
        try:
            outputs = check_prompt(prompt, object_info, self.rules)
        except GraphRefused as exc:
            return web.json_response(exc.body, status=400)
        extra = public_extra_data(body.get("extra_data"))
        if client_id is not None:
            extra["client_id"] = client_id
        stored: dict[str, Any] = {"kind": KIND, "source": SOURCE, "workflow": KIND, "graph": prompt,
                                  "prompt_id": prompt_id, "client_id": client_id, "extra_data": extra,
                                  "outputs_to_execute": outputs}
        job_id, key = job_id_for(prompt_id), f"{SOURCE}:{prompt_id}"
        try:
            check_texts(prompt, outputs, _text_verdict)
        except GraphRefused as exc:
            category = _first_category(exc.body["node_errors"])
            try:
                job, created = await service.store.submit(
                    stored, key, state=REJECTED, category=category, job_id=job_id,
                    error="a text input was judged unsafe for children")
            except IdempotencyConflict:
                created = False
            if created:
                service.metrics.safety_rejections.labels("prompt", category).inc()
                log.info("prompt rejected at the ComfyUI door (%s)", category, extra={"job_id": job_id})
            return web.json_response(exc.body, status=400)
        try:
            job, created = await service.store.submit(stored, key, job_id=job_id,
                                                      max_queued=service.settings.jobs.max_queue)
        except QueueFull:
            return _unavailable("the queue is full: try again later")
        except IdempotencyConflict:
            return _refused(comfy_error("invalid_prompt", f"prompt_id {prompt_id} is already used by "
                                                          "a different prompt"))
        if created:
            log.info("prompt queued through the ComfyUI door", extra={"job_id": job.id})
            self.relay.follow(job.id, Followed(prompt_id, client_id))
            self.relay.tap(job.id, "state", {"state": QUEUED})  # status to every socket, in order
            service.dispatcher.wake()
        elif job.state == REJECTED:
            return _refused(comfy_error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                        job.error or ""))
        return web.json_response({"prompt_id": prompt_id, "number": _number(job), "node_errors": {}})

    async def queue_remaining(self) -> int:
        counts = await self.service.store.counts()
        return counts[QUEUED] + counts[RUNNING]

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": await self.queue_remaining()}})

    async def get_queue(self, request: web.Request) -> web.Response:
        store = self.service.store
        claimed = await store.list_source(SOURCE, (RUNNING,), 10_000)
        queued = await store.list_source(SOURCE, (QUEUED,), 10_000)
        # A prefetched prompt waits in its ComfyUI's queue: pending, as one ComfyUI would show it.
        waiting = [job for job in claimed if self.service.dispatcher.waiting_in_comfy(job.id)]
        running = [job for job in claimed if job not in waiting]
        pending = sorted(waiting + queued, key=_number)
        return web.json_response({"queue_running": [_queue_entry(job) for job in reversed(running)],
                                  "queue_pending": [_queue_entry(job) for job in pending]})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        delete = _id_list(body)
        if delete is None:
            return _not_a_list()
        store = self.service.store
        targets: list[Job] = []
        if body.get("clear"):
            targets += await store.list_source(SOURCE, (QUEUED,), 10_000)
        dispatcher = self.service.dispatcher
        for prompt_id in delete:
            job = await self._door_job(str(prompt_id))
            if job is not None and (job.state == QUEUED or dispatcher.waiting_in_comfy(job.id)):
                targets.append(job)
        if body.get("clear"):
            targets += [job for job in await store.list_source(SOURCE, (RUNNING,), 10_000)
                        if dispatcher.waiting_in_comfy(job.id)]
        for job in targets:
            after = await store.cancel(job.id)
            if after is not None and after.state == CANCELLED:
                self.service.events.state(job.id, CANCELLED)
            elif dispatcher.waiting_in_comfy(job.id):
                await dispatcher.cancel(job.id)  # out of its ComfyUI's queue; it never runs
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        """With ``prompt_id``: that prompt, if it runs. Without: every running prompt of this door
        (a pool runs several at once; ComfyUI's global interrupt ends the one it runs)."""
        body = await _json_body(request)
        prompt_id = body.get("prompt_id")
        if prompt_id:
            job = await self._door_job(str(prompt_id))
            jobs = [job] if job is not None and job.state == RUNNING else []
        else:
            jobs = await self.service.store.list_source(SOURCE, (RUNNING,), 10_000)
        for job in jobs:
            await self.service.store.cancel(job.id)
            await self.service.dispatcher.cancel(job.id)
        return web.Response(status=200)

    # ------------------------------------------------------------------ history and files

    async def get_history(self, request: web.Request) -> web.Response:
        limit = _int_query(request, "max_items", MAX_HISTORY_LIMIT) or self.config.history_limit
        offset = _int_query(request, "offset", MAX_HISTORY_OFFSET) or 0
        jobs = await self.service.store.list_source(SOURCE, tuple(TERMINAL_STATES),
                                                    limit + offset + len(self.hidden.deleted))
        jobs = [job for job in jobs if not self._hidden(job)][offset:offset + limit]
        entries = {}
        for job in reversed(jobs):  # oldest first, like ComfyUI
            entries[job.request["prompt_id"]] = await self._history_entry(job)
        return web.json_response(entries)

    async def get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        job = await self._door_job(prompt_id)
        if job is None or not job.terminal or self._hidden(job):
            return web.json_response({})
        return web.json_response({prompt_id: await self._history_entry(job)})

    async def post_history(self, request: web.Request) -> web.Response:
        """ComfyUI's ``{clear: true}`` and ``{delete: [ids]}``: hidden from this door's history for
        good (also after a restart); the jobs stay in the store."""
        body = await _json_body(request)
        delete = _id_list(body)
        if delete is None:
            return _not_a_list()
        if body.get("clear"):
            await self.hidden.clear()
        if delete:
            await self.hidden.delete([str(prompt_id) for prompt_id in delete])
        return web.Response(status=200)

    def _hidden(self, job: Job) -> bool:
        return self.hidden.hides(job.request["prompt_id"], job.finished_at or job.updated_at)

    async def view(self, request: web.Request) -> web.StreamResponse:
        """Only images this door produced: ``subfolder`` is the job, ``filename`` one of its files."""
        job_id = request.query.get("subfolder", "")
        filename = request.query.get("filename", "")
        kind = request.query.get("type", "output")
        job = await self.service.store.get(job_id) if valid_job_id(job_id) else None
        if job is None or job.request.get("source") != SOURCE or f"{job.id}/{filename}" not in job.images:
            return web.Response(status=404)
        outputs = await self._outputs(job)
        if not any(image["filename"] == filename and image["type"] == kind
                   for output in outputs.values() for image in output["images"]):
            return web.Response(status=404)
        data = await self.service.store.read_image(job.id, filename)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, headers={"Content-Type": "image/png",
                                                "Content-Disposition": f'filename="{filename}"'})

    async def _outputs(self, job: Job) -> dict[str, Any]:
        data = await self.service.store.read_image(job.id, OUTPUTS_FILE)
        return {} if data is None else json.loads(data)

    async def _history_entry(self, job: Job) -> dict[str, Any]:
        prompt_id = job.request["prompt_id"]
        outputs, meta = {}, {}
        if job.state == SUCCEEDED:
            for node_id, output in (await self._outputs(job)).items():
                images = [{"filename": image["filename"], "subfolder": job.id, "type": image["type"]}
                          for image in output["images"] if image["type"] != "websocket"]
                if images:
                    outputs[node_id] = {"images": images}
                    meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                     "real_node_id": node_id}
        started = int((job.started_at or job.created_at) * 1000)
        finished = int((job.finished_at or job.updated_at) * 1000)
        end = {SUCCEEDED: "execution_success", CANCELLED: "execution_interrupted"}.get(job.state, "execution_error")
        end_data: dict[str, Any] = {"prompt_id": prompt_id, "timestamp": finished}
        if end == "execution_error":
            end_data.update(exception_message=job.error or job.state, exception_type=job.category or job.state)
        return {
            "prompt": _queue_entry(job),
            "outputs": outputs,
            "status": {"status_str": "success" if job.state == SUCCEEDED else "error",
                       "completed": job.state == SUCCEEDED,
                       "messages": [["execution_start", {"prompt_id": prompt_id, "timestamp": started}],
                                    [end, end_data]]},
            "meta": meta,
        }

    # ------------------------------------------------------------------ pass-through

    async def pass_through(self, request: web.Request) -> web.StreamResponse:
        """What only a ComfyUI can say (its nodes, models, devices): asked of one READY instance."""
        instance = self._ready_instance()
        if instance is None:
            return _unavailable("no ComfyUI instance of the pool is ready yet: try again shortly")
        path = request.path.removeprefix("/api")
        async with instance.client.session.get(instance.url + path, params=request.query) as response:
            body = await response.read()
            return web.Response(body=body, status=response.status,
                                content_type=response.content_type or "application/json")

    def _ready_instance(self) -> Any:
        for instance in self.service.pool.instances.values():
            if instance.state.value in ("ready", "busy") and instance.client is not None:
                return instance
        return None

    async def object_info(self) -> ObjectInfo | None:
        """The pool's ``/object_info`` (all instances run the same tree), kept ``object_info_ttl_s``."""
        now = time.monotonic()
        if self._object_info is not None and now - self._object_info[0] < self.config.object_info_ttl_s:
            return self._object_info[1]
        instance = self._ready_instance()
        if instance is None:
            return self._object_info[1] if self._object_info else None
        raw = await instance.client.object_info()
        info = await asyncio.to_thread(ObjectInfo, raw)
        self._object_info = (now, info, raw)
        return info

    # ------------------------------------------------------------------ events

    async def _door_job(self, prompt_id: str) -> Job | None:
        if not prompt_id or len(prompt_id) > MAX_PROMPT_ID:
            return None
        job = await self.service.store.get(job_id_for(prompt_id))
        return job if job is not None and job.request.get("source") == SOURCE else None

    async def _lookup(self, job_id: str) -> Followed | None:
        job = await self.service.store.get(job_id)
        if job is None or job.request.get("source") != SOURCE:
            return None
        return Followed(job.request["prompt_id"], job.request.get("client_id"),
                        started=job.state == RUNNING)

    async def _finished_frames(self, job_id: str, state: str, followed: Followed) -> list[tuple[str, Any]]:
        """The frames that end a prompt, sent once its result is committed (``/history`` holds it)."""
        job = await self.service.store.get(job_id)
        prompt_id = followed.prompt_id
        frames: list[tuple[str, Any]] = []
        if job is not None and state == SUCCEEDED:
            for node_id, output in (await self._outputs(job)).items():
                images = output["images"]
                if images and images[0]["type"] == "websocket":
                    frames.append(("json", json_frame("executing", {"node": node_id, "display_node": node_id,
                                                                    "prompt_id": prompt_id})))
                    for image in images:
                        data = await self.service.store.read_image(job.id, image["filename"])
                        frames.append(("bytes", png_frame(data or b"")))
                    continue
                refs = [{"filename": i["filename"], "subfolder": job.id, "type": i["type"]} for i in images]
                frames.append(("json", json_frame("executed", {"node": node_id, "display_node": node_id,
                                                               "output": {"images": refs},
                                                               "prompt_id": prompt_id})))
            frames.append(("json", json_frame("execution_success", {"prompt_id": prompt_id,
                                                                    "timestamp": now_ms()})))
        elif state == CANCELLED:
            frames.append(("json", json_frame("execution_interrupted", {
                "prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
                "timestamp": now_ms()})))
        else:
            error = followed.error or {}
            frames.append(("json", json_frame("execution_error", {
                "prompt_id": prompt_id, "node_id": error.get("node_id"), "node_type": error.get("node_type"),
                "executed": error.get("executed", []),
                "exception_message": error.get("exception_message") or (job.error if job else state),
                "exception_type": error.get("exception_type") or (job.category if job else None) or state,
                "traceback": error.get("traceback", []), "current_inputs": {}, "current_outputs": {},
                "timestamp": now_ms()})))
        frames.append(("json", json_frame("executing", {"node": None, "display_node": None,
                                                        "prompt_id": prompt_id})))
        return frames


def _text_verdict(text: str) -> tuple[bool, str | None]:
    decision = check_text(text)
    return decision.safe, decision.category


def _first_category(node_errors: dict[str, Any]) -> str:
    for entry in node_errors.values():
        for error in entry["errors"]:
            return str(error["extra_info"].get("category", "unspecified"))
    return "unspecified"


def _number(job: Job) -> int:
    """ComfyUI's queue number, honestly: the pool's queue is first in, first out, so the number is
    the submission time in ms, whatever ``front``/``number`` asked (ComfyUI runs the lowest number
    first; a client that sorts by it sees the order the pool really runs)."""
    return int(job.created_at * 1000)


def _queue_entry(job: Job) -> list[Any]:
    request = job.request
    extra = {**request.get("extra_data", {}), "create_time": int(job.created_at * 1000)}
    return queue_item(_number(job), request["prompt_id"], request["graph"], extra, request.get("outputs_to_execute", []))


async def _no_uploads(request: web.Request) -> web.Response:
    """Uploads are refused: LoadImage is denied, and a file would have to reach whichever instance
    (on any host) runs the prompt (docs/comfy_api.md, "Uploads")."""
    await request.release()
    return web.json_response({"error": comfy_error(
        "uploads_not_supported", "This pool takes no uploaded files: its prompts cannot load images "
        "(LoadImage is not allowed on this pool)")}, status=403)


async def _method_not_allowed(request: web.Request) -> web.Response:
    return web.json_response({"error": comfy_error("method_not_allowed", f"{request.method} is not allowed on "
                                                                         f"{request.path}")}, status=405)


def _refused(error: dict[str, Any]) -> web.Response:
    return web.json_response({"error": error, "node_errors": {}}, status=400)


def _unavailable(message: str) -> web.Response:
    return web.json_response({"error": comfy_error("unavailable", message), "node_errors": {}}, status=503)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _id_list(body: dict[str, Any]) -> list[Any] | None:
    """``delete`` as ComfyUI reads it: absent or null is none, a list is the ids, anything else None."""
    delete = body.get("delete")
    if delete is None:
        return []
    return delete if isinstance(delete, list) else None


def _not_a_list() -> web.Response:
    return _refused(comfy_error("invalid_request", "delete must be a list of prompt ids"))


def _int_query(request: web.Request, name: str, maximum: int) -> int | None:
    """A non-negative ASCII integer, held to ``maximum`` (a store cannot take an arbitrary one);
    anything else is None, so the route's default applies, as ComfyUI does."""
    text = request.query.get(name, "")
    return min(int(text), maximum) if ASCII_DIGITS.fullmatch(text) else None
