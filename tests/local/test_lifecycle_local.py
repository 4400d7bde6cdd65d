"""Pools, the instance cap, release, shutdown, reconcile and a missing image, on the local-process
backend: tests/fleet/test_lifecycle.py's own tests (those that need no Docker-only detail such as
/workspace inside the sandbox or Docker's HostConfig), run with this folder's fixtures."""

from tests.fleet.test_lifecycle import (  # noqa: F401 (collected here by pytest)
    test_a_dead_warm_sandbox_is_replaced_not_handed_out,
    test_a_type_whose_image_is_missing_leaks_nothing,
    test_max_instances_holds_under_20_concurrent_creates,
    test_pool_is_kept_at_exactly_pool_size_with_several_api_processes,
    test_reconcile_removes_containers_the_fleet_does_not_know,
    test_release_answers_at_once_and_tears_down,
    test_sigterm_with_auto_cleanup_leaves_no_container,
)
from tests.fleet.test_pool import (  # noqa: F401,E402 (collected here by pytest)
    test_a_burst_past_the_pool_is_served_whole_and_leaves_it_at_pool_size,
    test_a_worker_starts_no_more_sandboxes_at_once_than_creates_in_flight,
    test_every_claim_refills_the_pool_at_once_never_past_pool_size,
    test_the_lifecycle_worker_runs_niced_and_the_call_path_does_not,
)
