"""``GET /cute_animal_kids/memory``: process RSS, device memory and the models ComfyUI holds loaded.

ComfyUI's ``/system_stats`` reports device-wide numbers only; this route also says which models are
resident, so a supervisor (or a test) can see whether a text encoder really left memory.
"""

from __future__ import annotations

from aiohttp import web
from server import PromptServer

from .model_memory import memory_report

MEMORY_ROUTE = "/cute_animal_kids/memory"


async def get_memory(request: web.Request) -> web.Response:
    return web.json_response(memory_report())


def register_memory_route() -> None:
    """Add the route to ComfyUI's table; safe to call more than once.

    It must run while custom nodes load: ComfyUI copies its route table into the web app (and adds
    the ``/api`` aliases) only after that.
    """
    routes = PromptServer.instance.routes
    if any(isinstance(r, web.RouteDef) and r.path == MEMORY_ROUTE for r in routes):
        return
    routes.get(MEMORY_ROUTE)(get_memory)
