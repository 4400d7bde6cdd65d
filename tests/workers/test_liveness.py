"""Which jobs a worker process holds, as its callers see them in Redis (sandbox_workers/liveness.py)."""

import time

import pytest

from sandbox_core import polling
from sandbox_workers import liveness


@pytest.fixture
def heartbeat(store, monkeypatch):
    monkeypatch.setattr(liveness, "_held", {})
    beat = liveness.Heartbeat(store, "lifecycle@test:1")
    beat.start()
    yield beat
    beat.stop()
    monkeypatch.setattr(liveness, "_heartbeat", None)


def test_a_create_is_reported_before_it_runs(store, heartbeat):
    """A worker killed right after receiving a create must be seen holding it: an urgent report
    is in Redis when ``started`` returns (the next background beat is a second away)."""
    liveness.started("job-create", urgent=True)
    assert store.worker_of("job-create") == "lifecycle@test:1"


def test_a_call_is_reported_by_the_heartbeat_thread(store, heartbeat):
    liveness.started("job-call")
    assert polling.poll(lambda: store.worker_of("job-call"), 2, first=0.01, most=0.05)


def test_a_job_held_twice_stays_held_until_both_end(store, heartbeat):
    """A create handed on under its own id can come back to the same worker before the copy that
    handed it on ended: the first copy's end must not hide the second."""
    liveness.started("job-x", urgent=True)
    liveness.started("job-x", urgent=True)
    liveness.finished("job-x")
    assert liveness.running() == ["job-x"]
    liveness.finished("job-x")
    assert liveness.running() == []
    liveness.finished("job-x")  # a revoke after the end changes nothing
    assert liveness.running() == []


def test_calls_that_end_before_the_report_cost_no_write(store, heartbeat, monkeypatch):
    """The common short call: over by the time the heartbeat thread would report it, so the
    thread writes nothing (only the regular beat, once a second, goes on)."""
    writes = []
    real = store.worker_beat
    monkeypatch.setattr(store, "worker_beat", lambda *a, **k: writes.append(a) or real(*a, **k))
    for i in range(20):
        liveness.started(f"short-{i}")
        liveness.finished(f"short-{i}")
        time.sleep(liveness.COALESCE * 2)  # the thread wakes, finds nothing new, writes nothing
    assert len(writes) <= 2, writes  # the regular beats of about a second
