"""The E2B SDK's pty, streamed stdin, watch_dir and metrics on the local-process backend:
tests/e2b/test_sdk_envd.py's own tests, with a fleet whose sandboxes are local agent processes
(the base template only; the code interpreter's image has no local double)."""

from __future__ import annotations

import pytest

from tests.conftest import running_fleet
from tests.doubles import local_process_backend
from tests.e2b.conftest import sdk_pointed_at
from tests.e2b.test_sdk_envd import (  # noqa: F401 (collected here by pytest)
    folder,
    sandbox,
    test_get_metrics_reads_the_sandbox,
    test_pty_connect_stream_input_and_kill,
    test_pty_runs_an_interactive_shell_that_resizes,
    test_stdin_streams_chunk_by_chunk,
    test_watch_dir_with_the_async_sdk,
    test_watch_dir_with_the_sync_sdk,
)

pytest.importorskip("e2b")


@pytest.fixture(scope="module")
def e2b_fleet(tmp_path_factory, docker_client):
    with running_fleet(tmp_path_factory.mktemp("e2b"), docker_client,
                       (local_process_backend.__file__,),
                       CONTAINER_DEPLOYMENT=local_process_backend.NAME, POOL_SIZE=1,
                       DEFAULT_SANDBOX_TYPE="base") as fleet, sdk_pointed_at(fleet):
        yield fleet
