"""Every sandbox and every record ends: lifetimes, create deadlines and the reaper's lock, against
a real redis-server (records opened directly, no Docker). The teardowns the reaper sends are read
back from the host's queue in Redis, where a worker would take them."""

import ast
import json
import os
import time

import pytest

from sandbox_core import jobs, states
from sandbox_core.errors import NotFound
from sandbox_core.fleet import Fleet
from sandbox_core.store import keys
from sandbox_workers import rebuild

HOST = "test-host"
LONG_AGO = 1_000_000.0  # a timestamp far in the past


@pytest.fixture
def fleet(settings, store):
    return make(store, settings)


def make(store, settings, **changes) -> Fleet:
    settings = settings.replace(**changes)
    store.settings = settings
    return Fleet.connect(settings)


def open_live(store, name, state=states.WARM, **fields):
    """A sandbox some worker created on HOST (its record, slot and host entry)."""
    store.open_record(name, session_id=name, sandbox_type="base", meta={}, host=HOST,
                      container_id=f"id-{name}", **fields)
    store.reserve_instance(name)
    store.add_to_host(HOST, name)
    assert store.finish_create(name, state)
    if fields.get("session_ctx_id"):
        store.join_session(name, fields["session_ctx_id"])


def age(store, name, *fields):
    """Make a record's times (all, by default) look old, and have the reaper look at it now."""
    fields = fields or ("created_at", "updated_at", "last_active_at")
    store.put(name, **dict.fromkeys(fields, LONG_AGO))
    store.reschedule(name, 0)


def teardowns_sent(store, host=HOST) -> list[str]:
    """Names of the teardown jobs waiting in a host's queue (kombu's Redis list)."""
    names = []
    for raw in store.redis.lrange(jobs.host_queue(host), 0, -1):
        headers = json.loads(raw)["headers"]
        if headers["task"] == jobs.TEARDOWN:
            names.append(ast.literal_eval(headers["kwargsrepr"])["name"])
    return names


# -- the lock ----------------------------------------------------------------------------------

def test_a_lock_past_its_ttl_cannot_free_the_next_holders_lock(store):
    first = store.lock("k", 60)
    assert first and store.lock("k", 60) is None
    store.redis.delete(keys.lock("k"))  # as when the first holder's TTL ran out
    second = store.lock("k", 60)
    assert second and second != first
    store.unlock("k", first)  # the late first holder lets go: the second keeps it
    assert store.lock("k", 60) is None
    store.unlock("k", second)
    assert store.lock("k", 60)


# -- lifetimes ---------------------------------------------------------------------------------

def test_an_idle_sandbox_without_a_session_is_released(fleet, store):
    open_live(store, "idle")
    age(store, "idle")
    assert fleet.reap_idle() == 1
    record = store.get("idle")
    assert record["state"] == states.RELEASED
    assert record["recycle_reason"].startswith("idle_timeout")
    assert store.live_count() == 0
    assert teardowns_sent(store) == ["idle"]
    assert fleet.reap_idle() == 0  # once


def test_a_call_keeps_a_sandbox_without_a_session(fleet, store):
    open_live(store, "busy")
    age(store, "busy")
    fleet.live_record("busy", touch=True)  # what every tool call does
    assert fleet.reap_idle() == 0
    assert store.get("busy")["state"] == states.WARM
    # and its next look is scheduled by its idle deadline, not left due
    assert store.deadline_of("busy") > time.time() + 200


def test_warm_pool_sandboxes_and_sessions_are_not_idle_released(fleet, store):
    open_live(store, "pooled", pool_type="base")
    open_live(store, "in-session", state=states.RUNNING, session_ctx_id="s")
    for name in ("pooled", "in-session"):
        age(store, name)
    assert fleet.reap_idle() == 0
    assert store.get("pooled")["state"] == states.WARM
    assert store.get("in-session")["state"] == states.RUNNING


