"""The job service end to end: one real supervisor (two CPU instances, a token) shared by the tests.

Through the HTTP API and the CLI: a job succeeds with one image, bad requests get a 4xx with a
reason and leave the service healthy, unsafe prompts never reach an instance, a token guards every
route but /healthz, an instance SIGKILLed mid-job costs the job nothing but an attempt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from PIL import Image

from cak.demo import DEMO_PROMPT, DEMO_STYLE
from cak.install_state import REPO_ROOT
from tests.support.job_service import SLOW_JOB, SupervisorProcess
from tests.support.waiting import wait_until

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    supervisor = SupervisorProcess(tmp_path_factory.mktemp("job-service"), instances=2, token=TOKEN)
    try:
        supervisor.start(ready=2)
        yield supervisor
    finally:
        supervisor.stop()


def healthy(service: SupervisorProcess) -> bool:
    return service.call("GET", "/healthz", token=False) == (200, {"status": "ok"})


def test_job_succeeds_with_one_png_and_no_prompt_in_it(service):
    job = service.submit(prompt=DEMO_PROMPT, style=DEMO_STYLE, width=64, height=64, steps=2)
    assert job["state"] == "queued" and job["status_url"] == f"/v1/jobs/{job['id']}"
    done = service.wait_job(job["id"])
    assert done["state"] == "succeeded", done
    assert len(done["images"]) == 1 and len(done["attempts"]) == 1
    assert done["attempts"][0]["reason"] == "succeeded"
    status, headers, png = service.request("GET", done["images"][0])
    assert status == 200 and headers["Content-Type"] == "image/png" and png.startswith(b"\x89PNG")
    # ComfyUI's own copy is gone once the job's image is committed (no second copy of every picture).
    instance_output = service.base_dir / "out" / done["attempts"][0]["instance"] / "output"
    assert instance_output.is_dir() and not list(instance_output.rglob("*.png"))
    path = service.base_dir / "out" / "job-images" / job["id"] / "0.png"
    with Image.open(path) as image:
        assert "戴帽子" not in json.dumps({k: str(v) for k, v in image.info.items()}, ensure_ascii=False)


def test_event_stream_of_a_finished_job_gives_its_state_and_ends(service):
    job = service.submit(prompt="a small panda", width=64, height=64, steps=1)
    service.wait_job(job["id"])
    status, headers, body = service.request("GET", f"/v1/jobs/{job['id']}/events")
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert body.decode().startswith("event: state\n") and '"state": "succeeded"' in body.decode()


def test_unsafe_prompt_is_422_with_category_and_never_runs(service):
    before = {i["name"]: i["jobs_run"] for i in service.get("/v1/instances")["instances"]}
    status, data = service.call("POST", "/v1/jobs", {"prompt": "a bear with a gun covered in blood"})
    assert status == 422
    assert data["error"]["code"] == "unsafe_prompt" and data["error"]["category"]
    job = service.get(f"/v1/jobs/{data['job']['id']}")
    assert job["state"] == "rejected" and job["attempts"] == [] and job["category"] == data["error"]["category"]
    after = {i["name"]: i["jobs_run"] for i in service.get("/v1/instances")["instances"]}
    assert after == before
    metrics = service.request("GET", "/metrics")[2].decode()
    assert f'cak_safety_rejections_total{{category="{job["category"]}",stage="lexicon"}}' in metrics


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "body"),
    (b"[1, 2]", 422, "body"),
    (b"{}", 422, "prompt"),
    (b'{"prompt": 5}', 422, "prompt"),
    (b'{"prompt": "   "}', 422, "prompt"),
    (b'{"prompt": "a cat", "width": "big"}', 422, "width"),
    (b'{"prompt": "a cat", "width": 65}', 422, "width"),
    (b'{"prompt": "a cat", "seed": -1}', 422, "seed"),
    (b'{"prompt": "a cat", "steps": true}', 422, "steps"),
    (b'{"prompt": "a cat", "style": "no/such style"}', 422, "style"),
    (b'{"prompt": "a cat", "style": "gothic"}', 422, "style"),
    (b'{"prompt": "a cat", "workflow": "nope"}', 422, "workflow"),
    (b'{"prompt": "a cat", "workflow": "../../etc/passwd"}', 422, "workflow"),
    (b'{"prompt": "a cat", "colour": "red"}', 422, "colour"),
    (b'{"prompt": "a cat", "graph": {"1": {"class_type": "SaveImage", "inputs": {}}}}', 422, "graph"),
    (json.dumps({"prompt": "a cat " * 100}).encode(), 422, "prompt"),
])
def test_bad_submissions_name_the_field_and_the_service_stays_healthy(service, body, status, field):
    got, _, payload = service.request("POST", "/v1/jobs", raw=body)
    data = json.loads(payload)
    assert got == status, data
    assert data["error"]["field"] == field and data["error"]["message"]
    assert healthy(service)


def test_huge_body_is_413(service):
    status, _, payload = service.request("POST", "/v1/jobs", raw=b'{"prompt": "' + b"a" * 200_000 + b'"}')
    assert status == 413 and json.loads(payload)["error"]["code"] == "body_too_large"
    assert healthy(service)


@pytest.mark.parametrize("path", [
    "/v1/jobs/not-a-uuid",
    "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
    "/v1/jobs/..%2F..%2Fetc%2Fpasswd/images/0",
    "/v1/jobs/%2E%2E/events",
    f"/v1/jobs/{str(uuid.uuid4()).upper()}",
])
def test_bad_ids_are_400(service, path):
    status, data = service.call("GET", path)
    assert status == 400 and data["error"]["field"] == "job_id"
    assert healthy(service)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", f"/v1/jobs/{uuid.uuid4()}", 404),
    ("DELETE", f"/v1/jobs/{uuid.uuid4()}", 404),
    ("GET", "/v1/jobs/../../etc/passwd", 404),
    ("GET", "/v1/nothing", 404),
    ("PUT", "/v1/jobs", 405),
    ("GET", "/v1/jobs?state=lost", 422),
    ("GET", "/v1/jobs?limit=0", 422),
    ("POST", "/v1/instances/nobody/restart", 404),
    ("POST", "/v1/instances/..%2Fx/drain", 400),
])
def test_unknown_things_are_4xx_json(service, method, path, status):
    got, data = service.call(method, path)
    assert got == status and data["error"]["message"]
    assert healthy(service)


def test_missing_image_index_is_404(service):
    job = service.get("/v1/jobs?state=succeeded&limit=1")["jobs"][0]
    status, data = service.call("GET", f"/v1/jobs/{job['id']}/images/7")
    assert status == 404 and data["error"]["field"] == "index"


def test_token_is_required_everywhere_but_healthz(service):
    for method, path in [("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/jobs"),
                         ("POST", "/v1/jobs"), ("GET", "/v1/instances"), ("GET", "/v1/openapi.json"),
                         ("GET", f"/v1/jobs/{uuid.uuid4()}"), ("POST", "/v1/instances/comfy-1/restart")]:
        for token in (False, "wrong-token-123"):
            status, data = service.call(method, path, {"prompt": "a cat"} if method == "POST" else None,
                                        token=token)
            assert status == 401 and data["error"]["code"] == "unauthorized", (method, path)
    assert healthy(service)
    assert service.call("GET", "/readyz")[0] == 200


def test_idempotency_key_returns_the_same_job(service):
    key = f"parent-request-{uuid.uuid4()}"
    body = {"prompt": "a sleepy kitten", "width": 64, "height": 64, "steps": 1}
    first = service.request("POST", "/v1/jobs", body, headers={"Idempotency-Key": key})
    second = service.request("POST", "/v1/jobs", body, headers={"Idempotency-Key": key})
    assert first[0] == second[0] == 202
    assert json.loads(first[2])["id"] == json.loads(second[2])["id"]
    assert second[1].get("Idempotent-Replayed") == "true"
    other = service.call("POST", "/v1/jobs", {**body, "prompt": "a dog"}, headers={"Idempotency-Key": key})
    assert other[0] == 409
    service.wait_job(json.loads(first[2])["id"])


def test_the_same_request_again_gets_its_own_image(service):
    """Three identical jobs (same seed) on two instances: at least two run on one instance, where
    ComfyUI's cache must not hand the later one the earlier one's (already moved) file."""
    body = {"prompt": "a round little hamster", "seed": 42, "width": 64, "height": 64, "steps": 1}
    done = [service.wait_job(service.submit(**body)["id"]) for _ in range(3)]
    assert [job["state"] for job in done] == ["succeeded"] * 3, [(j["state"], j.get("error")) for j in done]
    pictures = [service.request("GET", job["images"][0])[2] for job in done]
    assert all(p.startswith(b"\x89PNG") for p in pictures) and len(set(pictures)) == 1
    for job in done:  # ComfyUI's copies and the attempts' folders are gone
        output = service.base_dir / "out" / job["attempts"][0]["instance"] / "output"
        assert not list(output.glob(f"cak-{job['id']}-*")), list(output.iterdir())


def test_cancel_a_running_job(service):
    job = service.submit(prompt="a tiny turtle", **SLOW_JOB)
    service.wait_progress(job["id"])
    status, _ = service.call("DELETE", f"/v1/jobs/{job['id']}")
    assert status == 202
    done = service.wait_job(job["id"])
    assert done["state"] == "cancelled" and done["images"] == []
    assert service.call("DELETE", f"/v1/jobs/{job['id']}")[0] == 409


def test_cli_submit_wait_saves_the_image_and_status_lists_instances(service, tmp_path):
    env = {**os.environ, "CAK_SUPERVISOR_URL": service.url, "CAK_SUPERVISOR_TOKEN": TOKEN}
    submit = subprocess.run(
        [sys.executable, "-m", "supervisor", "submit", DEMO_PROMPT, "--style", DEMO_STYLE,
         "--width", "64", "--height", "64", "--steps", "2", "--wait", "--out", str(tmp_path)],
        check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert submit.returncode == 0, submit.stderr
    path = submit.stdout.strip().splitlines()[-1]
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert "succeeded" in submit.stderr and "100%" in submit.stderr
    status = subprocess.run([sys.executable, "-m", "supervisor", "status"], check=False, cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "comfy-1" in status.stdout and "comfy-2" in status.stdout and "queue depth: " in status.stdout
    for instance in service.get("/v1/instances")["instances"]:  # each URL, for runner run --server
        assert instance["url"].startswith("http://127.0.0.1:") and instance["url"] in status.stdout
    jobs = subprocess.run([sys.executable, "-m", "supervisor", "jobs", "--state", "succeeded"], check=False, cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert jobs.returncode == 0 and "succeeded" in jobs.stdout
    assert time.strftime("%Y-%m-%d") in jobs.stdout  # a date, not only a time of day
    unsafe = subprocess.run([sys.executable, "-m", "supervisor", "submit", "a knife and blood"], check=False, cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert unsafe.returncode == 4 and "category" in unsafe.stderr
    rejected = subprocess.run([sys.executable, "-m", "supervisor", "jobs", "--state", "rejected"], check=False, cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
    assert "[violence_gore]" in rejected.stdout, rejected.stdout  # the rejection category


def test_metrics_cover_jobs_queue_and_instances(service):
    text = service.request("GET", "/metrics")[2].decode()
    for needle in ('cak_jobs{state="succeeded"}', "cak_queue_depth ", "cak_job_duration_seconds_bucket",
                   'cak_instance_state{instance="comfy-1",state="ready"}', "cak_instance_rss_bytes",
                   "cak_instance_jobs_total"):
        assert needle in text, needle


@pytest.mark.slow
def test_instance_sigkilled_mid_job_the_job_succeeds_on_another(service):
    job = service.submit(prompt="a brave little rabbit", **SLOW_JOB)
    running = service.wait_progress(job["id"])
    victim = running["attempts"][-1]["instance"]
    pid = next(i["pid"] for i in service.get("/v1/instances")["instances"] if i["name"] == victim)
    os.kill(pid, signal.SIGKILL)
    done = service.wait_job(job["id"])
    assert done["state"] == "succeeded", done
    assert len(done["images"]) == 1
    first, *rest = done["attempts"]
    assert first["instance"] == victim and first["reason"] == "crash"
    assert rest and rest[-1]["reason"] == "succeeded" and rest[-1]["instance"] != victim
    restarts = next(i["restarts"] for i in service.get("/v1/instances")["instances"] if i["name"] == victim)
    assert restarts.get("crash") == 1
    files = list((service.base_dir / "out" / "job-images" / job["id"]).iterdir())
    assert [f.name for f in files] == ["0.png"]


def test_drain_and_restart_an_instance(service):
    assert service.call("POST", "/v1/instances/comfy-2/drain")[0] == 202
    service.wait_ready(1)
    status, data = service.call("POST", "/v1/instances/comfy-2/restart")
    assert status == 202 and data == {"instance": "comfy-2", "action": "restart", "accepted": True}

    def comfy2_back() -> dict | None:
        comfy2 = next(i for i in service.get("/v1/instances")["instances"] if i["name"] == "comfy-2")
        return comfy2 if comfy2["restarts"].get("request") == 1 and comfy2["state"] == "ready" else None

    wait_until(comfy2_back, "comfy-2 did not come back from its requested restart", interval=0.5)
    job = service.submit(prompt="a happy hedgehog", width=64, height=64, steps=1)
    assert service.wait_job(job["id"])["state"] == "succeeded"


def cli(service: SupervisorProcess, *args: str, url: str | None = None, **popen: Any):
    env = {**os.environ, "CAK_SUPERVISOR_URL": url or service.url, "CAK_SUPERVISOR_TOKEN": TOKEN}
    command = [sys.executable, "-m", "supervisor", *args]
    if popen:  # Ctrl-C as in a terminal, even when pytest runs in the background (SIGINT ignored there)
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)
    return subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def running_job_of(service: SupervisorProcess, prompt: str) -> dict:
    def running() -> dict | None:
        return next((job for job in service.get("/v1/jobs?state=running")["jobs"]
                     if job["request"]["prompt"] == prompt), None)

    return service.wait_progress(wait_until(running, f"no running job for {prompt!r}")["id"])


def slow_cli_args(prompt: str) -> list[str]:
    return ["submit", prompt, "--wait", *[f"--{name}={value}" for name, value in SLOW_JOB.items()]]


def test_cli_submit_exit_codes_are_distinct(service, tmp_path):
    """2 bad request, 3 missing model files, 4 unsafe, 5 cancelled, 1 unreachable (docs/api.md)."""
    assert cli(service, "submit", "a cat", "--width", "72").returncode == 2  # off the manifest's size step
    assert cli(service, "submit", "a cat", "--style", "gothic").returncode == 2
    assert cli(service, "submit", "   ").returncode == 2
    assert cli(service, "submit", "a knife and blood").returncode == 4
    missing = cli(service, "submit", "a cat", "--workflow", "cute_animal_qwen_image", "--wait",
                  "--out", str(tmp_path))
    assert missing.returncode == 3, missing.stderr
    # Each missing file once, with the folder it goes in; not ComfyUI's raw "Value not in list".
    assert "qwen_image_fp8_e4m3fn.safetensors (put it in models/diffusion_models/)" in missing.stderr
    assert missing.stderr.count("qwen_image_vae.safetensors") == 1 and "Value not in list" not in missing.stderr
    unreachable = cli(service, "status", url="http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    waiting = cli(service, *slow_cli_args("a cancelled cat"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    job = running_job_of(service, "a cancelled cat")
    cancel = cli(service, "cancel", job["id"])
    assert cancel.returncode == 0 and job["id"] in cancel.stdout
    _, stderr = waiting.communicate(timeout=300)
    assert waiting.returncode == 5, stderr
    assert stderr.count("running") == 1, stderr  # the state is printed once, not twice


def test_ctrl_c_during_submit_wait_says_the_job_goes_on_and_how_to_cancel_it(service):
    waiting = cli(service, *slow_cli_args("an interrupted owl"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    job = running_job_of(service, "an interrupted owl")
    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, stderr
    assert f"job {job['id']} is still queued or running" in stderr
    assert f"supervisor cancel {job['id']}" in stderr and "Traceback" not in stderr  # cak- or -m
    assert service.get(f"/v1/jobs/{job['id']}")["state"] == "running"  # Ctrl-C stopped only the client
    assert cli(service, "cancel", job["id"]).returncode == 0
    assert service.wait_job(job["id"])["state"] == "cancelled"
