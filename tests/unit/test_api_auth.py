"""Fast checks of the API's guards: the bearer token on every /v1 route, job ids before the store.

The service behind the app is an empty namespace: a request that got past a guard would touch
``service.store`` or ``service.pool`` and answer 500, so each expected 401/400 proves the guard ran.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from supervisor.api import create_app

TOKEN = "unit-test-token-0123456789"
JOB = str(uuid.uuid4())
V1_ROUTES = [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{JOB}"),
             ("DELETE", f"/v1/jobs/{JOB}"), ("GET", f"/v1/jobs/{JOB}/images/0"),
             ("GET", f"/v1/jobs/{JOB}/events"), ("GET", "/v1/instances"), ("GET", "/v1/hosts"),
             ("POST", "/v1/instances/comfy-1/restart"), ("POST", "/v1/instances/comfy-1/drain"),
             ("GET", "/metrics"), ("GET", "/readyz"), ("GET", "/v1/openapi.yaml")]
BAD_IDS = ["not-a-uuid", JOB.upper(), JOB.replace("-", ""), "..%2F..%2Fetc%2Fpasswd", "%C2%B2", f"{JOB}x"]


def _service(token: str | None) -> SimpleNamespace:
    http = SimpleNamespace(token=token, max_body_bytes=65536)
    return SimpleNamespace(settings=SimpleNamespace(http=http))


async def _answers(token: str | None, requests: list[tuple[str, str, dict[str, str]]]) -> list[tuple[int, dict]]:
    client = TestClient(TestServer(create_app(_service(token))))  # type: ignore[arg-type]
    await client.start_server()
    try:
        answers = []
        for method, path, headers in requests:
            response = await client.request(method, URL(path, encoded=True), headers=headers)
            answers.append((response.status, await response.json()))
        return answers
    finally:
        await client.close()


def test_every_v1_route_refuses_a_missing_or_wrong_token() -> None:
    wrong = ["", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"bearer {TOKEN}", TOKEN,
             f"Basic {TOKEN}"]
    requests = [(method, path, {"Authorization": value} if value else {})
                for method, path in V1_ROUTES for value in wrong]
    for (method, path, headers), (status, body) in zip(requests, asyncio.run(_answers(TOKEN, requests))):
        assert status == 401, (method, path, headers, status, body)
        assert body["error"]["code"] == "unauthorized"


def test_the_right_token_passes_the_guard() -> None:
    # /healthz needs nothing; the job route with the right token gets past the token to the id check.
    requests = [("GET", "/healthz", {}), ("GET", "/v1/jobs/not-a-uuid", {"Authorization": f"Bearer {TOKEN}"})]
    assert [status for status, _ in asyncio.run(_answers(TOKEN, requests))] == [200, 400]


def test_non_uuid_job_ids_are_refused_before_the_store_is_asked() -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    requests = [(method, path.replace(JOB, bad), auth) for bad in BAD_IDS
                for method, path in V1_ROUTES if JOB in path]
    for (method, path, _), (status, body) in zip(requests, asyncio.run(_answers(TOKEN, requests))):
        assert status in (400, 404), (method, path, status, body)
        if status == 400:
            assert body["error"] == {"code": "invalid_id", "message": "job ids are lowercase UUIDs",
                                     "field": "job_id"}
        else:  # an encoded '/' splits the path: no route matches, the store is never reached either
            assert "%2F" in path and body["error"]["code"] == "not_found"