def test_idle_timeout_follows_heartbeat_timeout_and_zero_disables_it(settings, store):
    assert settings.sandbox_idle_timeout == settings.HEARTBEAT_TIMEOUT
    fleet = make(store, settings, FLEET_SANDBOX_IDLE_TIMEOUT=0)
    open_live(store, "forever")
    age(store, "forever")
    assert fleet.reap_idle() == 0
    assert store.get("forever")["state"] == states.WARM


def test_max_lifetime_releases_even_a_busy_session(settings, store):
    fleet = make(store, settings, FLEET_SANDBOX_MAX_LIFETIME=3600)
    open_live(store, "old", state=states.RUNNING, session_ctx_id="s")
    open_live(store, "young", state=states.RUNNING, session_ctx_id="s")
    age(store, "old", "created_at")
    store.reschedule("young", 0)
    assert fleet.reap_idle() == 1
    assert store.get("old")["state"] == states.RELEASED
    assert store.get("old")["recycle_reason"].startswith("max_lifetime")
    assert store.get("young")["state"] == states.RUNNING
    assert store.session_names("s") == ["young"]


def test_a_pool_sandbox_lifetime_starts_when_it_is_claimed(settings, store):
    fleet = make(store, settings, FLEET_SANDBOX_MAX_LIFETIME=3600)
    store.reserve_pool_slot("base", "p1", 60)
    open_live(store, "p1", pool_type="base")
    assert store.pool_ready("base", "p1", "reply") == "pooled"
    age(store, "p1", "created_at")  # pooled long ago
    assert fleet.reap_idle() == 0
    assert store.claim("base", "s", {"session_ctx_id": "s"}) == "p1"
    store.reschedule("p1", 0)
    assert fleet.reap_idle() == 0  # claimed just now
    assert store.get("p1")["state"] == states.RUNNING


def test_a_tick_reads_only_what_is_due(fleet, store):
    for i in range(5):
        open_live(store, f"n{i}")
    fleet.reap_idle()  # each is looked at once, then scheduled by its own deadline
    assert not store.due_deadlines(100)
    assert fleet.reap_idle() == 0


# -- create deadlines --------------------------------------------------------------------------

def open_creating(store, name, **fields):
    store.open_record(name, session_id=name, sandbox_type="base", meta={}, **fields)
    store.reserve_instance(name)


def test_a_lost_create_is_closed_and_gives_its_slot_back(fleet, store):
    # sent at the moment of a worker's kill: no worker ever took it (no host, no owner)
    open_creating(store, "lost")
    assert fleet.reap_idle() == 0  # fresh: its create may still come
    age(store, "lost", "created_at", "updated_at")
    assert fleet.reap_idle() == 1
    record = store.get("lost")
    assert record["state"] == states.ERROR
    assert record["recycle_reason"].startswith("create_deadline")
    assert store.live_count() == 0
    assert teardowns_sent(store) == []  # no host: no container to tear down


def test_a_lost_pool_create_gives_its_pool_place_back(fleet, store):
    assert store.reserve_pool_slot("base", "lostpool", 60)
    store.open_record("lostpool", session_id="lostpool", sandbox_type="base", pool_type="base",
                      meta={})
    age(store, "lostpool", "created_at", "updated_at")
    assert fleet.reap_idle() == 1
    assert store.pool_starting("base") == 0 and store.live_count() == 0


def test_a_slow_create_of_a_live_worker_is_left_alone(fleet, store):
    store.worker_beat("lifecycle@a:1", [], ttl=60)
    open_creating(store, "slow", host=HOST, creating_on="lifecycle@a:1")
    age(store, "slow", "created_at", "updated_at")
    assert fleet.reap_idle() == 0
    assert store.get("slow")["state"] == states.CREATING
    store.worker_gone("lifecycle@a:1")  # the worker died
    store.reschedule("slow", 0)
    assert fleet.reap_idle() == 1
    assert store.get("slow")["state"] == states.ERROR
    assert teardowns_sent(store) == ["slow"]  # its host removes whatever container it started


