"""The operator dashboard in a real browser: a supervisor with two CPU instances and a token, a
finished job and a rejected one, and headless Chromium reading the page the way an operator would.

The supervisor is a real ``python -m supervisor up`` (``tests/job_service.py``), so the page, the
token handling and the API are tested as deployed. Chromium is driven by
``tests/browser.py`` (Playwright on Debian's Chromium). The screenshot is kept in the artifacts folder (``dashboard.png``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cak.comfy_process import free_port
from cak.demo import DEMO_PROMPT
from tests.support.browser import Tab, chromium, new_tab, requires_chromium
from tests.support.job_service import SupervisorProcess, host_pair

pytestmark = [pytest.mark.slow, pytest.mark.browser, requires_chromium()]

TOKEN = "dashboard-test-token-1234"
GOOD_PROMPT = DEMO_PROMPT
# Refused before the queue (category "weapons"); its markup must show as text, never as HTML.
UNSAFE_PROMPT = '<b id="xss">a bear holding a gun</b>'
# A generous limit that only keeps a broken run from hanging; nothing is asserted about speed.
START_TIMEOUT_S = 600
# The rejected job's webhook goes to an allow-listed port where nothing listens: its card shows tries.
HOOK_URL = f"http://127.0.0.1:{free_port()}/hooks/"


@pytest.fixture
def supervisor(tmp_path: Path):
    webhooks = {"allow": [HOOK_URL], "secret": "whsec_" + base64.b64encode(os.urandom(32)).decode(),
                "max_attempts": 100, "backoff_base_s": 0.5, "backoff_cap_s": 2}
    service = SupervisorProcess(tmp_path / "service", instances=2, token=TOKEN, health={"idle_free_s": 0},
                                webhooks=webhooks)
    try:
        service.start(ready=2, timeout=START_TIMEOUT_S)
        yield service
    finally:
        service.stop()


def _card(selector: str, job_id: str) -> str:
    return f"document.querySelector('[data-job-id=\"{job_id}\"] {selector}')"


async def _check_dashboard(base: str, job_id: str, rejected_id: str, artifacts_dir: Path) -> dict[str, Any]:
    async with chromium() as browser:
        # 1. Without the token: the page loads and asks for it; no API data is drawn.
        page = await new_tab(browser, 1440, 900)
        await page.page.goto(f"{base}/")
        await page.wait_for("!document.getElementById('token-panel').hidden")
        assert await page.evaluate("document.querySelectorAll('[data-instance]').length") == 0
        # ... typed into the form, it opens the dashboard.
        await page.evaluate(f"document.getElementById('token-input').value = {json.dumps(TOKEN)};"
                            "document.getElementById('token-form').requestSubmit(); true")
        await _wait_for_everything(page, job_id, rejected_id)
        await page.page.context.close()

        # 2. With "#token=…" in the address (a fresh tab: its own sessionStorage), the token is
        # taken and removed from the address bar at once.
        page = await new_tab(browser, 1440, 900)
        await page.page.goto(f"{base}/#token={TOKEN}")
        found = await _wait_for_everything(page, job_id, rejected_id)
        assert await page.evaluate("window.location.hash") == ""
        assert await page.evaluate("sessionStorage.getItem('cak-dashboard-token')") == TOKEN
        # Let a few more polls draw the memory lines, then keep a picture for people to look at.
        await page.wait_for("document.querySelectorAll('.spark-line').length >= 2 && "
                            "[...document.querySelectorAll('.spark-line')].every("
                            "l => l.getAttribute('points').split(' ').length >= 3)")
        await page.page.screenshot(path=artifacts_dir / "dashboard.png", full_page=True)
        assert page.problems == [], page.problems
        return found


async def _wait_for_everything(page: Tab, job_id: str, rejected_id: str) -> dict[str, Any]:
    """Both instances READY, the job's picture loaded, the rejected job with its category."""
    await page.wait_for("document.body.dataset.loaded === 'true'")
    states = await page.wait_for(
        "(() => { const s = [...document.querySelectorAll('[data-instance]')].map(c => c.dataset.state);"
        " return s.length === 2 && s.every(x => x === 'ready') ? s : null; })()", timeout=START_TIMEOUT_S)
    width = await page.wait_for(f"(() => {{ const img = {_card('img.thumb', job_id)};"
                                " return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : 0; })()")
    category = await page.wait_for(f"{_card('.placeholder .category', rejected_id)}?.textContent")
    webhook = await page.wait_for(f"(() => {{ const t = {_card('.webhook dd', rejected_id)}?.textContent;"
                                  " return t && t.includes('tries') ? t : null; })()")
    shown = await page.evaluate(f"{_card('.prompt', rejected_id)}.textContent")
    style = await page.evaluate(f"{_card('.style', job_id)}?.textContent")
    assert shown == UNSAFE_PROMPT and await page.evaluate("document.getElementById('xss') === null")
    instance_names = await page.evaluate(
        "[...document.querySelectorAll('[data-instance]')].map(c => c.dataset.instance)")
    jobs_run = await page.evaluate("[...document.querySelectorAll('.jobs-run')].map(e => +e.textContent)")
    # One supervisor: GET /v1/hosts lists only itself, so no hosts block (several: docs/scaling.md).
    assert await page.evaluate("document.getElementById('hosts-block').hidden")
    return {"states": states, "width": width, "category": category, "instances": instance_names,
            "jobs_run": jobs_run, "style": style, "webhook": webhook}


