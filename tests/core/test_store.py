"""The state store's atomic steps, against a real redis-server."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox_core import states
from sandbox_core.errors import CapacityExceeded
from sandbox_core.store import Store, keys


def open_warm(store: Store, name: str, pool: str = "base") -> None:
    assert store.reserve_pool_slot(pool, name, stale_after=60)
    store.open_record(name, session_id=name, sandbox_type=pool, pool_type=pool, meta={})
    assert store.finish_create(name, states.WARM)
    assert store.pool_ready(pool, name, "reply") == "pooled"


def test_instance_cap_holds_under_concurrency(store):
    store.settings = store.settings.replace(MAX_SANDBOX_INSTANCES=5)

    def attempt(i):
        try:
            store.reserve_instance(f"s{i}")
            return True
        except CapacityExceeded:
            return False

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(attempt, range(40)))
    assert sum(results) == 5
    assert store.live_count() == 5


def test_pool_slots_never_overfill(store):
    store.settings = store.settings.replace(POOL_SIZE=2)
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: store.reserve_pool_slot("base", f"p{i}", 60), range(30)))
    assert sum(results) == 2


def test_claim_is_atomic_and_sets_the_session(store):
    store.settings = store.settings.replace(POOL_SIZE=3)
    for i in range(3):
        open_warm(store, f"w{i}")
    with ThreadPoolExecutor(10) as pool:
        claimed = list(pool.map(lambda i: store.claim("base", f"ctx{i}", {"session_ctx_id": f"ctx{i}"}),
                                range(10)))
    got = [c for c in claimed if c]
    assert sorted(got) == ["w0", "w1", "w2"]
    record = store.get("w0")
    assert record["state"] == states.RUNNING
    assert record["meta"]["session_ctx_id"] == record["session_ctx_id"]
    assert store.session_names(record["session_ctx_id"]) == ["w0"]
    assert store.heartbeat_of(record["session_ctx_id"]) is not None


def test_retire_happens_once_and_frees_the_slot(store):
    store.reserve_instance("r1")
    store.open_record("r1", session_id="r1", sandbox_type="base", meta={}, session_ctx_id="c")
    store.finish_create("r1", states.RUNNING)
    store.join_session("r1", "c")
    record = store.get("r1")
    assert store.retire(record) == states.RUNNING
    assert store.retire(record) is None
    assert store.live_count() == 0
    assert store.get("r1")["state"] == states.RELEASED
    assert store.session_keys() == []
    assert 0 < store.redis.ttl(keys.record("r1")) <= store.settings.RELEASE_KET_TTL


def test_finish_create_refuses_a_released_record(store):
    store.reserve_instance("f1")
    store.open_record("f1", session_id="f1", sandbox_type="base", meta={})
    store.retire(store.get("f1"))
    assert not store.finish_create("f1", states.RUNNING)
    assert store.get("f1")["state"] == states.RELEASED


def test_ports_are_unique_and_run_out(store):
    with ThreadPoolExecutor(10) as pool:
        ports = list(pool.map(lambda i: store.take_port("h", f"s{i}", i), range(10)))
    assert sorted(ports) == list(range(40000, 40010))
    assert sorted(store.get(f"s{i}")["port"] for i in range(10)) == sorted(ports)
    with pytest.raises(CapacityExceeded, match="PORT_RANGE"):
        store.take_port("h", "s10", 0)
    store.free_port("h", 40003)
    assert store.take_port("h", "s11", 7) == 40003
    assert store.get("s11")["port"] == 40003


def test_touch_reports_recycled_and_find_follows_redirects(store):
    for name in ("a", "b"):
        store.open_record(name, session_id=name, sandbox_type="base", meta={}, session_ctx_id="c")
        store.finish_create(name, states.RUNNING)
        store.join_session(name, "c")
    store.update("a", state=states.RECYCLED)
    assert store.touch("c") == ["a"]
    store.update("a", state=states.REPLACED, redirect_to="b")
    assert store.find("a")["container_name"] == "b"
    assert store.find("a", follow=False)["container_name"] == "a"


def test_find_accepts_a_bare_session_id(store):
    name = store.settings.CONTAINER_PREFIX_KEY + "abc"
    store.open_record(name, session_id="abc", sandbox_type="base", meta={})
    assert store.find("abc")["container_name"] == name


def test_reply_reaches_only_a_waiter(store):
    assert not store.reply("job1", "x")
    store.expect_reply("job2", 60)
    assert store.reply("job2", "y")
    assert store.pop_reply("job2", 1) == "y"


def test_find_can_register_a_wait_for_a_reply_in_the_same_round_trip(store):
    name = store.settings.CONTAINER_PREFIX_KEY + "abc"
    store.open_record(name, session_id="abc", sandbox_type="base", meta={})
    assert store.find("abc", expect_reply=("job-f", 60))["container_name"] == name
    assert store.is_waited("job-f") and 0 < store.redis.ttl("sandbox_fleet:waiting:job-f") <= 60
    assert store.find("nothing", expect_reply=("job-g", 60)) is None
    assert store.stop_waiting("job-g")  # the caller's to drop when nothing was found


def test_get_many_reads_records_in_one_go_and_says_which_are_gone(store):
    store.open_record("m1", session_id="m1", sandbox_type="base", meta={"a": 1})
    got = store.get_many(["m1", "gone"])
    assert got["m1"]["meta"] == {"a": 1} and got["gone"] is None
    assert store.get_many([]) == {}
