"""The dispatcher's lease loop on a real store: a lost lease or a cancel asked elsewhere interrupts
the job's ComfyUI (a recording stand-in for the pool's claim), an expired lease of another host is
requeued (``host_lost``) and announced, and this host's heartbeat is written."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from supervisor.dispatcher import Dispatcher, _Running
from supervisor.job_events import JobEvents
from supervisor.job_store import HOST_LOST, QUEUED
from supervisor.metrics import ServiceMetrics

REQUEST = {"prompt": "a little bear in a hat", "workflow": "cute_animal_cpu"}


class Interrupts:
    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def interrupt(self, prompt_id: str) -> None:
        self.prompts.append(prompt_id)


class StartedPool:
    """The pool's side of a cancel: the prompt had started, so it is interrupted, not withdrawn."""

    async def withdraw(self, claim: object) -> bool:
        return False


def dispatcher(store, events: JobEvents) -> Dispatcher:
    return Dispatcher(StartedPool(), store, None, events, ServiceMetrics(list),  # type: ignore[arg-type]
                      max_attempts=3, host_state=lambda: [{"name": "comfy-1", "state": "busy"}], version="t")


async def hold(d: Dispatcher, job_id: str, attempt: int, client: Interrupts) -> None:
    instance = SimpleNamespace(name="comfy-1", prompt_id=f"p-{job_id}", client=client, started=True)
    d._track(_Running(job_id, attempt, instance, asyncio.get_running_loop().create_future()))


def test_a_lost_lease_and_a_remote_cancel_interrupt_the_comfyui_once(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a", lease_s=0.3)
        b = await open_store("host-b")
        lost, _ = await a.submit(REQUEST)
        cancelled, _ = await a.submit({"prompt": "a fox"})
        await a.claim_next("comfy-1")
        await a.claim_next("comfy-1")
        client = Interrupts()
        d = dispatcher(a, JobEvents())
        await hold(d, lost.id, 1, client)
        await hold(d, cancelled.id, 1, client)
        await b.cancel(cancelled.id)
        await d.renew_leases()  # cancel seen; both leases renewed
        first = list(client.prompts)
        d._running.pop(cancelled.id)
        while not await b.requeue_expired(3):  # host-a is silent past its lease: host-b takes the job
            await asyncio.sleep(0.1)
        await d.renew_leases()
        await d.renew_leases()  # interrupted once only
        hosts = await b.hosts()
        await a.close()
        await b.close()
        return lost.id, cancelled.id, first, client.prompts, hosts

    lost, cancelled, first, prompts, hosts = run(scenario())
    assert first == [f"p-{cancelled}"]
    assert prompts == [f"p-{cancelled}", f"p-{lost}"]
    assert [(host.name, host.instances) for host in hosts] == [("host-a", [{"name": "comfy-1", "state": "busy"}])]


def test_the_lease_loop_requeues_another_hosts_expired_job_and_announces_it(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a", lease_s=0.3)
        b = await open_store("host-b")
        job, _ = await a.submit(REQUEST)
        await a.claim_next("comfy-1")
        events = JobEvents()
        d = dispatcher(b, events)
        with events.listen(job.id) as queue:
            while (await b.get(job.id)).state != QUEUED:
                await d.renew_leases()
                await asyncio.sleep(0.1)
            event = queue.get_nowait()
        after = await b.get(job.id)
        await a.close()
        await b.close()
        return event, after

    event, after = run(scenario())
    assert event == {"type": "state", "state": QUEUED, "reason": HOST_LOST}
    assert after.attempts[0].reason == HOST_LOST


class LendingPool(StartedPool):
    """Lends one claim on ``comfy-1`` whenever asked, as a pool with a free slot does."""

    def __init__(self) -> None:
        self.lent = 0

    async def acquire(self) -> SimpleNamespace:
        self.lent += 1
        return SimpleNamespace(name="comfy-1", prompt_id=None, client=None, started=False)

    def release(self, claim: object) -> None:
        self.lent -= 1


def test_a_host_never_reclaims_a_job_it_is_still_winding_down(tmp_path, open_store):
    """A woken host that lost a job's lease interrupts its attempt; the job, requeued by another
    host, must not start a second attempt on the same host before the first has ended (its new
    lease would hide behind the old entry and never be renewed, and the old outputs would mix in)."""
    async def scenario():
        a = await open_store("host-a", lease_s=0.3)
        b = await open_store("host-b")
        job, _ = await a.submit(REQUEST)
        await a.claim_next("comfy-1")
        pool = LendingPool()
        d = Dispatcher(pool, a, None, JobEvents(), ServiceMetrics(list),  # type: ignore[arg-type]
                       max_attempts=3, host_state=list, version="t")
        client = Interrupts()
        await hold(d, job.id, 1, client)
        while not await b.requeue_expired(3):
            await asyncio.sleep(0.1)
        await d.renew_leases()  # lease lost: attempt 1 is interrupted, still winding down
        await d._dispatch_queued()
        while_winding_down = (await a.get(job.id)).state, pool.lent
        d._running[job.id].task.set_result(None)  # attempt 1 ends
        await asyncio.sleep(0)
        woken = d._wakeup.is_set() and job.id not in d._running
        await a.close()
        await b.close()
        return job.id, client.prompts, while_winding_down, woken

    job_id, prompts, while_winding_down, woken = run(scenario())
    assert prompts == [f"p-{job_id}"]
    assert while_winding_down == (QUEUED, 0)  # not claimed again, the claim given back
    assert woken  # the job is looked at again once the old attempt is over


def run(coro):
    return asyncio.run(coro)