def test_dashboard_shows_instances_and_finished_job(supervisor: SupervisorProcess,
                                                     artifacts_dir: Path) -> None:
    job = supervisor.submit(prompt=GOOD_PROMPT, style="watercolor", seed=7)
    done = supervisor.wait_job(job["id"], timeout=START_TIMEOUT_S)
    assert done["state"] == "succeeded", done
    status, refused = supervisor.call("POST", "/v1/jobs",
                                      {"prompt": UNSAFE_PROMPT, "webhook": {"url": HOOK_URL}})
    assert status == 422 and refused["error"]["category"] == "weapons", refused
    status, _ = supervisor.call("GET", "/v1/instances", token=False)
    assert status == 401  # the page is public, the data is not

    try:
        found = asyncio.run(_check_dashboard(supervisor.url, done["id"], refused["job"]["id"], artifacts_dir))
    except BaseException:
        print(supervisor.log_tail())
        raise
    assert found["states"] == ["ready", "ready"]
    assert sorted(found["instances"]) == ["comfy-1", "comfy-2"]
    assert found["width"] > 0
    assert found["category"] == "weapons"
    assert found["style"] == "watercolor"  # the dashboard shows the job's style
    assert found["webhook"].startswith("pending (") and "no answer" in found["webhook"], found["webhook"]
    assert sum(found["jobs_run"]) == 1
    assert (artifacts_dir / "dashboard.png").stat().st_size > 10_000


def test_dashboard_lists_the_hosts_sharing_one_queue(tmp_path: Path, postgres_url: str) -> None:
    """Two supervisors on one PostgreSQL (docs/scaling.md): either one's page shows both hosts."""
    hosts = host_pair(tmp_path, postgres_url, token=TOKEN)
    try:
        for host in hosts:
            host.start(ready=1, timeout=START_TIMEOUT_S)
        shown = asyncio.run(_hosts_shown(hosts[1].url))
    finally:
        for host in hosts:
            host.stop()
    assert sorted(shown) == ["host-a", "host-b"]


async def _hosts_shown(base: str) -> list[str]:
    async with chromium() as browser:
        page = await new_tab(browser, 1280, 800)
        await page.page.goto(f"{base}/#token={TOKEN}")
        return await page.wait_for(
            "(() => { const names = [...document.querySelectorAll('#hosts [data-host]')].map(e => e.dataset.host);"
            " return !document.getElementById('hosts-block').hidden && names.length === 2 ? names : null; })()",
            timeout=START_TIMEOUT_S)
