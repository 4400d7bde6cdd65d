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
