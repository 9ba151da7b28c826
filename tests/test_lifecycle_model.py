"""The job state machine, tested as a machine: random interleavings against a real Redis.

A hypothesis ``RuleBasedStateMachine`` drives store.lifecycle's atomic steps the way
workers, the broker, the mover, the reaper and operators would, in any order: enqueue (now
or later), the broker delivering, duplicating and losing messages, workers claiming, the
server's 250 / 4xx / 5xx, a worker vanishing (before or after the 250), leases lapsing,
account pauses and `resume`, cancel, a job's expiry coming (the housekeeper's step), and
workers whose clocks disagree (every wait is seconds on Redis's clock). After every step:
each job is in exactly one state and in the one index that state implies; no recipient got
two copies; every record has a TTL; an expiring job is in the expiring index until its
expiry comes; and a job leaves the machine only through a terminal state. At the end every
job that is not waiting for a far time is driven to a terminal state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from mailworker.dev.devredis import start_private_redis
from mailworker.store import keys, lifecycle
from mailworker.store.lifecycle import TERMINAL, Settlement
from mailworker.store.pauses import pause_account, resume_account
from mailworker.store.status import status

ACCOUNT = "model"
LATER = 3600.0  # a wait nobody in the test lives to see end
INDEX_OF = {
    "queued": keys.JOBS_QUEUED,
    "scheduled": keys.JOBS_DUE,
    "deferred": keys.JOBS_DUE,
    "paused": keys.JOBS_DUE,
    "sending": keys.JOBS_LEASED,
}


@pytest.fixture(scope="module")
def model_redis() -> Iterator[redis_lib.Redis]:
    server = start_private_redis()
    client = redis_lib.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()
    server.stop()


class JobMachine(RuleBasedStateMachine):
    client: redis_lib.Redis

    messages = Bundle("messages")  # broker messages: job ids, in flight
    holders = Bundle("holders")  # (job id, owner) of attempts under way

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[str] = []  # in enqueue order: ids are deterministic per example
        self.sends: dict[str, int] = {}  # job id -> copies the server accepted
        self.ended: set[str] = set()
        self.expiring: set[str] = set()  # given an expiry that has not come yet
        self.claims = 0

    # -- the producer --------------------------------------------------------------------
    @rule(target=messages, later=st.booleans(), expiring=st.booleans())
    def enqueue(self, later: bool, expiring: bool) -> str:
        job_id = f"job-{len(self.jobs)}"
        payload = {"id": job_id, "attempt": 1, "to": [["", "r@example.com"]]}
        now = float(self.client.time()[0])
        send_at = now + LATER if later else None
        expires_at = now + 2 * LATER if expiring else None  # comes when a rule says so
        state, _ = lifecycle.enqueue(
            job_id, payload, queue="model", account=ACCOUNT, send_at=send_at,
            expires_at=expires_at, client=self.client,
        )  # fmt: skip
        assert state == ("scheduled" if later else "queued")
        if expiring:
            self.expiring.add(job_id)
        self.jobs.append(job_id)
        self.sends[job_id] = 0
        return job_id  # a scheduled job has no message yet: claiming it must do nothing

    # -- the broker ----------------------------------------------------------------------
    @rule(target=messages, job_id=messages)
    def broker_duplicates(self, job_id: str) -> str:
        return job_id  # kombu's redelivery after the visibility timeout, a second publish

    @rule(job_id=consumes(messages))
    def broker_loses(self, job_id: str) -> None:
        """Taken from the queue by a worker killed before kombu noted it as unacked."""

    # -- workers -------------------------------------------------------------------------
    @rule(target=holders, job_id=consumes(messages))
    def claim(self, job_id: str) -> tuple[str, str] | None:
        self.claims += 1
        owner = f"worker-{self.claims}"
        found = lifecycle.claim(job_id, owner, 30, queue="model", client=self.client)
        if found.verdict != "claimed":
            return None  # a stale copy: acked, nothing done
        if "r@example.com" in found.sent:
            self._settle(job_id, owner, "sent")  # a rescued attempt: sent before the crash
            return None
        return (job_id, owner)

    @rule(holder=consumes(holders), reply=st.sampled_from(["250", "451", "550", "535"]))
    def server_replies(self, holder: tuple[str, str] | None, reply: str) -> None:
        if holder is None:
            return
        job_id, owner = holder
        if not self._holds(job_id, owner):
            return  # its lease keeper found the lease gone: the attempt stops, sends nothing
        if reply == "250":
            self._accepted(job_id)
            self._settle(job_id, owner, "sent")
        elif reply == "451":
            self._settle(job_id, owner, "deferred", delay=0.0)
        elif reply == "550":
            self._settle(job_id, owner, "failed")
        else:  # the account's password is wrong: pause it, hold the job
            until, _ = pause_account(ACCOUNT, LATER, "535", client=self.client)
            self._settle(job_id, owner, "paused", due=until, held=True)

    @rule(holder=consumes(holders), after_250=st.booleans())
    def worker_vanishes(self, holder: tuple[str, str] | None, after_250: bool) -> None:
        """Killed mid-attempt (after the 250 was written down, or before it came): its
        lease lapses, which the test makes happen now with a lease that ended a second ago."""
        if holder is None:
            return
        job_id, owner = holder
        if after_250 and self._holds(job_id, owner):
            self._accepted(job_id)
        lifecycle.renew({job_id: owner}, -1, client=self.client)

    @rule(holder=holders)
    def a_slow_worker_settles_late(self, holder: tuple[str, str] | None) -> None:
        """A worker whose lease was reaped settles anyway (its clock is not asked: the wait
        is seconds on Redis's clock)."""
        if holder is None:
            return
        job_id, owner = holder
        holds = self._holds(job_id, owner)
        done, _ = lifecycle.settle(
            job_id,
            owner,
            Settlement("deferred", ACCOUNT, {}, {"deferred": 1}, delay=0),
            dead_retention=60,
            client=self.client,
        )
        assert done == holds

    # -- housekeeping and operators ------------------------------------------------------
    @rule(target=messages)
    def mover_runs(self) -> object:
        return multiple_ids(lifecycle.promote_due(client=self.client))

    @rule(target=messages)
    def reaper_runs(self) -> object:
        return multiple_ids(lifecycle.reap_leases(client=self.client))

    @rule(target=messages, data=st.data())
    def reaper_finds_a_lost_message(self, data: st.DataObject) -> object:
        waiting = set(self.client.zrange(keys.JOBS_QUEUED, 0, -1))
        queued = [job_id for job_id in self.jobs if job_id in waiting]
        if not queued:
            return multiple_ids([])
        job_id = data.draw(st.sampled_from(queued))
        queued_at = self.client.hget(keys.job_status(job_id), "queued_at")
        found = lifecycle.requeue_lost(job_id, str(queued_at), client=self.client)
        return multiple_ids([found] if found else [])

    @rule()
    def operator_resumes_the_account(self) -> None:
        resume_account(ACCOUNT, client=self.client)

    @rule(data=st.data())
    def operator_cancels(self, data: st.DataObject) -> None:
        if not self.jobs:
            return
        job_id = data.draw(st.sampled_from(self.jobs))
        before = _state(self.client, job_id)
        was = lifecycle.end_waiting(job_id, "cancelled", "operator", client=self.client)
        assert was == (before if before in lifecycle.WAITING else "")

    @rule(data=st.data())
    def expiry_comes(self, data: st.DataObject) -> None:
        """Time passes for one job given an expiry; the housekeeper's step runs
        (worker.housekeeping.expire_due): a waiting job ends expired, one being sent is its
        worker's (it checks before the transaction), an ended one stays as it ended."""
        expiring = self.client.zrange(keys.JOBS_EXPIRING, 0, -1)
        if not expiring:
            return
        job_id = data.draw(st.sampled_from(sorted(expiring)))
        self.client.zadd(keys.JOBS_EXPIRING, {job_id: float(self.client.time()[0]) - 1})
        before = _state(self.client, job_id)
        taken = lifecycle.take_expired(client=self.client)
        assert job_id in taken and self.client.zscore(keys.JOBS_EXPIRING, job_id) is None
        self.expiring -= set(taken)
        for taken_id in taken:
            was = lifecycle.end_waiting(taken_id, "expired", "expiry", client=self.client)
            if taken_id == job_id:
                assert was == (before if before in lifecycle.WAITING else "")
                assert _state(self.client, job_id) == ("expired" if was else before)

    # -- helpers -------------------------------------------------------------------------
    def _holds(self, job_id: str, owner: str) -> bool:
        state, lease = self.client.hmget(keys.job_status(job_id), "state", "owner")
        return state == "sending" and lease == owner

    def _accepted(self, job_id: str) -> None:
        """The server said 250; the worker writes it down first thing (the sent-ledger)."""
        if not self.client.hexists(keys.job_status(job_id), "sent:r@example.com"):
            self.sends[job_id] += 1
        lifecycle.mark_sent(job_id, ("r@example.com",), "default", client=self.client)

    def _settle(
        self,
        job_id: str,
        owner: str,
        state: lifecycle.State,
        *,
        delay: float | None = None,
        due: float | None = None,
        held: bool = False,
    ) -> None:
        holds = self._holds(job_id, owner)
        dead = {"reason": "550"} if state == "failed" else None
        settlement = Settlement(
            state,
            ACCOUNT,
            {"payload": json.dumps({"id": job_id, "attempt": 1})},
            {state: 1},
            delay=delay,
            due=due,
            held_in=keys.held(ACCOUNT) if held else None,
            dead_letter=dead,
        )
        done, _ = lifecycle.settle(job_id, owner, settlement, dead_retention=60, client=self.client)
        assert done == holds, f"{job_id}: settled {done}, held {holds}"

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def each_job_is_in_one_state_and_its_index(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        ordered = self.jobs
        for job_id in ordered:
            pipe.hget(keys.job_status(job_id), "state")
            pipe.ttl(keys.job_status(job_id))
            for index in (keys.JOBS_QUEUED, keys.JOBS_DUE, keys.JOBS_LEASED):
                pipe.zscore(index, job_id)
        replies = pipe.execute()
        for i, job_id in enumerate(ordered):
            state, ttl, *scores = replies[5 * i : 5 * i + 5]
            assert state is not None, f"{job_id} left the machine without ending"
            assert ttl > 0, f"{job_id} ({state}) has no TTL"
            member_of = {
                index
                for index, score in zip(
                    (keys.JOBS_QUEUED, keys.JOBS_DUE, keys.JOBS_LEASED), scores, strict=True
                )
                if score is not None
            }
            assert member_of == ({INDEX_OF[state]} if state in INDEX_OF else set()), (
                job_id,
                state,
                member_of,
            )
            if state in TERMINAL:
                self.ended.add(job_id)
                assert ttl <= lifecycle.RECORD_TTL
            else:
                assert job_id not in self.ended, f"{job_id} came back from an end"

    @invariant()
    def the_expiring_index_holds_exactly_the_expiries_to_come(self) -> None:
        assert set(self.client.zrange(keys.JOBS_EXPIRING, 0, -1)) == self.expiring

    @invariant()
    def nobody_gets_two_copies(self) -> None:
        assert all(copies <= 1 for copies in self.sends.values()), self.sends

    def teardown(self) -> None:
        """Liveness: with the broker, workers and the reaper doing their jobs, every job
        that is not waiting for a far time (or a paused account) ends."""
        resume_account(ACCOUNT, client=self.client)
        for _ in range(20):
            ready = lifecycle.promote_due(client=self.client)
            for job_id in self.client.zrange(keys.JOBS_LEASED, 0, -1):  # the holders died
                owner = self.client.hget(keys.job_status(job_id), "owner")
                lifecycle.renew({job_id: str(owner)}, -1, client=self.client)
            ready += lifecycle.reap_leases(client=self.client)
            for job_id in self.client.zrange(keys.JOBS_QUEUED, 0, -1):
                queued_at = self.client.hget(keys.job_status(job_id), "queued_at")
                found = lifecycle.requeue_lost(job_id, str(queued_at), client=self.client)
                ready += [found] if found else []
            for job in ready:
                holder = self.claim(job.job_id)
                if holder is not None:
                    self.server_replies(holder, "250")
        for job_id in self.jobs:
            state = _state(self.client, job_id)
            assert state in TERMINAL or state == "scheduled", (job_id, state)
            if state == "sent":
                assert self.sends[job_id] == 1
        for job_id in self.jobs:  # the next example reuses these ids
            self.client.delete(keys.job_status(job_id))
            self.client.delete(keys.dead_letter(job_id))
        self.client.delete(keys.JOBS_QUEUED, keys.JOBS_DUE, keys.JOBS_LEASED, keys.DEAD)
        self.client.delete(keys.JOBS_EXPIRING)
        self.client.delete(keys.held(ACCOUNT), keys.paused(ACCOUNT), keys.stats(ACCOUNT))


def _state(client: redis_lib.Redis, job_id: str) -> str | None:
    return (status(job_id, client=client) or {}).get("state")


def multiple_ids(ready: list[lifecycle.Ready]) -> object:
    from hypothesis.stateful import multiple

    return multiple(*(job.job_id for job in ready))


def test_the_job_lifecycle_as_a_state_machine(model_redis: redis_lib.Redis) -> None:
    JobMachine.client = model_redis
    run_state_machine_as_test(
        JobMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
