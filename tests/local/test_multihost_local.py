"""Two worker hosts and two beats on one Redis, on the local-process backend: tests/fleet/
test_multihost.py's own tests (refill counted exactly, reaping once, a draining host), run with
this folder's fixtures."""

import pytest

from tests.fleet.test_multihost import (  # noqa: F401 (collected here by pytest)
    shared_redis,
    test_a_draining_host_starts_no_creates,
    test_two_beats_refill_exactly_and_reap_once,
)

pytestmark = pytest.mark.slow  # as the Docker originals: several fleets, two beats
