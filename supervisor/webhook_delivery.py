"""Sends the job store's webhook outbox: signed (Standard Webhooks), retried with back-off, durable.

The events themselves are written by the job store in the transaction that ends a job, so this
worker only ever sends what is committed, and whatever it has not sent yet is still in the file
after a crash. Each try leases its row (``JobStore.claim_webhooks``) so that several senders on
one database send each try once; every try of one event carries the same ``webhook-id``.

Only URLs the allow-list admits are called, redirects are never followed (a 3xx is a failed try),
and a host name must resolve to public addresses (``webhook_policy.delivery_addresses_allowed``,
checked by the connector's resolver, so the checked address is the one connected to).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import mimetypes
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks import Webhook

from .job_store import (
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
    WEBHOOK_GONE,
    WEBHOOK_PENDING,
    JobStore,
    StoreUnavailable,
    WebhookDelivery,
)
from .metrics import ServiceMetrics
from .settings import WebhooksSettings
from .webhook_policy import (
    DELIVERED,
    FAILED,
    GONE,
    RETRY,
    UrlRefused,
    backoff_s,
    delivery_addresses_allowed,
    outcome_of,
)

log = logging.getLogger("supervisor.webhooks")

BATCH = 16  # rows claimed per look at the outbox; more are taken at once when a batch is full
MIN_PAUSE_S = 0.02  # never a busy loop, even when a row is due again at once
USER_AGENT = "cute-animal-kids-webhooks/1"
STATE_OF_OUTCOME = {DELIVERED: WEBHOOK_DELIVERED, GONE: WEBHOOK_GONE, FAILED: WEBHOOK_FAILED,
                    RETRY: WEBHOOK_PENDING}


class _PublicOnlyResolver(DefaultResolver):
    """Resolves as usual, then refuses a name that points at an internal address."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if not delivery_addresses_allowed(host, [result["host"] for result in results]):
            raise OSError(f"{host} resolves to an internal address; list it as that address to allow it")
        return results


class WebhookSender:
    """The delivery worker: claims due outbox rows, sends them, records each try."""

    def __init__(self, store: JobStore, settings: WebhooksSettings, metrics: ServiceMetrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A lease outlasts one try (its timeout) with room to record it.
        self.lease_s = settings.timeout_s * 2 + 5
        self._signer = Webhook(settings.secret) if settings.secret else None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Also without a secret: events left by an earlier config are then ended ``failed``."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=_PublicOnlyResolver(), limit=BATCH, use_dns_cache=False),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            headers={"User-Agent": USER_AGENT})
        self._task = asyncio.create_task(self._loop(), name="webhook-sender")

    async def stop(self) -> None:
        """Stop sending (a try in flight is abandoned: its lease runs out and it is tried again)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while True:
            try:
                deliveries = await self.store.claim_webhooks(self.owner, self.lease_s, BATCH)
                await asyncio.gather(*(self._deliver(delivery) for delivery in deliveries))
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:  # the events wait in the outbox until the database is back
                log.warning("webhook delivery waits: %s", exc)
                deliveries = []
            except Exception:  # the worker must outlive any single failure (e.g. a full disk)
                log.exception("webhook delivery failed; retrying in %.1f s", self.settings.poll_interval_s)
                deliveries = []
            if len(deliveries) < BATCH:
                await asyncio.sleep(await self._pause())

    async def _pause(self) -> float:
        """Until the next retry falls due, at most ``poll_interval_s`` (new events may come)."""
        poll = self.settings.poll_interval_s
        try:
            due = await self.store.next_webhook_due()
        except Exception:  # the next claim reports the problem
            return poll
        return poll if due is None else min(poll, max(MIN_PAUSE_S, due - time.time()))

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        where = {"job_id": delivery.job_id}
        attempts = delivery.attempts + 1
        try:
            url = self.settings.policy.check(delivery.url)  # the allow-list may have shrunk since
            if self._signer is None:  # (the config requires a secret once the list has an entry)
                raise UrlRefused("no webhooks.secret to sign with")
        except UrlRefused as exc:
            await self._record(delivery, FAILED, None, f"no longer allowed: {exc}", where)
            return
        status, error = await self._send(delivery, url, await self._body(delivery))
        outcome = outcome_of(status, attempts, self.settings.max_attempts)
        await self._record(delivery, outcome, status, error, where)

    async def _record(self, delivery: WebhookDelivery, outcome: str, status: int | None,
                      error: str | None, where: dict[str, Any]) -> None:
        attempts = delivery.attempts + 1
        due = time.time() + backoff_s(attempts, self.settings.backoff_base_s, self.settings.backoff_cap_s)
        recorded = await self.store.record_webhook_attempt(
            delivery.id, self.owner, STATE_OF_OUTCOME[outcome], status, error, due)
        if not recorded:  # our lease ran out and another sender owns the row now
            log.warning("webhook try %d outlived its lease; not recorded", attempts, extra=where)
            return
        self.metrics.webhook_deliveries.labels(outcome).inc()
        answer = status if status is not None else error
        if outcome == RETRY:
            log.info("webhook try %d failed (%s); next in %.1f s", attempts, answer, due - time.time(),
                     extra=where)
        else:
            log.info("webhook %s after %d tries (%s)", outcome, attempts, answer, extra=where)

    async def _send(self, delivery: WebhookDelivery, url: str, body: str) -> tuple[int | None, str | None]:
        """One signed POST; (status, None), or (None, why) when no answer came."""
        assert self._session is not None and self._signer is not None
        now = datetime.now(tz=UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(delivery.id, now, body),
        }
        try:
            async with self._session.post(url, data=body.encode(), headers=headers,
                                          allow_redirects=False) as response:
                return response.status, None
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]

    async def _body(self, delivery: WebhookDelivery) -> str:
        """The event as sent: ``{type, timestamp, data}``, the same bytes on every try."""
        data = dict(delivery.payload)
        base = self.settings.public_url or ""
        data["status_url"] = base + data["status_url"]
        data["images"] = [base + path for path in data["images"]]
        if self.settings.inline_images and data["images"]:
            inline = await self._inline_images(delivery.job_id)
            if inline is not None:
                data["images_inline"] = inline
        event = {"type": delivery.event,
                 "timestamp": datetime.fromtimestamp(delivery.created_at, tz=UTC).isoformat(),
                 "data": data}
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"))

    async def _inline_images(self, job_id: str) -> list[dict[str, str]] | None:
        """The result images as base64, or None when they are gone or over ``inline_max_bytes``."""
        job = await self.store.get(job_id)
        if job is None:
            return None
        inline, size = [], 0
        for relative in job.images:
            name = relative.rpartition("/")[2]
            data = await self.store.read_image(job_id, name)
            size += len(data or b"")
            if data is None or size > self.settings.inline_max_bytes:
                return None
            inline.append({"content_type": mimetypes.guess_type(name)[0] or "application/octet-stream",
                           "data": base64.b64encode(data).decode()})
        return inline
