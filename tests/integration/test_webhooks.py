"""Webhooks end to end: a real supervisor (one CPU instance) calls a real aiohttp receiver.

The receiver runs in the test process on a loopback port that the supervisor's allow-list names.
Signatures are checked with the ``standardwebhooks`` library, not with our own code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from cak.comfy_process import free_port
from cak.install_state import REPO_ROOT
from tests.support.job_service import SupervisorProcess
from tests.support.waiting import wait_until

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
MAX_ATTEMPTS = 12
QUICK = {"width": 64, "height": 64, "steps": 1}
UNSAFE_PROMPT = "a bear with a gun covered in blood"


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An aiohttp server on its own loop and thread; answers per path from ``script``."""

    port: int = field(default_factory=free_port)
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)  # path → statuses to answer, in turn

    def start(self) -> Receiver:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="receiver", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)  # a followed redirect may arrive as GET
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(request.path, dict(request.headers), await request.read()))
        statuses = self.script.get(request.path, [])
        status = statuses.pop(0) if len(statuses) > 1 else (statuses[0] if statuses else 200)
        if 300 <= status < 400:
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/redirected")
        return web.Response(status=status, text="ok")

    def on(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    receiver = Receiver().start()
    late_port = free_port()  # nothing listens here until the restart test starts a receiver
    supervisor = SupervisorProcess(tmp_path_factory.mktemp("webhooks"), instances=1, webhooks={
        "allow": [f"http://127.0.0.1:{receiver.port}/hooks/", f"http://127.0.0.1:{late_port}/late/"],
        "secret": SECRET, "max_attempts": MAX_ATTEMPTS, "timeout_s": 5, "backoff_base_s": 0.1,
        "backoff_cap_s": 0.4, "poll_interval_s": 0.2, "inline_images": True,
        "public_url": "https://pictures.example.com"})
    try:
        supervisor.start(ready=1)
        yield supervisor, receiver, late_port
    finally:
        supervisor.stop()
        receiver.stop()


def webhook_final(supervisor: SupervisorProcess, job_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = supervisor.get(f"/v1/jobs/{job_id}")
        return job if job["webhook"]["state"] in ("delivered", "failed", "gone") else None
    return wait_until(final, f"webhook of {job_id} not final:\n{supervisor.log_tail()}")


def verified(hit: Hit) -> dict[str, Any]:
    return Webhook(SECRET).verify(hit.body, hit.headers)


def test_a_job_webhook_arrives_once_signed_with_urls_and_inline_image(setup):
    supervisor, receiver, _ = setup
    url = f"http://127.0.0.1:{receiver.port}/hooks/once"
    job = supervisor.submit(prompt="a little bear in a hat", webhook={"url": url}, **QUICK)
    assert job["webhook"] == {"state": "waiting", "attempts": 0, "last_status": None, "last_error": None}
    done = webhook_final(supervisor, job["id"])
    assert done["state"] == "succeeded"
    assert done["webhook"] == {"state": "delivered", "attempts": 1, "last_status": 200, "last_error": None}
    time.sleep(1.5)  # several of the sender's polls: nothing more arrives
    (hit,) = receiver.on("/hooks/once")
    event = verified(hit)
    assert event["type"] == "job.succeeded"
    data = event["data"]
    assert data["job_id"] == job["id"] and data["state"] == "succeeded"
    assert data["images"] == [f"https://pictures.example.com/v1/jobs/{job['id']}/images/0"]
    _, _, png = supervisor.request("GET", done["images"][0])
    assert base64.b64decode(data["images_inline"][0]["data"]) == png and png.startswith(b"\x89PNG")
    with pytest.raises(Exception, match="signature"):  # the check can fail: a changed body does
        Webhook(SECRET).verify(hit.body.replace(b"succeeded", b"failed"), hit.headers)


def test_receiver_failing_three_times_gets_it_on_the_fourth_try_with_one_id(setup):
    supervisor, receiver, _ = setup
    receiver.script["/hooks/flaky"] = [500, 500, 500, 200]
    job = supervisor.submit(prompt="a small panda", webhook={"url": f"http://127.0.0.1:{receiver.port}/hooks/flaky"},
                            **QUICK)
    done = webhook_final(supervisor, job["id"])
    assert done["webhook"] == {"state": "delivered", "attempts": 4, "last_status": 200, "last_error": None}
    hits = receiver.on("/hooks/flaky")
    assert len(hits) == 4
    assert len({hit.headers["webhook-id"] for hit in hits}) == 1
    assert all(verified(hit)["data"]["job_id"] == job["id"] for hit in hits)
    metrics = supervisor.request("GET", "/metrics")[2].decode()
    assert 'cak_webhook_deliveries_total{outcome="retry"}' in metrics


@pytest.mark.parametrize("url", [
    "https://api.example.com/hooks/",
    "http://127.0.0.1:{port}/other",
    "http://127.0.0.1:{port}/hooks/../other",
    "http://localhost:{port}/hooks/",
    "http://user:pw@127.0.0.1:{port}/hooks/",
])
def test_url_outside_the_allow_list_is_422_naming_webhook_url(setup, url):
    supervisor, receiver, _ = setup
    status, data = supervisor.call("POST", "/v1/jobs", {"prompt": "a cat", "webhook": {"url": url.format(
        port=receiver.port)}})
    assert status == 422, data
    assert data["error"]["field"] == "webhook.url" and data["error"]["message"]


def test_a_redirect_is_not_followed(setup):
    supervisor, receiver, _ = setup
    receiver.script["/hooks/moved"] = [302]
    job = supervisor.submit(prompt="a tiny fox", webhook={"url": f"http://127.0.0.1:{receiver.port}/hooks/moved"},
                            **QUICK)
    done = webhook_final(supervisor, job["id"])
    assert done["webhook"]["state"] == "failed" and done["webhook"]["last_status"] == 302
    assert done["webhook"]["attempts"] == MAX_ATTEMPTS == len(receiver.on("/hooks/moved"))
    assert receiver.on("/redirected") == []


def test_a_rejected_prompts_event_has_the_category_and_not_the_words(setup):
    supervisor, receiver, _ = setup
    status, data = supervisor.call("POST", "/v1/jobs", {
        "prompt": UNSAFE_PROMPT, "webhook": {"url": f"http://127.0.0.1:{receiver.port}/hooks/rejected"}})
    assert status == 422 and data["error"]["code"] == "unsafe_prompt"
    done = webhook_final(supervisor, data["job"]["id"])
    assert done["webhook"]["state"] == "delivered"
    (hit,) = receiver.on("/hooks/rejected")
    event = verified(hit)
    assert event["type"] == "job.rejected" and event["data"]["category"] == data["error"]["category"]
    body = hit.body.decode().lower()
    assert not any(word in body for word in ("gun", "blood", "bear")), body


def test_cli_submit_with_webhook_delivers_it(setup):
    supervisor, receiver, _ = setup
    env = {**os.environ, "CAK_SUPERVISOR_URL": supervisor.url}
    submit = subprocess.run(
        [sys.executable, "-m", "supervisor", "submit", "a brave duck", "--width", "64", "--height", "64",
         "--steps", "1", "--webhook", f"http://127.0.0.1:{receiver.port}/hooks/cli", "--wait",
         "--out", str(supervisor.base_dir / "cli-out")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert submit.returncode == 0, submit.stderr
    (hit,) = wait_until(lambda: receiver.on("/hooks/cli"), "no webhook from the CLI's job")
    assert verified(hit)["type"] == "job.succeeded"


def test_receiver_down_and_supervisor_sigkilled_the_webhook_arrives_after_restart(setup):
    supervisor, _, late_port = setup
    job = supervisor.submit(prompt="a sleepy owl", webhook={"url": f"http://127.0.0.1:{late_port}/late/owl"},
                            **QUICK)

    def tried() -> dict[str, Any] | None:
        current = supervisor.get(f"/v1/jobs/{job['id']}")
        return current if current["webhook"]["attempts"] >= 1 else None
    before = wait_until(tried, "no delivery try")
    assert before["state"] == "succeeded" and before["webhook"]["state"] == "pending"
    assert before["webhook"]["last_status"] is None and before["webhook"]["last_error"]
    supervisor.record_pids()
    supervisor.kill()
    late = Receiver(port=late_port).start()
    try:
        supervisor.start(ready=1)
        done = webhook_final(supervisor, job["id"])
        assert done["webhook"]["state"] == "delivered" and done["webhook"]["attempts"] > before["webhook"]["attempts"]
        time.sleep(1.0)
        (hit,) = late.on("/late/owl")
        assert verified(hit)["data"]["job_id"] == job["id"]
    finally:
        late.stop()
