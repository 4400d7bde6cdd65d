"""Two versions of the fleet side by side, in one run: ``python -m bench.ab BASE [CHANGED]``.

A is the fleet at git revision BASE of this checkout (exported to a temporary folder), B the one
at revision CHANGED, or the working tree. Each round starts both fresh, alternating which goes
first, and runs the workloads of ``bench.sidebyside`` against each; only the fleets' own
processes run the exported code (through PYTHONPATH), the bench and its client are this
checkout's. On a host shared with other work, only what one run measures compares: the table
gives both values, their ratio B / A, and the CPU milliseconds per churn session of every part
(dockerd and containerd count the whole host's containers).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from tests.localfleet import LocalFleet

from .report import cpu_markdown, markdown
from .sidebyside import run_rounds, workload_options

CHECKOUT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def exported(revision: str) -> Iterator[Path]:
    """The tree of ``revision`` in a temporary folder (the Python packages are all it needs)."""
    archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", "--format=tar", revision],
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="sandbox-fleet-ab-") as folder:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


def fleet_from(tree: Path | None):
    """A server factory whose fleet runs the code of ``tree`` (None: this checkout's)."""
    def start(folder: Path, pool: int) -> LocalFleet:
        saved = os.environ.get("PYTHONPATH")
        if tree is not None:
            os.environ["PYTHONPATH"] = str(tree)  # read by the server's Popen, then put back
        try:
            return LocalFleet(folder, POOL_SIZE=pool).start(timeout=120)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    return start


@click.command()
@workload_options
@click.argument("base")
@click.argument("changed", required=False)
def main(sizes: dict, base: str, changed: str | None) -> None:
    """Run the same workloads against the fleet at BASE (A) and at CHANGED (B; default: the
    working tree, read as each of its fleets starts, so leave it alone while this runs)."""
    head = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    label = changed or f"working tree at {head}"
    with exported(base) as tree, \
            (exported(changed) if changed else contextlib.nullcontext()) as changed_tree:
        results = run_rounds("ab", {"A": fleet_from(tree), "B": fleet_from(changed_tree)}, sizes,
                             {"ab": {"A": base, "B": label}})
    click.echo(markdown(results, columns=("A", "B"), headers=(f"A ({base})", f"B ({label})", "B / A")))
    for workload in ("churn", "concurrent"):
        click.echo()
        click.echo(cpu_markdown(results, ("A", "B"), workload))


if __name__ == "__main__":
    main()
