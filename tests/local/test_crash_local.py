"""kill -9 of a worker mid-call, mid-create and around a release, and a Redis that restarts empty,
on the local-process backend: tests/fleet/test_crash.py's own tests, run with this folder's
fixtures (the job client's hand-over, reconcile after a restart, adoption after a Redis loss).

One difference from Docker shows here by design: a local sandbox dies with the lifecycle worker
that started it (its PR_SET_PDEATHSIG), so after that worker's death its creates start again and
its sandboxes are torn down, where Docker containers would have lived on.
"""

import pytest

from tests.fleet.test_crash import (  # noqa: F401 (collected here by pytest)
    test_redis_restarting_empty_is_survived,
    test_worker_killed_around_a_release,
    test_worker_killed_during_a_long_call,
    test_worker_killed_during_creates_hands_them_over,
)

pytestmark = pytest.mark.slow  # as the Docker originals: several fleets, kills and restarts
