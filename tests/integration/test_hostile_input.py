"""Hostile and malformed requests over a raw socket to a real supervisor: never a 5xx, always JSON.

Each family the hostile-input run found (deep JSON nesting, lone surrogates, bogus Content-Encoding,
non-ASCII or huge digits in path/query integers, a non-UTF-8 Authorization header, errors aiohttp's
HTTP parser raises before any handler runs, invisible or bidi prompts) is sent as raw bytes, so
nothing on the client side tidies it up. Every 4xx must be the documented JSON error, and the log
must hold no bearer token and no traceback, also after clients hang up mid-request.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.job_service import SupervisorProcess

TOKEN = "hostile-token-Zq8vN3kL"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A real supervisor; its API answers while the ComfyUI instance still starts (no need to wait)."""
    supervisor = SupervisorProcess(tmp_path_factory.mktemp("hostile"), instances=1, token=TOKEN)
    try:
        supervisor.start(ready=0)
        deadline = time.monotonic() + 120
        while not supervisor.call("GET", "/readyz")[1]["accepting"]:  # the queue opens before ComfyUI
            assert time.monotonic() < deadline, supervisor.log_tail()
            time.sleep(0.2)
        yield supervisor
    finally:
        supervisor.stop()


def raw_exchange(service: SupervisorProcess, data: bytes, *, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """Send bytes as they are, read until the server closes; status, headers, body."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    reply = b"".join(chunks)
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), reply[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def request_bytes(method: str, path: str, body: bytes = b"", extra: bytes = b"", *, auth: bool = True) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
            + (AUTH if auth else b"") + extra
            + (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode() if body else b"")
            + b"\r\n" + body)


def post_job(body: bytes, extra: bytes = b"") -> bytes:
    return request_bytes("POST", "/v1/jobs", body, extra)


def assert_json_4xx(status: int, headers: dict, body: bytes, label: str, expected: int | None = None) -> None:
    assert 400 <= status < 500, (label, status, body[:300])
    if expected is not None:
        assert status == expected, (label, status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (label, headers, body[:300])
    error = json.loads(body)["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str), (label, error)
    assert TOKEN not in body.decode("utf-8", "replace"), label


DEEP = 10_000  # far beyond Python's recursion limit, well within http.max_body_bytes
BAD_BODIES = {
    "deep array body": b"[" * DEEP + b"]" * DEEP,
    "deep object body": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep field": b'{"prompt": "a bunny", "style": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "nesting that parses": b'{"prompt": "a bunny", "seed": ' + b"[" * 900 + b"]" * 900 + b"}",
    "lone high surrogate": b'{"prompt": "\\ud800"}',
    "lone low surrogate in text": b'{"prompt": "a bunny \\udfff in a hat"}',
    "surrogate in a key": b'{"prompt": "a bunny", "\\ud800": 1}',
    "surrogate in style": b'{"prompt": "a bunny", "style": "\\udbff"}',
    "rtl override": '{"prompt": "a bunny \u202e tah a ni"}'.encode(),
    "ltr embedding": '{"prompt": "\u202aa bunny"}'.encode(),
    "first strong isolate": '{"prompt": "a bunny\u2068 hat\u2069"}'.encode(),
    "line separator": '{"prompt": "a bunny\u2028in a hat"}'.encode(),
    "paragraph separator": b'{"prompt": "a bunny\\u2029"}',
    "zero-width only": '{"prompt": "\u200b\u200c\u200d"}'.encode(),
    "word joiner and bom only": '{"prompt": " \u2060\ufeff "}'.encode(),
    "ideographic space only": '{"prompt": "\u3000\u3000"}'.encode(),
    "zero-width and whitespace": '{"prompt": "\u200b \u200b\\n\\t"}'.encode(),
    "not utf-8": b'{"prompt": "\xff\xfe a bunny"}',
}


def test_hostile_bodies_get_a_json_4xx(service):
    for label, body in BAD_BODIES.items():
        assert_json_4xx(*raw_exchange(service, post_job(body)), label)


def test_prompt_with_a_lone_surrogate_or_bidi_control_is_422_on_the_prompt(service):
    for label in ("lone high surrogate", "rtl override", "line separator", "zero-width only"):
        status, headers, body = raw_exchange(service, post_job(BAD_BODIES[label]))
        assert_json_4xx(status, headers, body, label, 422)
        assert json.loads(body)["error"]["field"] == "prompt", label


def test_bogus_content_encoding_is_a_json_400(service):
    body = b'{"prompt": "a bunny"}'
    for encoding in (b"gzip", b"deflate", b"br", b"x-nonsense", b"gzip, deflate"):
        label = f"Content-Encoding: {encoding.decode()}"
        status, headers, reply = raw_exchange(service, post_job(body, b"Content-Encoding: " + encoding + b"\r\n"))
        assert_json_4xx(status, headers, reply, label)


def test_non_ascii_and_huge_digits_in_path_and_query_integers(service):
    status, _, body = raw_exchange(service, post_job(b'{"prompt": "a bunny with a red scarf"}'))
    assert status == 202, body
    job_id = json.loads(body)["id"]
    for digits in ("\u00b2", "\u0663", "\uff11", "9" * 5000, "-1", "1e3", "0x1", ""):
        quoted = "".join(f"%{byte:02X}" for byte in digits.encode())
        for path in (f"/v1/jobs/{job_id}/images/{quoted}", f"/v1/jobs?limit={quoted}"):
            if not digits and "images" in path:
                continue  # an empty segment is another route (404), checked below anyway
            assert_json_4xx(*raw_exchange(service, request_bytes("GET", path)), path[:80])
    for path in (f"/v1/jobs/{job_id}/images/", "/v1/jobs/not-a-uuid", "/v1/jobs/%C2%B2/images/0"):
        assert_json_4xx(*raw_exchange(service, request_bytes("GET", path)), path)


def test_authorization_that_is_not_utf8_is_a_json_401(service):
    for value in (b"Bearer \xff\xfe\xfd", b"\xc3\x28", b"Bearer " + TOKEN.encode() + b"\xff"):
        status, headers, body = raw_exchange(
            service, request_bytes("GET", "/v1/jobs", extra=b"Authorization: " + value + b"\r\n", auth=False))
        assert_json_4xx(status, headers, body, repr(value), 401)


FRAMEWORK_ERRORS = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "bad method": b"G\x01T /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET /v1/jobs HTTP/9.x\r\nHost: x\r\n\r\n",
    "bad content-length": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: abc\r\n\r\n{}",
    "negative content-length": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: -5\r\n\r\n{}",
    "two content-lengths": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH
                           + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "control char in a header": b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n" + AUTH + b"\r\n",
    "control char beside the token": b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n"
                                     + b"Authorization: Bearer " + TOKEN.encode() + b"\x00\x7f\r\n\r\n",
    "header without colon": b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH + b"NoColonHere\r\n\r\n",
    "over-long request line": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "over-long header": b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH + b"X-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    "bad chunk size": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH
                      + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
}


def test_errors_raised_by_the_http_parser_are_the_json_error(service):
    for label, data in FRAMEWORK_ERRORS.items():
        status, headers, body = raw_exchange(service, data)
        assert_json_4xx(status, headers, body, label)
        assert b"GARBAGE" not in body and b"aaaa" not in body, label  # the request is not echoed


def test_hang_ups_leave_no_traceback_and_the_log_holds_no_token(service):
    status, _, body = raw_exchange(service, post_job(b'{"prompt": "a small panda"}'))
    assert status == 202, body
    job_id = json.loads(body)["id"]
    # An event stream the client closes while the job is still queued or running.
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(request_bytes("GET", f"/v1/jobs/{job_id}/events"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    # A body announced as 1000 bytes, then the client hangs up after 10.
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH
                     + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\":")
    time.sleep(1.0)  # let the server notice both hang-ups and log them
    assert service.call("GET", "/healthz", token=False) == (200, {"status": "ok"})
    log = service.log_path.read_text(errors="replace")
    assert TOKEN not in log
    assert "Traceback" not in log, service.log_tail(60)
    lines = [line for line in log.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), [line for line in lines if not line.startswith("{")][:3]
    records = [json.loads(line) for line in lines]  # --log-json: nothing but JSON lines
    errors = [record for record in records if record.get("level") == "error"]
    assert not errors, errors
    warnings = [record["message"] for record in records if record.get("level") == "warning"
                and record.get("logger") == "supervisor.http"]
    assert len(warnings) >= len(FRAMEWORK_ERRORS) - 1, warnings  # one line each (order of tests aside)
