"""The aiohttp app, the OpenAPI document and docs/api.md list the same routes."""

from __future__ import annotations

import re
from types import SimpleNamespace

import yaml

from cak.install_state import REPO_ROOT
from supervisor.api import OPENAPI_FILE, create_app
from supervisor.settings import HttpSettings

HTTP_METHODS = {"get", "post", "put", "delete", "patch"}


def app_routes() -> set[tuple[str, str]]:
    http = HttpSettings(host="127.0.0.1", port=0, token=None, max_body_bytes=65536, sse_keepalive_s=15,
                      list_limit=100)
    app = create_app(SimpleNamespace(settings=SimpleNamespace(http=http)))  # routes only, nothing runs
    return {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD"}


def openapi_routes() -> set[tuple[str, str]]:
    document = yaml.safe_load(OPENAPI_FILE.read_text())
    return {(method, path) for path, item in document["paths"].items() for method in item
            if method in HTTP_METHODS}


def test_every_app_route_is_in_the_openapi_document_and_back():
    assert app_routes() == openapi_routes()


def test_every_route_is_documented_in_docs_api_md():
    text = (REPO_ROOT / "docs" / "api.md").read_text()
    documented = {(method.lower(), path) for method, path in
                  re.findall(r"`(GET|POST|PUT|DELETE|PATCH) (/[^`?\s]*)", text)}
    assert openapi_routes() <= documented


def test_openapi_document_is_3_1_with_bearer_security():
    document = yaml.safe_load(OPENAPI_FILE.read_text())
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/healthz"]["get"]["security"] == []
