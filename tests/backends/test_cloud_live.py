"""The cloud backends against the real services, only where real credentials are in the
environment (never in CI here, which reaches no cloud): AGENT_RUN_ACCESS_KEY_ID and
AGENT_RUN_ACCESS_KEY_SECRET (plus AGENT_RUN_REGION_ID, ...) for AgentRun; FC_ACCOUNT_ID,
FC_ACCESS_KEY_ID and FC_ACCESS_KEY_SECRET for Function Compute; and SANDBOX_FLEET_LIVE_IMAGE, the
fleet's base image pushed where the service pulls from. Each test skips, saying which variable is
missing. It creates one sandbox, runs a command in it through the URL the service gave, and
removes it, checking that nothing of it is left."""

from __future__ import annotations

import os
import secrets

import pytest

from backends.base import LABEL_FLEET, LABEL_HOST, LABEL_NAME, LABEL_TYPE, ContainerSpec
from sandbox_core.settings import parse_settings

from .contract import Sandbox

NEEDED = {"agentrun": ("AGENT_RUN_ACCESS_KEY_ID", "AGENT_RUN_ACCESS_KEY_SECRET"),
          "fc": ("FC_ACCOUNT_ID", "FC_ACCESS_KEY_ID", "FC_ACCESS_KEY_SECRET")}


@pytest.mark.parametrize("deployment", sorted(NEEDED))
def test_a_sandbox_on_the_real_service(deployment):
    missing = [v for v in (*NEEDED[deployment], "SANDBOX_FLEET_LIVE_IMAGE") if not os.environ.get(v)]
    if missing:
        pytest.skip(f"live {deployment} test: no real credentials here ({', '.join(missing)} unset)")
    from backends import backend_class

    prefix = f"sflive_{secrets.token_hex(3)}_"
    settings = parse_settings({**os.environ, "CONTAINER_DEPLOYMENT": deployment,
                               "CONTAINER_PREFIX_KEY": prefix, "FLEET_HOST_NAME": "live-test",
                               "FLEET_CREATE_TIMEOUT": "120"})
    backend = backend_class(deployment)(settings)
    name = f"{prefix}{secrets.token_hex(8)}"
    spec = ContainerSpec(name=name, image=os.environ["SANDBOX_FLEET_LIVE_IMAGE"], host_port=50000,
                         environment={"SECRET_TOKEN": secrets.token_hex(16), "LIVE_MARK": name},
                         labels={LABEL_FLEET: prefix, LABEL_HOST: "live-test", LABEL_TYPE: "base",
                                 LABEL_NAME: name}, memory="2g", cpus=1.0)
    try:
        sandbox = Sandbox(spec, backend.create(spec))
        sandbox.wait_ready(120)
        assert sandbox.shell("echo $LIVE_MARK")[0] == f"{name}\n"
        assert [c.name for c in backend.list({LABEL_FLEET: prefix})] == [name]
    finally:
        backend.remove(name)
    assert backend.inspect(name) is None and backend.list({LABEL_FLEET: prefix}) == []
