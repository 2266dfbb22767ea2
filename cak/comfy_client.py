"""An async client for one ComfyUI server: HTTP routes, and a prompt followed to its end.

``run`` opens the websocket before it posts the prompt (so no event is missed), follows the
prompt's events, and survives a dropped socket: it reconnects and reconciles from ``/history``,
since the prompt may have finished while nobody listened. Every wait has a limit, and each way a
run can end has its own error class (``cak.errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .errors import (
    ComfyError,
    Interrupted,
    NotComfyUI,
    PromptRejected,
    RunTimeout,
    ServerGone,
    ServerUnreachable,
    StepTimeout,
    execution_error,
)
from .events import PROMPT_EVENTS, RECONCILED, RECONNECTED, ComfyEvent, ImageRef, RunResult

EventHandler = Callable[[ComfyEvent], "Awaitable[None] | None"]

# With a healthy socket we still look at /history after this much silence: a socket can go quiet
# without closing (ComfyUI issues #9393, #3390), and the prompt may be done.
SILENCE_CHECK_S = 15.0
# How long /history may lag behind ``execution_success`` (the worker writes it just after).
HISTORY_GRACE_S = 10.0


class _SocketLost(Exception):
    """Internal: the websocket closed or failed; the run reconnects."""


class ComfyClient:
    """One ComfyUI server. Use as ``async with ComfyClient(url) as client: ...``.

    ``request_timeout`` bounds each HTTP call and ``connect_timeout`` each connection attempt;
    ``reconnect_window`` is how long a run keeps trying to reach a server that went away before it
    raises ``ServerGone``.
    """

    def __init__(self, base_url: str, *, request_timeout: float = 30.0, client_id: str | None = None,
                 connect_timeout: float = 10.0, reconnect_window: float = 20.0) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ServerUnreachable(f"not an http(s) URL: {base_url!r} (e.g. http://127.0.0.1:8188)")
        self.base_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self.client_id = client_id or uuid.uuid4().hex
        self._ws_base = urlunsplit((ws_scheme, parts.netloc, f"{parts.path}/ws", "", ""))
        self.ws_url = self._ws_url(self.client_id)
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_window = reconnect_window
        self._session: aiohttp.ClientSession | None = None

    def _ws_url(self, client_id: str) -> str:
        return f"{self._ws_base}?clientId={client_id}"

    async def __aenter__(self) -> ComfyClient:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout, connect=self.connect_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ HTTP

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use ComfyClient as `async with ComfyClient(url) as client`")
        return self._session

    async def _request(self, method: str, path: str, *, json_body: Any = None,
                       params: dict[str, str] | None = None, want: str = "json") -> Any:
        """One HTTP call; connection trouble, timeouts and non-ComfyUI answers become ComfyErrors."""
        url = f"{self.base_url}{path}"
        try:
            async with self.session.request(method, url, json=json_body, params=params) as response:
                if response.status == 400 and path == "/prompt":
                    body = await _json_or_none(response)
                    if not isinstance(body, dict):
                        raise NotComfyUI(f"{self.base_url} answered POST /prompt with a 400 that is not "
                                         "ComfyUI's error format")
                    error = body.get("error") if isinstance(body.get("error"), dict) else {}
                    raise PromptRejected(str(error.get("message") or error.get("type") or body.get("error")),
                                         error, body.get("node_errors") or {})
                if response.status >= 400:
                    raise NotComfyUI(f"{method} {url} answered HTTP {response.status}: is this a ComfyUI "
                                     "server (version 0.3.x)?")
                if want == "bytes":
                    return await response.read()
                if want == "none":
                    return None
                body = await _json_or_none(response)
                if body is None:
                    raise NotComfyUI(f"{method} {url} did not answer JSON: is this a ComfyUI server?")
                return body
        except aiohttp.ClientConnectorError as exc:
            raise ServerUnreachable(f"cannot connect to {self.base_url} ({_reason(exc)}): is ComfyUI "
                                    "running there?") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise ServerGone(f"{self.base_url} dropped the connection during {method} {path} "
                             f"({_reason(exc)})") from exc
        except TimeoutError as exc:
            raise RunTimeout(f"{method} {url} got no answer within {self.request_timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise ServerUnreachable(f"{method} {url} failed: {_reason(exc)}") from exc

    async def check(self) -> dict:
        """``/system_stats``, after making sure the server is a ComfyUI (``NotComfyUI`` if not)."""
        stats = await self.system_stats()
        system = stats.get("system") if isinstance(stats, dict) else None
        if not isinstance(system, dict) or "comfyui_version" not in system:
            raise NotComfyUI(f"{self.base_url} answers /system_stats, but not like ComfyUI does")
        return stats

    async def system_stats(self) -> dict:
        return await self._request("GET", "/system_stats")

    async def object_info(self, node_class: str | None = None) -> dict:
        """Every node's inputs and outputs, or one class's (``{}`` if the server lacks it)."""
        path = "/object_info" if node_class is None else f"/object_info/{node_class}"
        return await self._request("GET", path)

    async def queue(self) -> dict:
        return await self._request("GET", "/queue")

    async def history(self, prompt_id: str) -> dict | None:
        """The prompt's ``/history`` entry once it has finished, else ``None``."""
        body = await self._request("GET", f"/history/{prompt_id}")
        return body.get(prompt_id) if isinstance(body, dict) else None

    async def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """Ask the worker to unload models / drop cached outputs (it acts after the current prompt)."""
        await self._request("POST", "/free", json_body={"unload_models": unload_models,
                                                        "free_memory": free_memory}, want="none")

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only ``prompt_id`` if given). Lands at the next step."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        await self._request("POST", "/interrupt", json_body=body, want="none")

    async def delete_queued(self, prompt_id: str) -> None:
        """Take a prompt out of the pending queue (no effect once it runs)."""
        await self._request("POST", "/queue", json_body={"delete": [prompt_id]}, want="none")

    async def download(self, image: ImageRef) -> bytes:
        return await self._request("GET", "/view", params=image.query(), want="bytes")

    async def submit(self, graph: dict, prompt_id: str | None = None, client_id: str | None = None) -> str:
        """Queue an API-format graph for this client id; ``PromptRejected`` if ComfyUI refuses it.

        A 200 that still lists ``node_errors`` means some outputs were dropped: the prompt is taken
        back out of the queue and rejected too, since a partial run is not what was asked for.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        body = {"prompt": graph, "client_id": client_id or self.client_id, "prompt_id": prompt_id}
        answer = await self._request("POST", "/prompt", json_body=body)
        if not isinstance(answer, dict) or "prompt_id" not in answer:
            raise NotComfyUI(f"{self.base_url} answered POST /prompt without a prompt_id")
        if answer.get("node_errors"):
            await self._cancel_quietly(prompt_id)
            raise PromptRejected("some outputs failed validation", {}, answer["node_errors"])
        return str(answer["prompt_id"])

    async def _cancel_quietly(self, prompt_id: str) -> None:
        """Best effort: make sure a prompt we gave up on does not keep the server busy."""
        try:
            await self.delete_queued(prompt_id)
            await self.interrupt(prompt_id)
        except ComfyError:
            pass

    # ------------------------------------------------------------------ running a prompt

    async def run(self, graph: dict, *, on_event: EventHandler | None = None, timeout: float | None = None,
                  step_timeout: float | None = None, prompt_id: str | None = None,
                  client_id: str | None = None, on_submitted: Callable[[], None] | None = None,
                  stream: PromptStream | None = None) -> RunResult:
        """Submit ``graph`` and follow it to its end.

        ``timeout`` bounds the whole run (queue time included); ``step_timeout`` is the longest
        silence allowed between two events once the prompt has started (``StepTimeout``). On either
        timeout the prompt is interrupted before the error is raised. ``client_id``: the run's own
        websocket session (ComfyUI keeps one socket per client id, so runs that overlap on one
        server need one each); ``on_submitted`` is called once ComfyUI has queued the prompt.
        ``stream``: follow the prompt on that long-lived socket (its client id) instead of opening
        one for this run.
        """
        if stream is not None:
            return await self._run_on_stream(graph, stream, prompt_id or str(uuid.uuid4()), on_event, timeout,
                                             step_timeout, on_submitted)
        tracker = _RunTracker(prompt_id or str(uuid.uuid4()), on_event, timeout, step_timeout,
                              client_id or self.client_id)
        socket = await self._connect_socket(tracker.client_id, first=True)
        try:
            try:
                await self.submit(graph, tracker.prompt_id, tracker.client_id)
                if on_submitted is not None:
                    on_submitted()
                return await self._follow(socket, tracker)
            except RunTimeout:
                await self._cancel_quietly(tracker.prompt_id)
                raise
        finally:
            await socket.close()

    async def _run_on_stream(self, graph: dict, stream: PromptStream, prompt_id: str,
                             on_event: EventHandler | None, timeout: float | None, step_timeout: float | None,
                             on_submitted: Callable[[], None] | None) -> RunResult:
        tracker = _RunTracker(prompt_id, on_event, timeout, step_timeout, stream.client_id)
        inbox = stream.subscribe(prompt_id)  # before the POST: no event of the prompt is missed
        try:
            if not stream.connected.is_set():
                await self._until_stream_back(stream, tracker)
            try:
                await self.submit(graph, tracker.prompt_id, tracker.client_id)
                if on_submitted is not None:
                    on_submitted()
                entry = await self._follow_inbox(stream, inbox, tracker)
                return await self._finish(tracker, entry)
            except RunTimeout:
                await self._cancel_quietly(tracker.prompt_id)
                raise
        finally:
            stream.unsubscribe(prompt_id)

    async def _follow_inbox(self, stream: PromptStream, inbox: asyncio.Queue[Any], tracker: _RunTracker) -> dict:
        """The prompt's events as the stream hands them over, until it ends; a dropped socket is
        reconciled from /history once the stream is back."""
        while True:
            if not inbox.empty():  # ComfyUI's events often come several at once: no timer for these
                tracker.check_deadlines()
                item = inbox.get_nowait()
            else:
                try:
                    async with asyncio.timeout(tracker.next_wait()):
                        item = await inbox.get()
                except TimeoutError:
                    try:
                        entry = await self._reconcile(tracker, raise_gone=False)
                    except _SocketLost:
                        entry = await self._after_stream_loss(stream, tracker)
                    if entry is not None:
                        return entry
                    tracker.check_deadlines()
                    continue
            if item is _ACTIVITY:
                tracker.saw_activity()
                continue
            if item is _LOST:
                entry = await self._after_stream_loss(stream, tracker)
            else:
                entry = await self._handle(tracker, item)
            if entry is not None:
                return entry

    async def _after_stream_loss(self, stream: PromptStream, tracker: _RunTracker) -> dict | None:
        """Events may have been missed: wait for the socket, then ask /history where the prompt is."""
        lost_at = time.monotonic()
        await self._until_stream_back(stream, tracker)
        tracker.reconnects += 1
        await tracker.emit(ComfyEvent(RECONNECTED, {"attempt": stream.reconnects,
                                                     "downtime_s": round(time.monotonic() - lost_at, 3)},
                                      time.monotonic()))
        return await self._reconcile(tracker)

    async def _until_stream_back(self, stream: PromptStream, tracker: _RunTracker) -> None:
        """Until the stream is connected; ``ServerGone`` after ``reconnect_window`` without it."""
        lost_at = time.monotonic()
        while not stream.connected.is_set():
            if time.monotonic() - lost_at > self.reconnect_window:
                raise ServerGone(f"{self.base_url} went away during prompt {tracker.prompt_id} and did not "
                                 f"come back within {self.reconnect_window:g} s ({stream.last_error})")
            tracker.check_deadlines()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stream.connected.wait()

    async def _connect_socket(self, client_id: str, first: bool, compression: str | None = "deflate") -> ClientConnection:
        """Open the websocket; a failure on the first try says whether anything answered at all."""
        try:
            return await connect(self._ws_url(client_id), open_timeout=self.connect_timeout, proxy=None,
                                 max_size=None, ping_interval=20, ping_timeout=60, close_timeout=2,
                                 compression=compression)
        except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
            if not first:
                raise _SocketLost(_reason(exc)) from exc
            if isinstance(exc, InvalidHandshake):
                await self.check()  # something answers HTTP: NotComfyUI unless it is a ComfyUI
                raise NotComfyUI(f"{self.base_url} refused the websocket /ws ({_reason(exc)})") from exc
            raise ServerUnreachable(f"cannot connect to {self.base_url} ({_reason(exc)}): is ComfyUI "
                                    "running there?") from exc

    async def _follow(self, socket: ClientConnection, tracker: _RunTracker) -> RunResult:
        """Read events until the prompt ends; reconnect and reconcile when the socket is lost."""
        while True:
            try:
                outcome = await self._read_until_done(socket, tracker)
            except _SocketLost:
                await socket.close()
                socket = await self._reconnect(tracker)
                outcome = await self._reconcile(tracker)
                if outcome is None:
                    continue
            if outcome is not None:
                await socket.close()
                return await self._finish(tracker, outcome)

    async def _read_until_done(self, socket: ClientConnection, tracker: _RunTracker) -> dict | None:
        """Events until a terminal one; returns the history entry when the prompt succeeded."""
        while True:
            wait = tracker.next_wait()
            try:
                async with asyncio.timeout(wait):
                    frame = await socket.recv()
            except TimeoutError:
                entry = await self._reconcile(tracker, raise_gone=False)
                if entry is not None:
                    return entry
                tracker.check_deadlines()
                continue
            except (ConnectionClosed, OSError) as exc:
                raise _SocketLost(_reason(exc)) from exc
            if isinstance(frame, bytes):
                tracker.saw_activity()  # a preview image: our prompt is alive
                continue
            event = tracker.parse(frame)
            if event is None:
                continue
            entry = await self._handle(tracker, event)
            if entry is not None:
                return entry

    async def _handle(self, tracker: _RunTracker, event: ComfyEvent) -> dict | None:
        """One event of the prompt: its history entry once it succeeded, its error if it failed."""
        await tracker.emit(event)
        if event.type == "executed" and event.data.get("output") is not None:
            tracker.outputs[str(event.data.get("node"))] = event.data["output"]
        if event.type == "execution_success":
            if tracker.reconnects == 0 and tracker.outputs:
                # ComfyUI 0.3.x sends every output node's ``executed`` (cached ones too) with what
                # /history would list: no second round trip. After a reconnect (some may have
                # been missed) or without any (another server), /history says.
                return {"outputs": tracker.outputs}
            return await self._history_after_success(tracker)
        if event.type == "execution_error":
            raise execution_error(tracker.prompt_id, event.data)
        if event.type == "execution_interrupted":
            raise Interrupted(tracker.prompt_id, _str_or_none(event.data.get("node_id")),
                              event.data.get("node_type"))
        return None

    async def _history_after_success(self, tracker: _RunTracker) -> dict:
        deadline = time.monotonic() + HISTORY_GRACE_S
        while True:
            entry = await self.history(tracker.prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() > deadline:
                raise ServerGone(f"prompt {tracker.prompt_id} succeeded but /history never listed it")
            await asyncio.sleep(0.1)

    async def _reconnect(self, tracker: _RunTracker) -> ClientConnection:
        """Reconnect with backoff until ``reconnect_window`` has passed without any contact."""
        lost_at = time.monotonic()
        delay = 0.2
        attempt = 0
        while True:
            attempt += 1
            try:
                socket = await self._connect_socket(tracker.client_id, first=False)
            except _SocketLost as exc:
                if time.monotonic() - lost_at > self.reconnect_window:
                    raise ServerGone(f"{self.base_url} went away during prompt {tracker.prompt_id} and "
                                     f"did not come back within {self.reconnect_window:g} s ({exc})") from exc
                tracker.check_deadlines()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            tracker.reconnects += 1
            await tracker.emit(ComfyEvent(RECONNECTED, {"attempt": attempt,
                                                         "downtime_s": round(time.monotonic() - lost_at, 3)},
                                          time.monotonic()))
            return socket

    async def _reconcile(self, tracker: _RunTracker, raise_gone: bool = True) -> dict | None:
        """Ask /history (then /queue) where the prompt stands; its history entry if it finished.

        Raises the prompt's error if it failed, and ``ServerGone`` when the server no longer knows
        the prompt at all (it restarted and lost it).
        """
        try:
            entry = await self.history(tracker.prompt_id)
        except (ServerUnreachable, ServerGone) as exc:
            if not raise_gone:
                raise _SocketLost(str(exc)) from exc
            raise ServerGone(f"{self.base_url} went away during prompt {tracker.prompt_id} ({exc})") from exc
        if entry is not None:
            status = entry.get("status") or {}
            await tracker.emit(ComfyEvent(RECONCILED, {"status": status.get("status_str"), "source": "history"},
                                          time.monotonic()))
            for kind, data in status.get("messages", []):
                if kind == "execution_cached":
                    tracker.cached_nodes.extend(str(n) for n in data.get("nodes", []))
                if kind == "execution_error":
                    raise execution_error(tracker.prompt_id, data)
                if kind == "execution_interrupted":
                    raise Interrupted(tracker.prompt_id, _str_or_none(data.get("node_id")), data.get("node_type"))
            return entry
        queue = await self.queue()
        known = {str(item[1]) for key in ("queue_running", "queue_pending") for item in queue.get(key, [])
                 if isinstance(item, list) and len(item) > 1}
        if tracker.prompt_id not in known:
            # Between the two calls it may just have finished: look once more.
            entry = await self.history(tracker.prompt_id)
            if entry is None:
                raise ServerGone(f"{self.base_url} no longer knows prompt {tracker.prompt_id} "
                                 "(the server restarted?)")
            return await self._reconcile(tracker)
        return None

    async def _finish(self, tracker: _RunTracker, entry: dict) -> RunResult:
        outputs = entry.get("outputs") or {}
        return RunResult(prompt_id=tracker.prompt_id, images=RunResult.images_from_outputs(outputs),
                         outputs=outputs, cached_nodes=list(dict.fromkeys(tracker.cached_nodes)),
                         duration_s=round(time.monotonic() - tracker.started, 3),
                         reconnects=tracker.reconnects, events=tracker.events)


# What a stream puts in a prompt's inbox besides its events.
_LOST = object()      # the socket dropped: events may have been missed
_ACTIVITY = object()  # a binary frame (a preview) while the prompt runs: it is alive
# After these (``executing`` with ``node: null`` included) ComfyUI is no longer running the prompt.
_PROMPT_ENDS = frozenset({"executing", "execution_success", "execution_error", "execution_interrupted"})


class PromptStream:
    """One long-lived websocket to a ComfyUI (one client id), its events handed to each prompt by id.

    For a server that runs many prompts one after the other (the supervisor's instances): no connect
    and close per prompt, and no compression on a local socket. It reconnects when the socket drops
    (with backoff, until ``close``); every prompt following it then gets ``_LOST`` and reconciles
    from ``/history``. Binary frames (previews) carry no prompt id: they go to the prompt ComfyUI said
    it is executing.
    """

    def __init__(self, client: ComfyClient, client_id: str | None = None) -> None:
        self.client = client
        self.client_id = client_id or uuid.uuid4().hex
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.last_error = ""
        self._inboxes: dict[str, asyncio.Queue[Any]] = {}
        self._executing: str | None = None
        self._socket: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        """Connect (raising like ``ComfyClient.run`` when nothing, or not a ComfyUI, answers), then read."""
        self._socket = await self.client._connect_socket(self.client_id, first=True, compression=None)
        self.connected.set()
        self._task = asyncio.create_task(self._read(), name=f"events of {self.client.base_url}")

    async def close(self) -> None:
        """Drop the socket without the closing handshake: the process is being stopped (a stopped or
        hung one would not answer it, and waiting ``close_timeout`` would only delay its restart)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._socket is not None:
            self._socket.transport.abort()
        self.connected.clear()

    def subscribe(self, prompt_id: str) -> asyncio.Queue[Any]:
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._inboxes[prompt_id] = inbox
        return inbox

    def unsubscribe(self, prompt_id: str) -> None:
        self._inboxes.pop(prompt_id, None)

    async def _read(self) -> None:
        while not self._closed:
            assert self._socket is not None
            try:
                frame = await self._socket.recv()
            except (ConnectionClosed, OSError) as exc:
                self.last_error = _reason(exc)
                await self._reconnect()
                continue
            if isinstance(frame, bytes):
                inbox = self._inboxes.get(self._executing) if self._executing else None
                if inbox is not None:
                    inbox.put_nowait(_ACTIVITY)
                continue
            self._dispatch(frame)

    def _dispatch(self, frame: str) -> None:
        try:
            message = json.loads(frame)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") not in PROMPT_EVENTS:
            return
        data = message.get("data") or {}
        prompt_id = str(data.get("prompt_id"))
        kind = message["type"]
        if kind == "execution_start" or (kind == "executing" and data.get("node") is not None):
            self._executing = prompt_id
        elif kind in _PROMPT_ENDS and self._executing == prompt_id:
            self._executing = None
        inbox = self._inboxes.get(prompt_id)
        if inbox is not None:
            inbox.put_nowait(ComfyEvent(kind, data, time.monotonic()))

    async def _reconnect(self) -> None:
        """Tell every prompt, then connect again with backoff (0.2 s doubling to 2 s) until closed."""
        self.connected.clear()
        self._executing = None
        for inbox in self._inboxes.values():
            inbox.put_nowait(_LOST)
        if self._socket is not None:
            await self._socket.close()
        delay = 0.2
        while not self._closed:
            try:
                self._socket = await self.client._connect_socket(self.client_id, first=False, compression=None)
            except _SocketLost as exc:
                self.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            self.connected.set()
            return


class _RunTracker:
    """Per-run state: which frames are ours, the deadlines, what was cached."""

    def __init__(self, prompt_id: str, on_event: EventHandler | None, timeout: float | None,
                 step_timeout: float | None, client_id: str) -> None:
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.on_event = on_event
        self.started = time.monotonic()
        self.deadline = None if timeout is None else self.started + timeout
        self.timeout = timeout
        self.step_timeout = step_timeout
        self.last_activity: float | None = None  # set at execution_start: queue time is not silence
        self.cached_nodes: list[str] = []
        self.outputs: dict[str, Any] = {}  # node id → its ``executed`` output, as /history lists them
        self.reconnects = 0
        self.events = 0

    def parse(self, frame: str) -> ComfyEvent | None:
        try:
            message = json.loads(frame)
        except ValueError:
            return None
        if not isinstance(message, dict) or message.get("type") not in PROMPT_EVENTS:
            return None
        data = message.get("data") or {}
        if str(data.get("prompt_id")) != self.prompt_id:
            return None
        return ComfyEvent(message["type"], data, time.monotonic())

    def saw_activity(self) -> None:
        if self.last_activity is not None:
            self.last_activity = time.monotonic()

    async def emit(self, event: ComfyEvent) -> None:
        if event.type in PROMPT_EVENTS:
            self.events += 1
            if event.type == "execution_start" or self.last_activity is not None:
                self.last_activity = event.at
            if event.type == "execution_cached":
                self.cached_nodes.extend(str(n) for n in event.data.get("nodes", []))
        if self.on_event is not None:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result

    def next_wait(self) -> float:
        """How long the next receive may wait before a deadline (or a /history check) is due."""
        self.check_deadlines()
        now = time.monotonic()
        waits = [SILENCE_CHECK_S]
        if self.deadline is not None:
            waits.append(self.deadline - now)
        if self.step_timeout is not None and self.last_activity is not None:
            waits.append(self.last_activity + self.step_timeout - now)
        return max(0.01, min(waits))

    def check_deadlines(self) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise RunTimeout(f"prompt {self.prompt_id} did not finish within {self.timeout:g} s")
        if (self.step_timeout is not None and self.last_activity is not None
                and now - self.last_activity >= self.step_timeout):
            raise StepTimeout(f"prompt {self.prompt_id}: no progress for {self.step_timeout:g} s "
                              "(a node may be stuck)")


async def _json_or_none(response: aiohttp.ClientResponse) -> Any:
    try:
        return json.loads(await response.text())
    except (ValueError, UnicodeDecodeError):
        return None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
