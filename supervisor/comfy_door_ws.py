"""The ComfyUI door's websocket: ComfyUI's message protocol, per client, fed by the pool's events.

Each prompt's events go only to the socket of the ``client_id`` that submitted it; a reconnect
with the same ``clientId`` replaces the old socket and gets what was sent meanwhile (a bounded
backlog per client). Events arrive through ``JobEvents.taps`` in order and are sent by one task,
so their order is kept. What is sent when:

- ``execution_start`` when the job first runs (once, also across a retry on another instance);
  ``execution_cached``, ``executing`` (per node), ``progress``, ``progress_state`` as the instance
  sends them, with the door's ``prompt_id``;
- the instance's own ``executed`` / ``execution_success`` are held back: the images are not gated
  yet. Once the job's result is committed (so ``/history`` holds it): per output node, for a
  ``SaveImageWebsocket`` node ``executing`` + one binary frame per image, then ``executed`` with
  the door's image references; then ``execution_success`` and ``executing`` with ``node: null``;
- a job that fails: ``execution_error``; cancelled: ``execution_interrupted``; then ``node: null``;
- ``status`` (``queue_remaining`` = the pool's queued + running jobs) to every socket after each
  change of the queue. The instance's binary preview frames are not forwarded (dropped).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger("supervisor.comfy_door")

BACKLOG_FRAMES = 2000  # per client while no socket is connected
SEND_TIMEOUT_S = 10.0
FORWARDED = frozenset({"execution_cached", "executing", "progress", "progress_state"})
# ComfyUI's binary frame: event type 1 (PREVIEW_IMAGE), image type 2 (PNG), then the bytes.
PNG_FRAME_HEADER = struct.pack(">I", 1) + struct.pack(">I", 2)

Frame = str | bytes


@dataclass
class Followed:
    """A door prompt whose events are being relayed."""

    prompt_id: str
    client_id: str | None
    started: bool = False
    error: dict[str, Any] | None = None  # the instance's execution_error, for the final frame


class DoorSockets:
    """Connected clients by ``clientId`` and what each one has not received yet."""

    def __init__(self, queue_remaining: Callable[[], Awaitable[int]]) -> None:
        self.queue_remaining = queue_remaining
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.backlog: dict[str, deque[Frame]] = {}

    async def status(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": await self.queue_remaining()}}

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /ws?clientId=``: ``status`` with ``sid`` first, then the backlog, then live events."""
        socket = web.WebSocketResponse(heartbeat=30, compress=False)
        await socket.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        old = self.sockets.pop(sid, None)
        if old is not None:
            await old.close()
        await socket.send_json({"type": "status", "data": {"status": await self.status(), "sid": sid}})
        for frame in self.backlog.pop(sid, ()):  # what was sent while the client was away
            await _send(socket, frame)
        self.sockets[sid] = socket
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT and '"feature_flags"' in message.data:
                    await socket.send_json({"type": "feature_flags", "data": {}})
        finally:
            if self.sockets.get(sid) is socket:
                del self.sockets[sid]
        return socket

    async def to_client(self, client_id: str | None, frame: Frame) -> None:
        """One frame to one client; kept for it while it is not connected."""
        if client_id is None:
            return  # like ComfyUI: a prompt without client_id gets no execution events
        socket = self.sockets.get(client_id)
        if socket is not None and not socket.closed:
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await _send(socket, frame)
                return
            except (TimeoutError, ConnectionError, RuntimeError):
                self.sockets.pop(client_id, None)
        self.backlog.setdefault(client_id, deque(maxlen=BACKLOG_FRAMES)).append(frame)

    async def broadcast_status(self) -> None:
        frame = json_frame("status", {"status": await self.status()})
        for client_id in list(self.sockets):
            await self.to_client(client_id, frame)

    async def close(self) -> None:
        for socket in list(self.sockets.values()):
            await socket.close()
        self.sockets.clear()


class EventRelay:
    """Turns the pool's events of door prompts into ComfyUI frames, one task, in order."""

    def __init__(self, sockets: DoorSockets, lookup: Callable[[str], Awaitable[Followed | None]],
                 finished: Callable[[str, str, Followed], Awaitable[list[tuple[str, Frame]]]]) -> None:
        self.sockets = sockets
        self.lookup = lookup      # job id → Followed, None for jobs that are not the door's
        self.finished = finished  # the frames that end a prompt: (kind, frame) pairs
        self.followed: dict[str, Followed | None] = {}
        self._queue: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def tap(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        """``JobEvents.taps`` entry: never blocks the dispatcher."""
        self._queue.put_nowait((job_id, kind, data))

    def follow(self, job_id: str, followed: Followed) -> None:
        self.followed[job_id] = followed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="comfy-door-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            job_id, kind, data = await self._queue.get()
            try:
                await self._relay(job_id, kind, data)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad event must not end the door's events
                log.exception("relaying %s of job %s failed", kind, job_id)

    async def _relay(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        if job_id not in self.followed:
            self.followed[job_id] = await self.lookup(job_id)
        followed = self.followed[job_id]
        if followed is None:
            if kind == "state":
                await self.sockets.broadcast_status()  # the pool's queue changed
            return
        client = followed.client_id
        if kind == "state":
            state = data["state"]
            if state == "running" and not followed.started:
                followed.started = True
                await self.sockets.to_client(client, json_frame("execution_start", {
                    "prompt_id": followed.prompt_id, "timestamp": now_ms()}))
            elif state in ("succeeded", "failed", "rejected", "cancelled"):
                for _, frame in await self.finished(job_id, state, followed):
                    await self.sockets.to_client(client, frame)
                self.followed.pop(job_id, None)
            await self.sockets.broadcast_status()
        elif kind == "execution_error":
            followed.error = data
        elif kind in FORWARDED and not (kind == "executing" and data.get("node") is None):
            # (the instance's own "done" comes before the images are gated: ours follows the commit)
            message = {key: value for key, value in data.items() if key != "attempt"}
            message["prompt_id"] = followed.prompt_id
            await self.sockets.to_client(client, json_frame(kind, message))


def json_frame(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, ensure_ascii=False)


def png_frame(data: bytes) -> bytes:
    return PNG_FRAME_HEADER + data


def now_ms() -> int:
    return int(time.time() * 1000)


async def _send(socket: web.WebSocketResponse, frame: Frame) -> None:
    if isinstance(frame, bytes):
        await socket.send_bytes(frame)
    else:
        await socket.send_str(frame)