def test_a_create_re_sent_to_another_worker_is_not_closed(fleet, store):
    open_creating(store, "resent", host=HOST, creating_on="lifecycle@dead:1")
    age(store, "resent", "created_at", "updated_at")
    store.update("resent", creating_on="lifecycle@b:2")  # the new worker took it: progress
    store.reschedule("resent", 0)
    assert fleet.reap_idle() == 0
    assert store.get("resent")["state"] == states.CREATING


def test_a_create_whose_caller_still_waits_is_not_closed(fleet, store):
    open_creating(store, "waited", host=HOST, creating_on="lifecycle@dead:1", create_job="j1")
    store.expect_reply("j1", 60)  # its caller's job client re-sends it
    age(store, "waited", "created_at", "updated_at")
    assert fleet.reap_idle() == 0
    store.stop_waiting("j1")  # the caller gave up
    store.reschedule("waited", 0)
    assert fleet.reap_idle() == 1


def test_two_reapers_end_a_record_once(settings, store):
    open_live(store, "once")
    age(store, "once")
    one, two = make(store, settings), make(store, settings)
    assert one.reap_idle() + two.reap_idle() == 1
    assert teardowns_sent(store) == ["once"]


def test_a_released_sandbox_is_not_found_by_calls(fleet, store):
    open_live(store, "gone")
    age(store, "gone")
    fleet.reap_idle()
    with pytest.raises(NotFound):
        fleet.live_record("gone", touch=True)


# -- what a host keeps outside Redis -----------------------------------------------------------

def test_labels_carry_what_adopt_needs(settings):
    from backends.base import Container

    record = {"container_name": "c1", "sandbox_type": "base_async", "session_ctx_id": "s9",
              "pool_type": None, "meta": {"session_ctx_id": "s9", "x": 1},
              "storage_path": "/store/c1", "desktop_token": "tok", "workspace_owned": "0",
              "timeout": 42, "environment": {"API_KEY": "s3cr3t-value"}}
    labels = rebuild.labels_of(settings, HOST, record)
    assert "s3cr3t-value" not in json.dumps(labels)  # an environment value never goes in a label
    container = Container(id="x", name="c1", status="running", labels=labels,
                          environment={"API_KEY": "s3cr3t-value", "PATH": "/bin", "SECRET_TOKEN": "t"})
    fields = rebuild.fields_from_labels(settings, container)
    assert fields == {"sandbox_type": "base_async", "session_ctx_id": "s9", "pool_type": None,
                      "meta": {"session_ctx_id": "s9", "x": 1}, "storage_path": "/store/c1",
                      "desktop_token": "tok", "workspace_owned": False, "timeout": 42,
                      "environment": {"API_KEY": "s3cr3t-value"}}


def test_recycle_markers_are_read_back_and_forgeries_refused(settings, tmp_path):
    settings = settings.replace(DEFAULT_MOUNT_DIR=str(tmp_path), STORAGE_FOLDER=str(tmp_path / "st"))
    name = settings.CONTAINER_PREFIX_KEY + "abc"
    record = {"container_name": name, "session_id": "abc", "sandbox_type": "base",
              "session_ctx_id": "s1", "mount_dir": str(tmp_path / "abc"), "workspace_owned": "1",
              "storage_path": str(tmp_path / "st" / "abc"), "host": HOST, "recycled_at": 5.0}
    rebuild.write_marker(settings, record)
    path = rebuild.marker_path(settings, name)
    assert os.path.dirname(path) == str(tmp_path)  # beside the workspace, not in it
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    [marker] = rebuild.read_markers(settings, HOST)
    assert marker["session_ctx_id"] == "s1" and marker["mount_dir"] == record["mount_dir"]
    assert rebuild.read_markers(settings, "another-host") == []
    for forged in ({"mount_dir": "/etc"}, {"storage_path": "/etc/passwd"},
                   {"workspace_owned": "0"}, {"container_name": "other"}):
        rebuild.write_marker(settings, {**record, **forged})
        assert rebuild.read_markers(settings, HOST) == [], forged
    rebuild.remove_marker(settings, name)
    assert not os.path.exists(path)
