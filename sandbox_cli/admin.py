"""``sandbox-fleet-admin``: an operator's view of a running fleet, from its Redis.

  sandbox-fleet-admin hosts              worker hosts (from the workers' heartbeats), their workers,
                                         sandboxes, and whether they are draining
  sandbox-fleet-admin list [--host H]    live sandboxes: state, type, host, age, last touch, session
  sandbox-fleet-admin show ID            one sandbox's record (never its secrets)
  sandbox-fleet-admin release ID         release it, as POST /release does
  sandbox-fleet-admin drain HOST         stop new creates on HOST and release its idle (warm)
                                         sandboxes; --all releases its sessions' sandboxes too and
                                         waits for the teardowns (as a host's shutdown does)
  sandbox-fleet-admin undrain HOST       let HOST take creates again

Settings (REDIS_*, CONTAINER_PREFIX_KEY...) come from the environment, ./.env or ``--config``, as
for runtime-sandbox-server; ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from sandbox_api.dashboard import _ago as ago  # the dashboard's age format, one definition
from sandbox_api.metrics import snapshot
from sandbox_core import logs, states
from sandbox_core.errors import SettingsError
from sandbox_core.fleet import Fleet
from sandbox_core.settings import load_settings

#: Record fields never shown: the sandbox's own secret and the desktop's token.
SECRET_FIELDS = ("agent_secret", "desktop_token")
#: A drain without --for keeps the host out of creates this long (a worker restart ends it).
DRAIN_HOLD = 24 * 3600


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="A .env-style settings file (overrides the environment). Default: ./.env")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, as_json: bool) -> None:
    """Look at and steer a running sandbox fleet."""
    try:
        settings = load_settings(config_file)
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    logs.setup(settings.replace(LOG_LEVEL="warning") if not settings.DEBUG else settings,
               role="admin")
    ctx.obj = {"fleet": Fleet.connect(settings, "sandbox_admin"), "json": as_json}


@cli.command()
@click.pass_obj
def hosts(obj: dict) -> None:
    """Worker hosts: live workers, live sandboxes, draining or not."""
    _out(obj, host_rows(obj["fleet"]), ["host", "workers", "sandboxes", "draining"])


@cli.command("list")
@click.option("--host", default=None, help="Only this host's sandboxes.")
@click.pass_obj
def list_(obj: dict, host: str | None) -> None:
    """Live sandboxes (creating, warm, running), newest first."""
    now = time.time()
    sandboxes = sorted(snapshot(obj["fleet"])["sandboxes"], key=lambda s: s.get("created_at") or 0,
                       reverse=True)
    rows = [{"name": s["container_name"], "state": s.get("state"), "type": s.get("sandbox_type"),
             "host": s.get("host"), "age": ago(now, s.get("created_at")) or None,
             "last_touch": ago(now, s.get("last_active_at") or s.get("claimed_at")) or None,
             "session": s.get("session_ctx_id")}
            for s in sandboxes if host is None or s.get("host") == host]
    _out(obj, rows, ["name", "state", "type", "host", "age", "last_touch", "session"])


@cli.command()
@click.argument("identity")
@click.pass_obj
def show(obj: dict, identity: str) -> None:
    """One sandbox's record, by name or session id."""
    record = _find(obj["fleet"], identity)
    shown = {k: v for k, v in record.items() if k not in SECRET_FIELDS and v is not None}
    if obj["json"]:
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    width = max(map(len, shown))
    for key in sorted(shown):
        value = shown[key]
        click.echo(f"{key:<{width}}  {json.dumps(value) if isinstance(value, (dict, list)) else value}")


@cli.command()
@click.argument("identity")
@click.pass_obj
def release(obj: dict, identity: str) -> None:
    """Release a sandbox (its host's worker tears it down)."""
    fleet: Fleet = obj["fleet"]
    record = _find(fleet, identity)
    was = record["state"]
    fleet.release(record["container_name"])
    _say(obj, {"name": record["container_name"], "was": was, "released": True},
         f"{record['container_name']}: released (was {was})")


@cli.command()
@click.argument("host")
@click.option("--all", "everything", is_flag=True,
              help="Release the sessions' sandboxes too, and wait for the teardowns.")
@click.option("--timeout", default=60.0, show_default=True, help="With --all: seconds to wait.")
@click.option("--for", "hold", default=DRAIN_HOLD, show_default=True,
              help="Seconds the host stays out of creates (a restart of its lifecycle worker, or "
                   "undrain, ends it sooner).")
@click.pass_obj
def drain(obj: dict, host: str, everything: bool, timeout: float, hold: int) -> None:
    """Stop new creates on HOST and release its idle sandboxes, for maintenance."""
    fleet: Fleet = obj["fleet"]
    if host not in {row["host"] for row in host_rows(fleet)}:
        raise click.ClickException(f"no host {host!r}: see `sandbox-fleet-admin hosts`")
    if everything:
        left = fleet.drain(host, timeout)
        fleet.store.start_draining(host, hold)  # drain's own mark lasts only its wait
        _say(obj, {"host": host, "draining": True, "left": left},
             f"{host}: draining; all its sandboxes released, {left} not torn down yet")
        return
    fleet.store.start_draining(host, hold)
    released = []
    for name in sorted(fleet.store.host_names(host)):
        record = fleet.store.get(name)
        if record and record["state"] == states.WARM and not record.get("session_ctx_id"):
            fleet.release(name)
            released.append(name)
    _say(obj, {"host": host, "draining": True, "released": released},
         f"{host}: draining (no new creates); released {len(released)} idle sandboxes")


@cli.command()
@click.argument("host")
@click.pass_obj
def undrain(obj: dict, host: str) -> None:
    """Let HOST take creates again."""
    obj["fleet"].store.stop_draining(host)
    _say(obj, {"host": host, "draining": False}, f"{host}: takes creates again")


# -- helpers ----------------------------------------------------------------------------------

def host_rows(fleet: Fleet) -> list[dict[str, Any]]:
    """A row per host with a live worker, a live sandbox, a queue or a drain mark (the dashboard's
    view of the fleet: sandbox_api.metrics.snapshot)."""
    view = snapshot(fleet)
    return [{"host": host,
             "workers": sorted(f"{w['role']}:{w['node'].rsplit(':', 1)[-1]}"
                               for w in view["workers"] if w["host"] == host),
             "sandboxes": sum(1 for s in view["sandboxes"] if s.get("host") == host),
             "draining": host in view["draining"]} for host in view["hosts"]]


def _find(fleet: Fleet, identity: str) -> dict:
    record = fleet.store.find(identity, follow=False)
    if record is None:
        raise click.ClickException(f"no sandbox {identity!r}")
    return record


def _out(obj: dict, rows: list[dict], columns: list[str]) -> None:
    if obj["json"]:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _say(obj: dict, data: dict, text: str) -> None:
    click.echo(json.dumps(data) if obj["json"] else text)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
