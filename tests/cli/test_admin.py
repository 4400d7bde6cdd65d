"""sandbox-fleet-admin against a fleet of two worker hosts: hosts, list, show, release, drain."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def admin(fleet, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in fleet.values and k != "REDIS_URL"}
    result = subprocess.run([sys.executable, "-m", "sandbox_cli.admin", "--config", str(fleet.config),
                             *args], capture_output=True, text=True, timeout=90, env=env,
                            cwd=fleet.config.parent)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def admin_json(fleet, *args: str):
    return json.loads(admin(fleet, "--json", *args).stdout)


@pytest.fixture
def two_hosts(make_fleet, redis_url, raw_redis):
    raw_redis.flushdb()
    fleet = make_fleet(POOL_SIZE=2, REDIS_ENABLED="true", REDIS_URL=redis_url)
    start = int(fleet.values["PORT_RANGE"].strip("[]").split(",")[1]) + 1000
    other = fleet.add_host(f"{fleet.values['FLEET_HOST_NAME']}-b", (start, start + 100))
    try:
        yield fleet, other
    finally:
        other.stop()


def test_admin_cli_on_two_hosts(two_hosts):
    fleet, other = two_hosts
    here = fleet.values["FLEET_HOST_NAME"]

    def roles(rows):
        return {row["host"]: sorted(w.split(":")[0] for w in row["workers"]) for row in rows}

    fleet.wait_for(lambda: roles(admin_json(fleet, "hosts")).get(other.name) == ["calls", "lifecycle"]
                   and roles(admin_json(fleet, "hosts")).get(here) == ["calls", "lifecycle"],
                   30, "both hosts' workers in `hosts`")
    table = admin(fleet, "hosts").stdout
    assert table.splitlines()[0].split() == ["HOST", "WORKERS", "SANDBOXES", "DRAINING"]
    assert here in table and other.name in table

    name = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "ops"}},
                      allow_null=False)
    listed = {row["name"]: row for row in admin_json(fleet, "list")}
    assert listed[name]["session"] == "ops" and listed[name]["state"] == "running"
    shown = admin_json(fleet, "show", name)
    assert shown["container_name"] == name and shown["host"] in (here, other.name)
    assert not {"agent_secret", "desktop_token"} & set(shown), "show must not print secrets"
    assert name in admin(fleet, "show", name).stdout

    # Drain the second host: it takes no more creates, and its idle pool sandboxes go.
    fleet.wait_for(lambda: sum(r["state"] == "warm" for r in admin_json(fleet, "list")) == 2, 60,
                   "a full pool")
    drained = admin_json(fleet, "drain", other.name)
    assert drained["draining"] is True
    assert {row["host"]: row["draining"] for row in admin_json(fleet, "hosts")}[other.name] is True

    def warm_here():
        rows = [r for r in admin_json(fleet, "list") if r["state"] in ("warm", "creating")]
        return len(rows) == 2 and all(r["host"] == here for r in rows)

    fleet.wait_for(warm_here, 60, "the pool refilled on the host that is not draining")
    created = [fleet.data("create", {"sandbox_type": "base"}, allow_null=False) for _ in range(3)]
    hosts = {row["name"]: row["host"] for row in admin_json(fleet, "list")}
    assert {hosts[n] for n in created} == {here}, hosts

    released = admin_json(fleet, "release", name)
    assert released == {"name": name, "was": "running", "released": True}
    assert fleet.data("get_info", {"identity": name})["state"] == "released"
    assert name not in {row["name"] for row in admin_json(fleet, "list")}

    assert admin_json(fleet, "undrain", other.name)["draining"] is False
    assert not {row["host"]: row["draining"] for row in admin_json(fleet, "hosts")}[other.name]

    missing = admin(fleet, "show", "no-such-sandbox", check=False)
    assert missing.returncode != 0 and "no sandbox 'no-such-sandbox'" in missing.stderr
    unknown = admin(fleet, "drain", "no-such-host", check=False)
    assert unknown.returncode != 0 and "no host 'no-such-host'" in unknown.stderr
