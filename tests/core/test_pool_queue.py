"""Claims that find the pool empty queue for the next pooled create, first come first served:
the store's atomic steps, against a real redis-server (sandbox_core/store/scripts.py)."""

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox_core import states
from sandbox_core.errors import CapacityExceeded
from sandbox_core.jobs import decode_reply, encode_reply
from sandbox_core.store import Store

POOL = "base"


@pytest.fixture
def pool_store(store) -> Store:
    store.settings = store.settings.replace(POOL_SIZE=2)
    return store


def wait(store: Store, job: str, candidate: str = "", ctx: str | None = None):
    return store.claim_or_wait(POOL, ctx, {"session_ctx_id": ctx} if ctx else {}, job_id=job,
                               patience=60, candidate=candidate or f"c-{job}", stale_after=60)


def finish(store: Store, name: str) -> str:
    """A pooled create that was reserved (pending) finishes: what the worker does."""
    store.open_record(name, session_id=name, sandbox_type=POOL, pool_type=POOL, meta={})
    assert store.finish_create(name, states.WARM)
    return store.pool_ready(POOL, name, encode_reply(name))


_names = itertools.count()


def refill(store: Store) -> list[str]:
    """What Fleet.refill_pools reserves: the names of the creates it would send."""
    names = []
    for _ in range(100):
        name = f"refill{next(_names)}"
        if not store.reserve_pool_slot(POOL, name, 60):
            return names
        names.append(name)
    raise AssertionError("the refill never stopped")


def test_a_claim_takes_a_warm_sandbox_and_reserves_nothing(pool_store):
    (first,) = refill(pool_store)[:1]
    finish(pool_store, first)
    assert wait(pool_store, "j1", ctx="s1") == (first, None)
    assert pool_store.get(first)["state"] == states.RUNNING
    assert pool_store.session_names("s1") == [first]


def test_a_claim_on_an_empty_pool_waits_and_reserves_only_what_is_missing(pool_store):
    started = refill(pool_store)  # two creates in flight for the pool, none warm yet
    assert len(started) == 2
    # The first two waiters are covered by the creates in flight; the third needs its own.
    assert wait(pool_store, "j1") == (None, None)
    assert wait(pool_store, "j2") == (None, None)
    assert wait(pool_store, "j3", candidate="mine") == (None, "mine")
    assert pool_store.pool_starting(POOL) == 3 and pool_store.live_count() == 3
    # ...and the refill now aims at POOL_SIZE plus the three waiting: two more.
    assert len(refill(pool_store)) == 2


def test_finished_creates_go_to_the_waiters_in_order_then_to_the_pool(pool_store):
    started = refill(pool_store)
    for job, ctx in (("j1", "s1"), ("j2", "s2")):
        wait(pool_store, job, ctx=ctx)
    started += refill(pool_store)  # two more: the pool's own
    assert [finish(pool_store, name) for name in started] == ["handed", "handed", "pooled", "pooled"]
    # Whichever create finished first went to the oldest claim, with its session.
    assert decode_reply(pool_store.pop_reply("j1", 1)) == started[0]
    assert decode_reply(pool_store.pop_reply("j2", 1)) == started[1]
    record = pool_store.get(started[0])
    assert record["state"] == states.RUNNING and record["session_ctx_id"] == "s1"
    assert record["meta"] == {"session_ctx_id": "s1"} and record["claimed_at"]
    assert pool_store.session_names("s2") == [started[1]]
    assert pool_store.pool_size(POOL) == 2 and pool_store.pool_starting(POOL) == 0


def test_a_claim_that_gave_up_is_skipped_and_its_create_is_surplus_past_pool_size(pool_store):
    started = refill(pool_store)
    wait(pool_store, "j1")
    wait(pool_store, "j2")
    _, reserved = wait(pool_store, "j3", candidate="mine")
    started += [reserved, *refill(pool_store)]
    assert len(started) == 5  # POOL_SIZE plus three waiting
    for job in ("j1", "j2", "j3"):
        assert pool_store.stop_waiting(job)  # all three gave up
    outcomes = [finish(pool_store, name) for name in started]
    assert outcomes == ["pooled", "pooled", "surplus", "surplus", "surplus"]
    assert pool_store.pool_size(POOL) == 2 and pool_store.pool_waiting(POOL) == 0


def test_waiters_never_take_a_create_past_the_instance_cap(pool_store):
    pool_store.settings = pool_store.settings.replace(MAX_SANDBOX_INSTANCES=3)
    refill(pool_store)  # two slots
    wait(pool_store, "j1")
    wait(pool_store, "j2")
    assert wait(pool_store, "j3", candidate="third") == (None, "third")  # the third slot
    with pytest.raises(CapacityExceeded):
        wait(pool_store, "j4")
    assert pool_store.live_count() == 3 and pool_store.pool_waiting(POOL) == 3


def test_a_failed_create_fails_the_oldest_waiter_only_when_no_other_covers_it(pool_store):
    first, second = refill(pool_store)
    wait(pool_store, "j1")
    wait(pool_store, "j2")
    error = encode_reply(error=CapacityExceeded("no"))
    assert not pool_store.pool_abandon(POOL, "other", error)  # not one of ours: nothing changes
    assert pool_store.pool_abandon(POOL, first, error)  # one create left for two waiters
    assert json.loads(pool_store.pop_reply("j1", 1))["error"]["detail"] == "no"
    assert not pool_store.pool_abandon(POOL, "unknown", error)  # one left for one: covered
    assert finish(pool_store, second) == "handed"
    assert decode_reply(pool_store.pop_reply("j2", 1)) == second


def test_concurrent_claims_each_get_one_sandbox_and_the_pool_ends_at_pool_size(pool_store):
    """Twelve claims on an empty pool of 2, creates finishing as the refill sends them: every
    claim gets its own sandbox, and what is left warm is exactly POOL_SIZE."""
    def claim(i):
        return wait(pool_store, f"j{i}", candidate=f"own{i}", ctx=f"s{i}")

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(claim, range(12)))
    reserved = [r for _, r in outcomes if r]
    pending = sorted(pool_store.redis.zrange("sandbox_fleet:pool_pending:base", 0, -1))
    assert sorted(reserved) == pending  # no refill yet: each waiter reserved its own
    started = pending + refill(pool_store)
    assert len(started) == 12 + 2
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: finish(pool_store, n), started))
    assert results.count("handed") == 12 and results.count("pooled") == 2
    got = {decode_reply(pool_store.pop_reply(f"j{i}", 1)) for i in range(12)}
    assert len(got) == 12 and pool_store.pool_size(POOL) == 2
    assert pool_store.live_count() == 14
