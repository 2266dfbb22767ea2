"""ComfyClient against a small fake ComfyUI (aiohttp): dropped sockets, silence, wrong servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from cak.comfy_client import ComfyClient
from cak.errors import (
    Interrupted,
    NotComfyUI,
    PromptRejected,
    ServerGone,
    ServerUnreachable,
    StepTimeout,
    UnsafeContent,
)
from cak.events import RECONCILED, RECONNECTED
from supervisor.dispatcher import with_cause

GRAPH = {"1": {"class_type": "SaveImage", "inputs": {}}}
IMAGE = {"filename": "cute_00001_.png", "subfolder": "", "type": "output"}


class FakeComfy:
    """Just enough ComfyUI: /prompt, /history, /queue, /system_stats, /view and /ws.

    ``script`` decides what the first websocket connection does with a submitted prompt; later
    connections only idle (the prompt "finished" while the client was away).
    """

    def __init__(self, script: str) -> None:
        self.script = script
        self.history: dict[str, dict] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.submitted: asyncio.Queue[str] = asyncio.Queue()
        self.connections = 0
        self.interrupts: list[dict] = []
        self.seen: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/system_stats", self.system_stats)
        app.router.add_post("/prompt", self.prompt)
        app.router.add_get("/history/{pid}", self.get_history)
        app.router.add_get("/queue", self.get_queue)
        app.router.add_post("/queue", self.ok)
        app.router.add_post("/interrupt", self.interrupt)
        app.router.add_get("/view", self.view)
        app.router.add_get("/ws", self.ws)
        return app

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"comfyui_version": "0.3.75"}, "devices": []})

    async def prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.script == "reject":
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation",
                                                "message": "Prompt outputs failed validation"},
                                      "node_errors": {"1": {"class_type": "SaveImage", "errors": [
                                          {"message": "Required input is missing", "details": "images"}]}}},
                                     status=400)
        await self.submitted.put(body["prompt_id"])
        return web.json_response({"prompt_id": body["prompt_id"], "number": 1, "node_errors": {}})

    async def get_history(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def get_queue(self, request: web.Request) -> web.Response:
        running = [[0, pid, {}, {}, []] for pid in self.running]
        return web.json_response({"queue_running": running, "queue_pending": []})

    @property
    def running(self) -> list[str]:
        return [] if self.script == "forget" else [p for p in self.seen if p not in self.history]

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response()

    async def interrupt(self, request: web.Request) -> web.Response:
        self.interrupts.append(await request.json())
        return web.Response()

    async def view(self, request: web.Request) -> web.Response:
        return web.Response(body=b"PNG-BYTES")

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.connections += 1
        self.sockets.append(socket)
        await socket.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                           "sid": request.query["clientId"]}})
        if self.connections == 1:
            pid = await self.submitted.get()
            self.seen.append(pid)
            await self.play(socket, pid)
        async for message in socket:  # idle until the client leaves
            if message.type == WSMsgType.ERROR:
                break
        return socket

    async def play(self, socket: web.WebSocketResponse, pid: str) -> None:
        async def send(kind: str, **data: object) -> None:
            await socket.send_json({"type": kind, "data": {"prompt_id": pid, **data}})

        await send("execution_start", timestamp=1)
        await send("execution_cached", nodes=["3"], timestamp=1)
        await send("executing", node="1", display_node="1")
        await socket.send_bytes(b"\x00\x00\x00\x01preview")
        await socket.send_json({"type": "progress", "data": {"prompt_id": "someone-else", "value": 1, "max": 9}})
        await send("progress", value=1, max=2, node="1")
        if self.script in ("drop", "forget"):
            self.history[pid] = {"outputs": {"1": {"images": [IMAGE]}},
                                 "status": {"status_str": "success", "completed": True, "messages": []}}
            if self.script == "forget":
                self.history.clear()
            await socket.close()
        elif self.script == "silent":
            await asyncio.sleep(30)
        elif self.script == "unsafe":
            await send("execution_error", node_id="7", node_type="CAK_KidsTextSafety",
                       exception_type="cute_animal_kids.text_safety.UnsafePromptError",
                       exception_message="unsafe prompt (category: violence_gore)")
        elif self.script == "interrupt":
            await send("execution_interrupted", node_id="1", node_type="KSampler", executed=[])
        elif self.script == "executed":  # as ComfyUI 0.3.x: outputs in the events; /history not asked
            await send("executed", node="1", display_node="1", output={"images": [IMAGE]})
            await send("execution_success", timestamp=2)
        else:
            self.history[pid] = {"outputs": {"1": {"images": [IMAGE]}},
                                 "status": {"status_str": "success", "completed": True, "messages": []}}
            await send("execution_success", timestamp=2)


@asynccontextmanager
async def serve(script: str) -> AsyncIterator[tuple[FakeComfy, str]]:
    server = FakeComfy(script)
    runner = web.AppRunner(server.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def with_fake(script: str, body: Callable[[FakeComfy, ComfyClient], Awaitable[None]], **client_args) -> None:
    async def main() -> None:
        async with serve(script) as (server, url):
            async with ComfyClient(url, **client_args) as client:
                await body(server, client)
    asyncio.run(main())


def test_run_collects_events_images_and_cached_nodes():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        seen = []
        result = await client.run(GRAPH, on_event=seen.append, timeout=10)
        assert [e.type for e in seen] == ["execution_start", "execution_cached", "executing", "progress",
                                          "execution_success"]  # others' frames and previews ignored
        assert result.cached_nodes == ["3"]
        assert [i.filename for i in result.images] == ["cute_00001_.png"]
        assert await client.download(result.images[0]) == b"PNG-BYTES"
    with_fake("success", body)


def test_outputs_come_from_the_executed_events_without_a_history_round_trip():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        result = await client.run(GRAPH, timeout=10)  # this fake's /history never lists the prompt
        assert [i.filename for i in result.images] == ["cute_00001_.png"]
        assert result.outputs == {"1": {"images": [IMAGE]}} and not server.history
    with_fake("executed", body)


def test_dropped_socket_reconnects_and_reconciles_from_history():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        seen = []

        async def on_event(event) -> None:  # async handlers are awaited
            seen.append(event.type)
        result = await client.run(GRAPH, on_event=on_event, timeout=10)
        assert result.reconnects == 1 and server.connections == 2
        assert RECONNECTED in seen and RECONCILED in seen
        assert [i.filename for i in result.images] == ["cute_00001_.png"]
    with_fake("drop", body)


def test_prompt_lost_by_a_restarted_server_is_server_gone():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        with pytest.raises(ServerGone, match="no longer knows"):
            await client.run(GRAPH, timeout=10)
    with_fake("forget", body)


def test_silence_raises_step_timeout_and_interrupts():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        with pytest.raises(StepTimeout):
            await client.run(GRAPH, timeout=20, step_timeout=0.5)
        assert server.interrupts and server.interrupts[0].get("prompt_id")
    with_fake("silent", body)


def test_unsafe_error_is_classified_with_category():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        with pytest.raises(UnsafeContent) as caught:
            await client.run(GRAPH, timeout=10)
        assert caught.value.category == "violence_gore" and caught.value.node_id == "7"
        assert caught.value.exit_code == 4
    with_fake("unsafe", body)


def test_interrupted_prompt():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        with pytest.raises(Interrupted):
            await client.run(GRAPH, timeout=10)
    with_fake("interrupt", body)


def test_rejected_prompt_keeps_node_errors():
    async def body(server: FakeComfy, client: ComfyClient) -> None:
        with pytest.raises(PromptRejected) as caught:
            await client.submit(GRAPH)
        assert "1" in caught.value.node_errors
        assert "node 1 (SaveImage): Required input is missing: images" in str(caught.value)
    with_fake("reject", body)


def test_server_that_goes_away_for_good_is_server_gone():
    async def main() -> None:
        async with serve("silent") as (server, url):
            async with ComfyClient(url, reconnect_window=1.0) as client:
                task = asyncio.create_task(client.run(GRAPH, timeout=30))
                while not server.seen:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                for socket in server.sockets:
                    await socket.close()
                # the fake's shutdown below refuses every reconnect
        with pytest.raises(ServerGone):
            await task
    asyncio.run(main())


def test_unreachable_and_not_comfyui():
    async def main() -> None:
        async with ComfyClient("http://127.0.0.1:9") as client:
            with pytest.raises(ServerUnreachable) as unreachable:
                await client.check()
        # The short message for users; the low-level cause kept for the service's logs.
        assert "\n" not in str(unreachable.value) and "Traceback" not in str(unreachable.value)
        assert isinstance(unreachable.value.__cause__, aiohttp.ClientConnectorError)
        assert "cause: ClientConnectorError" in with_cause(unreachable.value)
        app = web.Application()
        async def page(request: web.Request) -> web.Response:
            return web.Response(text="<html>hello</html>")
        app.router.add_get("/{tail:.*}", page)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with ComfyClient(url) as client:
                with pytest.raises(NotComfyUI):
                    await client.check()
                with pytest.raises(NotComfyUI):
                    await client.run(GRAPH, timeout=5)
        finally:
            await runner.cleanup()
    asyncio.run(main())
