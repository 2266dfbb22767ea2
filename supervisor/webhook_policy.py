"""Which webhook URLs the service may call, and when a failed delivery is tried again (pure logic).

The server must never be made to call an arbitrary or internal address: a request's URL must lie
under an operator-listed prefix, compared on the parsed and normalised URL (scheme, host, port,
path on a segment boundary, after dot segments are resolved), never as plain text. A host that is
an address literal must be listed as that literal; a listed name must resolve to public addresses
unless it is ``localhost`` (``delivery_addresses_allowed`` checks the resolved addresses when the
connection is made, so a name cannot be re-pointed at an internal address after the check).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import random
from dataclasses import dataclass

from yarl import URL

MAX_URL_CHARS = 2048
SCHEMES = ("http", "https")


class UrlRefused(ValueError):
    """The URL may not be called; the message says why (for a 422 or an operator's log)."""


@dataclass(frozen=True)
class _Prefix:
    scheme: str
    host: str
    port: int
    path: str  # normalised; a trailing "/" means "anything below"

    def admits(self, url: URL) -> bool:
        if (url.scheme, url.host, url.port) != (self.scheme, self.host, self.port):
            return False
        path = url.path or "/"
        if self.path.endswith("/"):
            return path.startswith(self.path)
        return path == self.path or path.startswith(self.path + "/")


def parse_url(text: str) -> URL:
    """A checked absolute http(s) URL, normalised (host lowercased, dot segments resolved)."""
    if not isinstance(text, str) or not text or len(text) > MAX_URL_CHARS:
        raise UrlRefused(f"must be an http(s) URL of at most {MAX_URL_CHARS} characters")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in text):
        raise UrlRefused("must not contain spaces or control characters")
    try:
        url = URL(text)
    except (ValueError, TypeError) as exc:
        raise UrlRefused(f"is not a URL ({exc})") from None
    if url.scheme not in SCHEMES or not url.host:
        raise UrlRefused("must be an absolute http:// or https:// URL")
    if url.user is not None or url.password is not None:
        raise UrlRefused("must not carry a user name or password")
    if url.fragment:
        raise UrlRefused("must not have a #fragment")
    return url


class WebhookPolicy:
    """The allow-list of URL prefixes (``webhooks.allow``); empty: no webhook is accepted."""

    def __init__(self, allow: tuple[str, ...]) -> None:
        self.allow = allow
        self._prefixes = tuple(self._prefix(entry) for entry in allow)

    @staticmethod
    def _prefix(entry: str) -> _Prefix:
        url = parse_url(entry)
        if url.query_string:
            raise UrlRefused("an allow-list prefix must not have a ?query")
        assert url.host is not None and url.port is not None  # parse_url checked the host
        return _Prefix(url.scheme, url.host, url.port, url.path or "/")

    def check(self, text: str) -> str:
        """The normalised URL if it is under a listed prefix, else ``UrlRefused``."""
        url = parse_url(text)
        if not any(prefix.admits(url) for prefix in self._prefixes):
            if not self._prefixes:
                raise UrlRefused("webhooks are not enabled on this service (webhooks.allow is empty)")
            raise UrlRefused("is not under a prefix this service allows (webhooks.allow)")
        return str(url)

def delivery_addresses_allowed(host: str, addresses: list[str]) -> bool:
    """May a connection to ``host`` go to these resolved addresses?

    Public addresses always; a loopback, private, link-local or otherwise internal one only when
    the host is that address literally (it passed the allow-list as such) or is ``localhost``.
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if address.is_global:
            continue
        if literal is None or address != literal:
            return False
    return True


def valid_webhook_secret(secret: object) -> bool:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24-64 bytes (the HMAC key)."""
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(key) <= 64


# ---------------------------------------------------------------------- retries

DELIVERED, GONE, RETRY, FAILED = "delivered", "gone", "retry", "failed"


def outcome_of(status: int | None, attempts: int, max_attempts: int) -> str:
    """What a delivery attempt means: any 2xx ends it, 410 stops it, the rest retries until the last."""
    if status is not None and 200 <= status < 300:
        return DELIVERED
    if status == 410:
        return GONE
    return FAILED if attempts >= max_attempts else RETRY


def backoff_s(attempts: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Wait before the next try after ``attempts`` failed ones: exponential, capped, with jitter.

    The jitter draws from the upper half of the step ("equal jitter"), so retries of many jobs
    spread out but a try never comes sooner than half its step.
    """
    step = min(cap_s, base_s * 2 ** max(0, attempts - 1))
    return step * (0.5 + 0.5 * (rng or random).random())
