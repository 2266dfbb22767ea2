"""The webhook URL policy and the retry schedule (pure logic, no network)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import random
import socket

import pytest

from supervisor.job_request import FieldError, parse_job_request
from supervisor.settings import WEBHOOK_SECRET_ENV, ConfigError, load_settings
from supervisor.webhook_delivery import _PublicOnlyResolver
from supervisor.webhook_policy import (
    DELIVERED,
    FAILED,
    GONE,
    RETRY,
    UrlRefused,
    WebhookPolicy,
    backoff_s,
    delivery_addresses_allowed,
    outcome_of,
)

POLICY = WebhookPolicy(("https://api.example.com/hooks/", "http://127.0.0.1:8099/cb", "http://localhost:7000/"))


@pytest.mark.parametrize("url", [
    "https://api.example.com/hooks/",
    "https://api.example.com/hooks/pictures?tenant=7",
    "https://API.Example.com:443/hooks/a/b",
    "https://api.example.com/hooks/x/../y",        # resolves to /hooks/y: still under the prefix
    "http://127.0.0.1:8099/cb",
    "http://127.0.0.1:8099/cb/done",
    "http://localhost:7000/anything",
])
def test_urls_under_a_listed_prefix_are_admitted(url):
    assert POLICY.check(url).startswith(("https://api.example.com/hooks/", "http://127.0.0.1:8099/cb",
                                         "http://localhost:7000/"))


@pytest.mark.parametrize("url", [
    "https://api.example.com/hooks/../admin",       # dot segments resolved before the comparison
    "https://api.example.com/hooks/%2e%2e/admin",
    "https://api.example.com/hooksmith",            # a path boundary, not a text prefix
    "https://api.example.com.evil/hooks/",          # a host is compared whole
    "https://evil.com/https://api.example.com/hooks/",
    "https://api.example.com:8443/hooks/",          # another port
    "http://api.example.com/hooks/",                # another scheme
    "https://user:pw@api.example.com/hooks/",       # no userinfo
    "https://api.example.com@evil.com/hooks/",
    "https://api.example.com/hooks/#frag",
    "http://127.0.0.1:8099/cbx",
    "http://127.0.0.2:8099/cb",                     # internal addresses only when listed exactly
    "http://[::1]:8099/cb",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/hooks/",
    "ftp://api.example.com/hooks/",
    "//api.example.com/hooks/",
    "/hooks/",
    "https://api.example.com/hooks/ x",
    "",
    "https://api.example.com/hooks/" + "a" * 3000,
])
def test_urls_outside_the_list_are_refused(url):
    with pytest.raises(UrlRefused):
        POLICY.check(url)


def test_an_empty_list_refuses_every_url_and_says_why():
    with pytest.raises(UrlRefused, match="webhooks.allow is empty"):
        WebhookPolicy(()).check("https://api.example.com/hooks/")


def test_a_request_field_error_names_webhook_url():
    kwargs = {"max_prompt_chars": 300, "allow_graphs": False, "default_workflow": "cute_animal_cpu"}
    body = {"prompt": "a bear", "webhook": {"url": "https://evil.com/"}}
    with pytest.raises(FieldError) as info:
        parse_job_request(body, webhook_policy=POLICY, **kwargs)
    assert info.value.field == "webhook.url"
    with pytest.raises(FieldError) as info:
        parse_job_request({"prompt": "a bear", "webhook": {"url": "https://api.example.com/hooks/"}}, **kwargs)
    assert info.value.field == "webhook.url"  # no policy: like an empty list
    with pytest.raises(FieldError) as info:
        parse_job_request({"prompt": "a bear", "webhook": "https://api.example.com/hooks/"},
                          webhook_policy=POLICY, **kwargs)
    assert info.value.field == "webhook"
    with pytest.raises(FieldError) as info:
        parse_job_request({"prompt": "a bear", "webhook": {"url": "https://api.example.com/hooks/", "x": 1}},
                          webhook_policy=POLICY, **kwargs)
    assert info.value.field == "webhook.x"
    request = parse_job_request({"prompt": "a bear", "webhook": {"url": "https://API.example.com/hooks/a"}},
                                webhook_policy=POLICY, **kwargs)
    assert request.to_json()["webhook"] == {"url": "https://api.example.com/hooks/a"}
    assert type(request).from_json(request.to_json()) == request


def test_allow_list_entries_are_checked_too():
    for entry in ("https://u:p@api.example.com/", "ftp://x/", "https://api.example.com/?q=1", "not a url"):
        with pytest.raises(UrlRefused):
            WebhookPolicy((entry,))


def test_resolved_addresses_must_be_public_unless_the_host_is_that_address():
    assert delivery_addresses_allowed("api.example.com", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
    assert not delivery_addresses_allowed("api.example.com", ["93.184.215.14", "10.1.2.3"])
    assert not delivery_addresses_allowed("rebind.example", ["127.0.0.1"])
    assert not delivery_addresses_allowed("meta.example", ["169.254.169.254"])
    assert not delivery_addresses_allowed("v6.example", ["fe80::1%eth0"])
    assert delivery_addresses_allowed("127.0.0.1", ["127.0.0.1"])
    assert delivery_addresses_allowed("localhost", ["127.0.0.1", "::1"])


def test_outcomes_any_2xx_ends_410_stops_the_rest_retries_until_the_last_try():
    assert [outcome_of(s, 1, 3) for s in (200, 202, 204, 299)] == [DELIVERED] * 4
    assert outcome_of(410, 1, 3) == GONE
    assert [outcome_of(s, 1, 3) for s in (None, 301, 302, 400, 404, 429, 500, 503)] == [RETRY] * 8
    assert outcome_of(500, 3, 3) == FAILED and outcome_of(None, 3, 3) == FAILED
    assert outcome_of(200, 3, 3) == DELIVERED


def test_backoff_doubles_is_capped_and_jittered():
    rng = random.Random(5)
    for attempts in range(1, 12):
        step = min(60.0, 2.0 * 2 ** (attempts - 1))
        delays = [backoff_s(attempts, 2.0, 60.0, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # really spread, not one value
    assert backoff_s(30, 2.0, 60.0, rng) <= 60.0


# ---------------------------------------------------------------------- settings

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def _webhook_problems(section: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"webhooks": section})
    return info.value.problems


@pytest.mark.usefixtures("installed_comfyui")
def test_webhook_settings_default_to_off_and_every_mistake_names_its_key(monkeypatch):
    monkeypatch.delenv(WEBHOOK_SECRET_ENV, raising=False)
    defaults = load_settings().webhooks
    assert defaults.policy.allow == () and defaults.secret is None
    problems = _webhook_problems({"allow": ["https://u:p@api.example.com/", "https://api.example.com/hooks/"],
                                  "secret": "not-a-secret", "max_attempts": 0, "timeout_s": "slow",
                                  "inline_images": "yes", "colour": 1})
    keys = sorted(problem.split(":")[0] for problem in problems)
    assert keys == ["webhooks.allow.0", "webhooks.colour", "webhooks.inline_images",
                    "webhooks.max_attempts", "webhooks.secret", "webhooks.timeout_s"]
    assert [p.split(":")[0] for p in _webhook_problems({"allow": ["https://api.example.com/hooks/"]})] == [
        "webhooks.secret"]  # a list needs a secret to sign with


@pytest.mark.usefixtures("installed_comfyui")
def test_webhook_secret_from_the_environment_wins(monkeypatch):
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, SECRET)
    settings = load_settings(overrides={"webhooks": {
        "allow": ["https://API.example.com/hooks/"], "secret": None, "backoff_base_s": 0.5}}).webhooks
    assert settings.secret == SECRET and settings.backoff_base_s == 0.5
    assert settings.policy.check("https://api.example.com/hooks/x") == "https://api.example.com/hooks/x"


def test_the_senders_resolver_refuses_a_name_that_points_inside():
    """The check runs where the connection is made: the connector's resolver (real DNS/hosts file)."""
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    if all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
        pytest.skip(f"{name} resolves to public addresses here")

    async def resolve(host: str) -> list:
        return await _PublicOnlyResolver().resolve(host, 80)

    with pytest.raises(OSError, match="internal address"):
        asyncio.run(resolve(name))
    assert asyncio.run(resolve("localhost"))
