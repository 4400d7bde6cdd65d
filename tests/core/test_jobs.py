"""The routing table (sandbox_core.jobs.queue_for), as the fleet's sends and Celery's router use it."""

import threading

import pytest

from sandbox_core import jobs
from sandbox_core.celery_app import make_celery


def test_every_job_has_one_queue():
    assert jobs.queue_for(jobs.CREATE) == jobs.CREATE_QUEUE  # any host with a free thread
    assert jobs.queue_for(jobs.CREATE, "h1") == "host.h1"  # a restore: where the workspace is
    assert jobs.queue_for(jobs.AGENT, "h1") == "host.h1.calls"
    assert jobs.queue_for(jobs.TEARDOWN, "h1") == "host.h1"
    assert jobs.queue_for(jobs.CONTROL, "h1") == "host.h1"
    assert jobs.queue_for(jobs.REFILL) == jobs.queue_for(jobs.REAP) == jobs.CREATE_QUEUE
    with pytest.raises(ValueError, match="host of its sandbox"):
        jobs.queue_for(jobs.AGENT)


def test_celery_routes_what_is_sent_without_a_queue(settings):
    """Beat sends its jobs by name only: Celery's router puts them on the shared queue, and
    leaves a queue the fleet named as it is."""
    router = make_celery(settings).amqp.router
    assert router.route({}, jobs.REFILL)["queue"].name == jobs.CREATE_QUEUE
    assert router.route({}, jobs.REAP)["queue"].name == jobs.CREATE_QUEUE
    named = router.route({"queue": jobs.queue_for(jobs.CREATE, "h1")}, jobs.CREATE)
    assert named["queue"].name == "host.h1"
    assert router.route({"queue": "host.h1.calls"}, jobs.AGENT)["queue"].name == "host.h1.calls"


@pytest.mark.slow
def test_a_wait_for_a_reply_outlasts_the_redis_clients_socket_timeout(settings, store):
    """A claim queued for the pool may wait far longer than redis-py's 5 s socket timeout: the
    reply that arrives after 6 s is taken, not lost to a connection timeout."""
    client = jobs.JobClient(make_celery(settings), store)
    store.expect_reply("late", 60)
    timer = threading.Timer(6, store.reply, ("late", jobs.encode_reply("sandbox-x")))
    timer.start()
    try:
        assert client.await_reply("late", 20, "nothing came") == "sandbox-x"
    finally:
        timer.cancel()
