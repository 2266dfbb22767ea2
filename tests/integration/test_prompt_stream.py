"""One long-lived websocket for many prompts (``PromptStream``) against the session ComfyUI."""

from __future__ import annotations

import asyncio

from cak.comfy_client import ComfyClient, PromptStream
from cak.events import RECONNECTED
from cak.workflow import Workflow


def trivial_graph(colour: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": colour}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "stream"}}}


def test_prompts_share_one_socket_and_survive_a_drop(comfy):
    """Prompts queued at once each get their own events on one socket; closing that socket while one
    runs makes the stream reconnect, and the runs reconcile and finish, each once."""

    class CountingClient(ComfyClient):
        connects = 0

        async def _connect_socket(self, client_id: str, first: bool, compression: str | None = "deflate"):
            CountingClient.connects += 1
            return await super()._connect_socket(client_id, first, compression)

    async def main() -> None:
        async with CountingClient(comfy.url) as client:
            stream = PromptStream(client)
            await stream.open()
            try:
                seen: dict[str, list[str]] = {}
                dropped: list[str] = []

                def recorder(name: str):
                    async def on_event(event) -> None:
                        seen.setdefault(name, []).append(event.type)
                        if name == "slow" and event.type == "progress" and not dropped:
                            dropped.append(event.type)
                            assert stream._socket is not None
                            await stream._socket.close()  # as if the connection broke
                    return on_event

                slow = Workflow.load("cute_animal_cpu").build({"seed": 41, "steps": 6})
                runs = [client.run(slow, on_event=recorder("slow"), timeout=600, stream=stream)]
                runs += [client.run(trivial_graph(1000 + n), on_event=recorder(f"t{n}"), timeout=600, stream=stream)
                         for n in range(3)]
                results = await asyncio.gather(*runs)
            finally:
                await stream.close()
        assert dropped and stream.reconnects >= 1
        assert results[0].reconnects >= 1 and RECONNECTED in seen["slow"]
        assert len({result.prompt_id for result in results}) == 4
        assert all(len(result.images) == 1 for result in results)
        assert len({image.filename for result in results for image in result.images}) == 4
        for n in range(3):  # queued behind the slow one, after the drop: their own events, not its
            assert "execution_success" in seen[f"t{n}"] or RECONNECTED in seen[f"t{n}"]
            assert "progress" not in seen[f"t{n}"]
        assert CountingClient.connects == 1 + stream.reconnects  # no socket per run
    asyncio.run(main())
